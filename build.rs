//! Generates the gRPC code and the descriptor set served by reflection, with no system `protoc`:
//! protox compiles the proto files in Rust.

use prost::Message;
use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/datasharing/v1/datasharing.proto",
        "proto/datasharing/v1/approvals.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let file_descriptors = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("datasharing_descriptor.bin"),
        file_descriptors.encode_to_vec(),
    )?;
    // Undecodable request bodies are the caller's error: see src/codec.rs.
    tonic_prost_build::configure()
        .codec_path("crate::codec::ProtoCodec")
        .compile_fds(file_descriptors)?;
    Ok(())
}
