//! noco-server: keeps what every host should run, and talks to agents and operators.
//!
//! Layers, each pointing down only (see ARCHITECTURE.md): [`store`] (the persistence interface
//! and its sled backend), [`clock`], [`registry`] (live sessions), [`bans`]; [`reports`] (what
//! agents report), [`desired`] (signed per-host state, the size rule); [`stacks`] (revisions and
//! the catalog lock), [`machines`] (pure state machines: the rollout) and [`rollouts`] (its service and driver),
//! [`hosts`]; [`backups`] (catalog, uploads, jobs, retention); [`status`], [`audit`]; [`telemetry`] (logs and metrics agents send), [`otel`] (what goes to OpenTelemetry and Prometheus). [`core`]
//! assembles them; [`auth`], [`control`],
//! [`session`], [`enroll`] and [`renew`] are the gRPC services over them; [`server`] serves.
//! [`error`] is the domain error and its one conversion to the wire. [`alerts`] watches all of
//! them and notifies receivers; [`config`] reads the server's configuration file.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod backups;
pub mod bans;
pub mod clock;
pub mod config;
pub mod control;
pub mod core;
pub mod desired;
pub mod enroll;
pub mod error;
pub mod hosts;
pub mod init;
pub mod listener;
pub mod machines;
pub mod names;
pub mod otel;
pub mod pki;
pub mod registry;
pub mod renew;
pub mod reports;
pub mod rollouts;
pub mod server;
pub mod session;
pub mod stacks;
pub mod status;
pub mod store;
pub mod telemetry;
#[cfg(test)]
pub mod testing;
pub mod wire;
