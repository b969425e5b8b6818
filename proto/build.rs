//! Compiles every contract under `codingagent/` with the vendored `protoc`, so the workspace
//! builds without a system protobuf installation and no generated code is committed.

use std::path::{Path, PathBuf};
use std::{env, fs, io};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    collect_protos(&root.join("codingagent"), &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=codingagent");

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config
        .protoc_executable(protoc_bin_vendored::protoc_bin_path()?)
        .enable_type_names()
        // Maps encode in key order, so equal requests encode to equal bytes (idempotency
        // fingerprints compare them).
        .btree_map(["."]);
    tonic_prost_build::configure()
        .build_client(env::var_os("CARGO_FEATURE_CLIENT").is_some())
        .build_server(true)
        .file_descriptor_set_path(out_dir.join("descriptor.bin"))
        // One generated module tree, so a new contract never needs an edit to lib.rs.
        .include_file("codingagent.rs")
        .compile_with_config(config, &files, &[root])?;
    Ok(())
}

fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            println!("cargo:rerun-if-changed={}", path.display());
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            println!("cargo:rerun-if-changed={}", path.display());
            out.push(path);
        }
    }
    Ok(())
}
