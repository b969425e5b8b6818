//! The gateway through its real `serve()` on port 0, in front of a real chat service (own
//! database, real Redis and Kafka), recording replicas and a JWKS double: native gRPC,
//! grpc-web from a browser client, grpcurl, plain-HTTP routes, auth, limits and failures.
#![allow(clippy::unwrap_used)]

mod config;
mod grpc;
mod grpcurl;
mod harness;
mod http;
mod jwt;
mod limits;
mod resilience;
mod splits;
mod web;
