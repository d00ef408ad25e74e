//! Compiles `proto/` with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_root = "../../proto";
    let files = [
        "wharf/v1/common.proto",
        "wharf/v1/auth.proto",
        "wharf/v1/lifecycle.proto",
        "wharf/v1/proxy.proto",
        "wharf/v1/replication.proto",
        "wharf/v1/meta.proto",
        "wharf/v1/blob.proto",
        "wharf/v1/raft.proto",
        "wharf/v1/admin.proto",
    ];
    let descriptors = protox::compile(files, [proto_root])?;
    tonic_prost_build::configure()
        .bytes(".wharf.v1.AppendChunk.data")
        .bytes(".wharf.v1.BlobChunk.data")
        .bytes(".wharf.v1.RaftPayload.data")
        .compile_fds(descriptors)?;
    for file in files {
        println!("cargo:rerun-if-changed={proto_root}/{file}");
    }
    Ok(())
}
