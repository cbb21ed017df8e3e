//! noco-proto: the generated tonic/prost code for `proto/noco.proto`, and the rules of the
//! contract every part reads the same way: the size limits ([`limits`]), when a stack counts as
//! healthy ([`health`]), how enumerations read as text ([`text`]), what a label looks like
//! ([`labels`]) and how a selector picks hosts by them ([`selector`]).

/// Version 1 of the noco protocol.
#[allow(clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("noco.v1");
}

pub mod codec;
pub mod duration;
pub mod health;
pub mod labels;
pub mod limits;
#[cfg(feature = "otel")]
pub mod otel;
pub mod selector;
pub mod size;
pub mod text;

pub use text::Enumeration;
