//! Generates the `MilvusService` client from the committed FileDescriptorSet (no .proto sources,
//! no protoc): see README.md for how `proto/milvus.fds` is regenerated.

use prost::Message;

const FDS: &str = "proto/milvus.fds";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={FDS}");
    let bytes = std::fs::read(FDS)?;
    let mut fds = prost_types::FileDescriptorSet::decode(bytes.as_slice())?;
    // milvus.proto also declares ProxyService and ClientTelemetryService; Docent only calls
    // MilvusService. descriptor.proto is there for milvus.proto's custom options: prost maps
    // `.google.protobuf` to prost_types, so it generates nothing we need.
    fds.file.retain(|f| f.package() != "google.protobuf");
    for file in &mut fds.file {
        file.service.retain(|s| s.name() == "MilvusService");
    }
    tonic_prost_build::configure()
        .build_server(false)
        // No generated `connect`: it would clash with the `Connect` RPC; lib.rs builds the channel.
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
