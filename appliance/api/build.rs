//! Compiles the Auth API's .proto files with protox (pure Rust), so no system `protoc` is needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time, not compile time: a build script compiled for one checkout may be reused
    // by a checkout elsewhere that shares the target directory.
    let root = format!("{}/../../proto", std::env::var("CARGO_MANIFEST_DIR")?);
    let files = [
        "hop/auth/v1/auth.proto",
        "hop/auth/v1/recordings.proto",
        "hop/auth/v1/bots.proto",
        "hop/auth/v1/access_requests.proto",
        "hop/auth/v1/sso.proto",
        "spiffe/workload.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={root}/{file}");
    }
    let fds = protox::compile(files, [&root])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
