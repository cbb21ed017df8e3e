//! Compiles proto/noco.proto with protox (pure Rust): no `protoc` is needed on any machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/noco.proto");
    let fds = protox::compile(["noco.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .codec_path("crate::codec::LeanCodec")
        .compile_fds(fds)?;
    Ok(())
}
