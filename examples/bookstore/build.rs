//! Compiles `proto/bookstore.proto` with protox (a protobuf compiler in Rust), so a fresh
//! machine builds with cargo alone: no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/bookstore.proto");
    let fds = protox::compile(["bookstore.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
