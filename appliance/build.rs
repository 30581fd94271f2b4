//! Compiles the Auth API's .proto files with protox (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let files = ["hop/auth/v1/auth.proto", "hop/auth/v1/recordings.proto"];
    for file in files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    let fds = protox::compile(files, [root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
