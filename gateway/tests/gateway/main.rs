mod harness; mod grpc; mod jwt;
