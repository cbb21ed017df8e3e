//! Durations as every noco command line reads them (nococtl's `--ttl`, `--timeout`,
//! `--min-healthy`, `--deadline`, the server's and agent's flags, and the compose file's
//! `x-noco.rollout`): a plain number of
//! seconds (`30`, as docker compose's `--timeout` takes it) or a number with units (`30s`,
//! `5m`, `1h30m`, `500ms`).

use std::time::Duration;

/// `30` (seconds) or `30s`, `5m`, `1h`, `1h30m`, `500ms`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let refused =
        || format!("{text:?} is not a duration: use seconds (30) or a unit (30s, 5m, 1h)");
    if t.is_empty() {
        return Err(refused());
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().map(Duration::from_secs).map_err(|_| refused());
    }
    // humantime reads `30s`, `5m`, `1h 30m`, `2days`; a leading sign or a bare unit is not
    // a duration.
    if !t.starts_with(|c: char| c.is_ascii_digit()) {
        return Err(refused());
    }
    humantime::parse_duration(t).map_err(|_| refused())
}

/// `30s`, `5m`, `1h30m`, `2s500ms`: how nococtl shows a duration, in the units compose and
/// [`parse`] read back (hours at most: `48h`, not days).
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    let groups = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    let text: String = groups
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_string()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_number_is_seconds() {
        assert_eq!(parse("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("300"), Ok(Duration::from_secs(300)));
        assert_eq!(parse(" 3600 "), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn a_number_with_units_is_read_as_written() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(30 * 86_400)));
    }

    #[test]
    fn anything_else_is_refused_saying_which_units_to_use() {
        for bad in [
            "5x",
            "",
            "soon",
            "-5",
            "-5s",
            "s",
            "1.5",
            "5 x",
            "99999999999999999999",
        ] {
            assert_eq!(
                parse(bad),
                Err(format!(
                    "{bad:?} is not a duration: use seconds (30) or a unit (30s, 5m, 1h)"
                )),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn durations_show_as_they_are_written() {
        for (d, text) in [
            (30, "30s"),
            (300, "5m"),
            (5400, "1h30m"),
            (3661, "1h1m1s"),
            (0, "0s"),
        ] {
            assert_eq!(format(Duration::from_secs(d)), text);
            assert_eq!(parse(text), Ok(Duration::from_secs(d)));
        }
        assert_eq!(format(Duration::from_millis(2500)), "2s500ms");
        assert_eq!(format(Duration::from_secs(2 * 86_400)), "48h");
        assert_eq!(parse("2s500ms"), Ok(Duration::from_millis(2500)));
        assert_eq!(parse("48h"), Ok(Duration::from_secs(2 * 86_400)));
    }
}
