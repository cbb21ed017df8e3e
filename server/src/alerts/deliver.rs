//! Delivering a notification: one HTTP POST with a timeout, and what its answer means
//! ([`classify`], pure): 2xx delivered; 429 and 408, 5xx and a failed connection retried with
//! jittered exponential backoff ([`backoff`], pure; `Retry-After` honoured when it is given);
//! any other answer (a wrong URL, a refused credential) given up at once, since sending it
//! again would not help.

use std::time::Duration;

use super::config::Receiver;
use super::payload::Request;

/// The first wait after a failed attempt.
pub const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
pub const MAX_RETRY: Duration = Duration::from_secs(60);
/// The longest `Retry-After` honoured.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The receiver took it: `HTTP 200`.
    Delivered(String),
    /// Try again, after this long if the receiver said.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Trying again would not help.
    GiveUp(String),
}

/// The wait before attempt `attempt + 1` (after `attempt` failures, from 1): doubling from
/// [`FIRST_RETRY`] up to [`MAX_RETRY`], then a random part of it kept (`jitter` in 0..1: half
/// to all of it), so that retries of many notifications spread out.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let doubled = FIRST_RETRY
        .checked_mul(1u32 << attempt.saturating_sub(1).min(16))
        .unwrap_or(MAX_RETRY)
        .min(MAX_RETRY);
    doubled.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A random number in 0..1 for [`backoff`].
pub fn jitter() -> f64 {
    let bytes = noco_certs::random_bytes::<4>();
    f64::from(u32::from_be_bytes(bytes)) / f64::from(u32::MAX)
}

/// What an HTTP answer means. `retry_after` is the `Retry-After` header (seconds; an HTTP date
/// is not read and means the usual backoff).
pub fn classify(status: u16, retry_after: Option<&str>, body: &str) -> Outcome {
    let mut reason = format!("HTTP {status}");
    let body = body.trim();
    if !body.is_empty() {
        let mut end = body.len().min(200);
        while !body.is_char_boundary(end) {
            end -= 1;
        }
        reason.push_str(&format!(": {}", &body[..end]));
    }
    match status {
        200..=299 => Outcome::Delivered(format!("HTTP {status}")),
        408 | 429 | 500..=599 => Outcome::Retry {
            reason,
            after: retry_after
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER)),
        },
        _ => Outcome::GiveUp(reason),
    }
}

/// The HTTP client of a receiver (its timeout), over the process's TLS provider.
pub fn client(receiver: &Receiver) -> Result<reqwest::Client, String> {
    noco_certs::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(receiver.timeout)
        .connect_timeout(receiver.timeout.min(Duration::from_secs(10)))
        .user_agent(concat!("noco-server/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| {
            format!(
                "building the HTTP client of receiver {}: {e}",
                receiver.name
            )
        })
}

/// POST one notification once.
pub async fn post(
    client: &reqwest::Client,
    receiver: &Receiver,
    request: &Request,
    idempotency_key: &str,
) -> Outcome {
    let mut req = client
        .post(&request.url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header("Idempotency-Key", idempotency_key)
        .body(request.body.clone());
    for (k, v) in &receiver.headers {
        req = req.header(k.as_str(), v.as_str());
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = if resp.status().is_success() {
                String::new()
            } else {
                resp.text().await.unwrap_or_default()
            };
            classify(status, retry_after.as_deref(), &body)
        }
        Err(e) => Outcome::Retry {
            reason: describe(&e),
            after: None,
        },
    }
}

/// A request's failure with its causes: `connection refused`, `timed out`.
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "could not connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_a_minute_and_keeps_half_to_all_of_it() {
        let full: Vec<Duration> = (1..=10).map(|a| backoff(a, 1.0)).collect();
        assert_eq!(full[0], Duration::from_millis(500));
        assert_eq!(full[1], Duration::from_secs(1));
        assert_eq!(full[2], Duration::from_secs(2));
        assert_eq!(full[7], MAX_RETRY, "64 s is capped at 60 s");
        assert_eq!(backoff(u32::MAX, 1.0), MAX_RETRY);
        assert_eq!(backoff(3, 0.0), Duration::from_secs(1), "half of 2 s");
        let j = jitter();
        assert!((0.0..=1.0).contains(&j));
    }

    #[test]
    fn answers_are_delivered_retried_or_given_up() {
        assert_eq!(
            classify(200, None, ""),
            Outcome::Delivered("HTTP 200".into())
        );
        assert_eq!(
            classify(204, None, "x"),
            Outcome::Delivered("HTTP 204".into())
        );
        assert_eq!(
            classify(503, None, "down for maintenance"),
            Outcome::Retry {
                reason: "HTTP 503: down for maintenance".into(),
                after: None
            }
        );
        assert_eq!(
            classify(429, Some("7"), "slow down"),
            Outcome::Retry {
                reason: "HTTP 429: slow down".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(429, Some("86400"), ""),
            Outcome::Retry {
                reason: "HTTP 429".into(),
                after: Some(MAX_RETRY_AFTER)
            }
        );
        assert_eq!(
            classify(404, None, "no such hook"),
            Outcome::GiveUp("HTTP 404: no such hook".into())
        );
        assert!(matches!(classify(401, None, ""), Outcome::GiveUp(_)));
    }
}
