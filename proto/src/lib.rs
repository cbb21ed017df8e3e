//! noco-proto: the generated tonic/prost code for `proto/noco.proto`, and nothing else.
#![allow(clippy::all, clippy::pedantic)]

/// Version 1 of the noco protocol.
pub mod v1 {
    tonic::include_proto!("noco.v1");
}
