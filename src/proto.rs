//! Generated protobuf and gRPC code for `datasharing.v1`, and its descriptor set for reflection.

#![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]

/// `datasharing.v1`: the gateway's public API.
pub mod datasharing {
    /// Version 1 of the API.
    pub mod v1 {
        tonic::include_proto!("datasharing.v1");
    }
}

/// The encoded `FileDescriptorSet` of the API, served by gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    tonic::include_file_descriptor_set!("datasharing_descriptor");
