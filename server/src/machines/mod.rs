//! Pure state machines: no I/O, time passed in, serializable, specified by tests that read as
//! sentences. The services around them (`crate::rollouts`) persist them and act on what they
//! decide.

pub mod rollout;
