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

/// A clock that moves only when told: for tests of anything that reads time.
#[derive(Debug)]
pub struct ManualClock(std::sync::atomic::AtomicI64);

impl ManualClock {
    pub fn at_ms(ms: i64) -> Self {
        ManualClock(std::sync::atomic::AtomicI64::new(ms))
    }

    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH
            + std::time::Duration::from_millis(
                self.0.load(std::sync::atomic::Ordering::SeqCst).max(0) as u64,
            )
    }
}
