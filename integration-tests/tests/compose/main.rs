//! End-to-end tests of the compose engine: `noco-agent compose …` as a process against the real
//! Docker engine, with the test workload image built locally (no registry is reachable). Every
//! test uses its own project name and removes what it made.

// Synchronous test code: blocking sleeps are what we want here.
#![allow(clippy::disallowed_methods)]

mod converge;
mod drift;
mod failures;
mod keys;
mod labels;
mod naming;
mod order;
mod pipes;
mod postgres;
mod profiles;
mod registry;
mod secrets;
mod seeds;
mod swap;
