//! noco-server: keeps what every host should run, and talks to agents and operators.
//!
//! [`pki`] owns the data directory's keys and certificates, [`store`] the sled database,
//! [`listener`] the TLS accept loop, [`auth`] decides who may call what (the one place),
//! [`enroll`], [`renew`], [`session`] and [`control`] are the gRPC services, [`registry`] tracks
//! live agent sessions, [`server`] wires it all together.

pub mod audit;
pub mod auth;
pub mod bans;
pub mod clock;
pub mod control;
pub mod desired;
pub mod enroll;
pub mod init;
pub mod listener;
pub mod names;
pub mod pki;
pub mod registry;
pub mod renew;
pub mod rollout;
pub mod rollouts;
pub mod selector;
pub mod server;
pub mod session;
pub mod shared;
pub mod stacks;
pub mod store;
pub mod wire;
