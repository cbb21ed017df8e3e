//! End-to-end tests of stacks on the fleet: a real server, several real agents sharing the
//! machine's Docker engine (each owning the projects under its `--project-prefix`), nococtl as
//! the operator. Desired state is signed, pushed, verified, persisted and applied.

// Synchronous test code: blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

mod support;

mod alerts;
mod assignment;
mod autonomy;
mod backups;
mod limits;
mod logs;
mod otel;
mod policy;
mod profiles;
mod prometheus;
mod refusals;
mod rollouts;
mod rotation;
mod secrets;
mod status;
