//! noco-proto: the generated tonic/prost code for `proto/noco.proto`, and the two rules of the
//! contract every part reads the same way: the size limits ([`limits`]) and when a stack counts
//! as healthy ([`health`]).

/// Version 1 of the noco protocol.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("noco.v1");
}

pub mod health;
pub mod limits;
