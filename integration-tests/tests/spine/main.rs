//! End-to-end tests of the spine: a real noco-server, real agents and nococtl as processes on
//! loopback, talking real mutual TLS. Each test reads as an operator's session.

mod grpc;
mod enrollment;
mod identities;
mod lifecycle;
mod renewal;
mod roles;
