//! Compiles the vendored SPIFFE Workload API and (trimmed) Envoy SDS protos with protox:
//! no system `protoc` needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/workload.proto",
        "proto/envoy/service/secret/v3/sds.proto",
        "proto/envoy/extensions/transport_sockets/tls/v3/secret.proto",
    ];
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
