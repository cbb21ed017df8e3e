//! When to renew a certificate: at two thirds of its lifetime, pulled earlier by up to a sixth of
//! the lifetime of jitter so a fleet enrolled together does not renew together.

use std::time::{Duration, SystemTime};

/// The instant to renew a certificate valid from `not_before` to `not_after`. `jitter` is in
/// `[0, 1)` (callers pass a random number; tests pass a fixed one); the result lies between half
/// and two thirds of the lifetime.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime, jitter: f64) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let jitter = jitter.clamp(0.0, 1.0);
    let fraction = 2.0 / 3.0 - jitter / 6.0;
    not_before + lifetime.mul_f64(fraction)
}

/// Whether a certificate is due for renewal at `now` (ignoring jitter: the latest point).
pub fn due(not_before: SystemTime, not_after: SystemTime, now: SystemTime) -> bool {
    now >= renew_at(not_before, not_after, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn renews_between_half_and_two_thirds_of_lifetime() {
        let nb = UNIX_EPOCH + Duration::from_secs(1000);
        let na = nb + Duration::from_secs(600);
        assert_eq!(renew_at(nb, na, 0.0), nb + Duration::from_secs(400));
        assert_eq!(renew_at(nb, na, 1.0), nb + Duration::from_secs(300));
        let mid = renew_at(nb, na, 0.5);
        assert!(mid > nb + Duration::from_secs(300) && mid < nb + Duration::from_secs(400));
    }

    #[test]
    fn a_certificate_with_no_lifetime_is_due_at_once() {
        let t = UNIX_EPOCH + Duration::from_secs(5);
        assert!(due(t, t, t));
    }
}
