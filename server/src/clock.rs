//! Time enters the server through [`Clock`], so tests can control it.

use std::time::{SystemTime, UNIX_EPOCH};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> SystemTime;

    fn now_ms(&self) -> i64 {
        to_ms(self.now())
    }
}

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// Milliseconds since the Unix epoch (0 for times before it).
pub fn to_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A readable UTC timestamp for messages.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn rfc3339_ms(ms: i64) -> String {
    rfc3339(UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64))
}
