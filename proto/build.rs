//! Compiles `fedra/v1/fedra.proto` with the pure-Rust `protox` compiler so that a fresh
//! machine needs no system `protoc`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "fedra/v1/fedra.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["."])?;
    // The descriptors, for the coordinator's gRPC server reflection (grpcurl, Postman).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("fedra_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    // Chunk payloads are `bytes::Bytes`: a received chunk is a zero-copy slice of the
    // transport buffer and a sent chunk can be a slice of one shared model buffer.
    // Every call starts with small codec buffers (`src/codec.rs`): idle subscriptions cost
    // the coordinator a few hundred bytes each instead of 8 KiB.
    tonic_prost_build::configure()
        .codec_path("crate::codec::LeanCodec")
        .bytes(".fedra.v1.ParamChunk.data")
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
