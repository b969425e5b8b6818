//! CodingAgent's contracts for Rust. Every package under `proto/codingagent` is compiled here
//! (`codingagent.chat.v1` becomes `codingagent::chat::v1`) with its message types, its tonic
//! server trait and, with the default `client` feature, its tonic client — which makes this
//! crate the Rust SDK as well. The encoded descriptor set is exported for gRPC reflection.
//!
//! The README below is compiled as a doctest, so its example stays true.
#![doc = include_str!("../README.md")]
#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

include!(concat!(env!("OUT_DIR"), "/codingagent.rs"));

pub mod helpers;

/// The encoded `FileDescriptorSet` of every contract, served by gRPC reflection so that
/// grpcurl and other dynamic clients need no local copy of the `.proto` files.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));
