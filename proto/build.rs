//! Generates the tonic/prost code of geonfs's .proto files into OUT_DIR,
//! using the protoc shipped by `protoc-bin-vendored` (no system protoc).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY-free in edition 2021: build scripts are single-threaded here.
    std::env::set_var("PROTOC", protoc);
    let protos = [
        "proto/geonfs/node.proto",
        "proto/geonfs/core.proto",
        "proto/geonfs/replication.proto",
        "proto/geonfs/meta.proto",
        "proto/geonfs/raft.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
