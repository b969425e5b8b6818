mod grpc; mod harness; mod jwt; mod limits; mod resilience; mod splits; mod web;
