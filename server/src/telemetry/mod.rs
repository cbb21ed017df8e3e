//! Logs and metrics from agents: what they send on their telemetry streams ([`stream`]), kept
//! in memory ([`logs`]: the log hub with its rings, caps and followers; [`metrics`]: the latest
//! samples and their history), and read by operators ([`query`]: `Logs`; [`top`]: `Top` and
//! `GetHost`). Agents resend from their spools what a restarted server lost, so nothing here is
//! persisted.

pub mod logs;
pub mod metrics;
pub mod query;
pub mod stream;
pub mod top;
