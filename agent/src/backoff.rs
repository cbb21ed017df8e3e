//! Reconnect delays: exponential from `initial` to `max`, each drawn uniformly from the upper
//! half of the current step so a fleet that lost its server together does not return together.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max: max.max(initial),
            current: initial,
        }
    }

    /// The next delay; `random` is in `[0, 1)`.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let step = self.current;
        self.current = (self.current * 2).min(self.max);
        step.mul_f64(0.5 + random.clamp(0.0, 1.0) / 2.0)
    }

    /// After a session that worked, start again from the shortest delay.
    pub fn reset(&mut self) {
        self.current = self.initial;
    }
}

/// A random number in `[0, 1)` from the OS.
pub fn random_unit() -> f64 {
    let bytes = noco_certs::random_bytes::<8>();
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let upper: Vec<_> = (0..6).map(|_| b.next_delay(1.0).as_millis()).collect();
        assert_eq!(upper, [100, 200, 400, 800, 1000, 1000]);
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        assert_eq!(b.next_delay(0.0).as_millis(), 50);
        b.reset();
        assert_eq!(b.next_delay(0.0).as_millis(), 50);
    }

    #[test]
    fn random_units_are_in_range() {
        for _ in 0..100 {
            let r = random_unit();
            assert!((0.0..1.0).contains(&r));
        }
    }
}
