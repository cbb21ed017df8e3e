//! End-to-end tests of the spine: a real noco-server, real agents and nococtl as processes on
//! loopback, talking real mutual TLS. Each test reads as an operator's session.

// Synchronous test code: blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

mod audit;
mod credential_file;
mod enrollment;
mod grammar;
mod grpc;
mod identities;
mod lifecycle;
mod pipes;
mod renewal;
mod roles;
