mod grpc; mod grpcurl; mod harness; mod http; mod jwt; mod limits; mod resilience; mod splits; mod web;
