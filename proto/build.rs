use std::path::PathBuf;

const PROTOS: [&str; 4] = [
    "docent/v1/types.proto",
    "docent/v1/assistant.proto",
    "docent/v1/admin.proto",
    "docent/v1/ingest.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not emit rerun-if-changed itself.
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = tonic_prost_build::Config::new();
    // A system protoc (PROTOC) wins; otherwise the vendored one, so a fresh machine needs nothing.
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("docent_descriptor.bin"))
        // Malformed request messages are INVALID_ARGUMENT, not prost's INTERNAL.
        .codec_path("crate::codec::DocentCodec")
        .compile_with_config(config, &PROTOS, &["."])?;
    Ok(())
}
