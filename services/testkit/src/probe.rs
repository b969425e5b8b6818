//! Generated code of the probe service; its implementation lives with the tests that need a
//! particular behaviour from it.

#[allow(missing_docs, unreachable_pub, missing_debug_implementations, clippy::all)]
pub mod pb {
    tonic::include_proto!("codingagent.testkit.v1");

    /// For reflection, so tools can discover the probe.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/probe_descriptor.bin"));
}
