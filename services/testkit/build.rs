//! Compiles the probe service used by kernel and service tests.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let descriptor = std::path::PathBuf::from(std::env::var("OUT_DIR")?).join("probe_descriptor.bin");
    tonic_prost_build::configure().file_descriptor_set_path(descriptor).compile_with_config(
        config,
        &["proto/probe.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto/probe.proto");
    Ok(())
}
