//! Durations (`1m30s`, `500ms`) and byte sizes (`4G`, `512m`, `1gb`) as compose writes them.

use std::time::Duration;

/// A Go-style duration: one or more `<number><unit>` groups, units `h m s ms us µs ns`,
/// fractions allowed (`1.5s`); a bare `0` is zero. No sign, no days.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let s = text.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err("empty duration".to_owned());
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..num_len];
        if number.is_empty() || number == "." {
            return Err(format!(
                "invalid duration {text:?}: expected a number, like 10s or 1m30s"
            ));
        }
        let value: f64 = number
            .parse()
            .map_err(|_| format!("invalid duration {text:?}: bad number {number:?}"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let seconds_per_unit = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            "" => {
                return Err(format!(
                    "invalid duration {text:?}: missing unit (h, m, s, ms, us or ns), like 10s"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {text:?}: unknown unit {other:?} (use h, m, s, ms, us or ns)"
                ));
            }
        };
        total += value * seconds_per_unit;
        rest = &rest[unit_len..];
    }
    // Ten years is far beyond any sensible compose duration; refuse rather than overflow.
    if !total.is_finite() || total > 315_360_000.0 {
        return Err(format!("duration {text:?} is too long"));
    }
    // Round to whole nanoseconds so that `1.1s` and `1100ms` are equal.
    let nanos = (total * 1e9).round();
    Ok(Duration::from_nanos(nanos as u64))
}

/// A byte size like Docker's `RAMInBytes`: a number (fraction allowed), an optional space, an
/// optional unit `b k m g t p` (powers of 1024, any case), optionally followed by `i` and/or
/// `b`: `4G`, `512m`, `1gb`, `100k`, `1.5GiB`, `1024`.
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let s = text.trim();
    let num_len = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(num_len);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(format!(
            "invalid size {text:?}: expected a number with an optional unit, like 512m or 4G"
        ));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {text:?}"))?;
    let unit = unit.trim_start().to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: f64 = match unit {
        "" => 1.0,
        "k" => 1024.0,
        "m" => 1024f64.powi(2),
        "g" => 1024f64.powi(3),
        "t" => 1024f64.powi(4),
        "p" => 1024f64.powi(5),
        _ => {
            return Err(format!(
                "invalid size {text:?}: unknown unit (use b, k, m, g, t or p)"
            ));
        }
    };
    let bytes = (value * multiplier).floor();
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(format!("size {text:?} is too large"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let ms = Duration::from_millis;
        let cases = [
            ("10s", ms(10_000)),
            ("1m30s", ms(90_000)),
            ("1h", ms(3_600_000)),
            ("500ms", ms(500)),
            ("2us", Duration::from_micros(2)),
            ("2µs", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
            ("1.5s", ms(1500)),
            ("1h2m3s4ms", ms(3_723_004)),
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text), Ok(want), "{text}");
        }
        assert_eq!(parse_duration("1.1s"), parse_duration("1100ms"));
        for bad in [
            "",
            "10",
            "s",
            "1d",
            "-1s",
            "1 s",
            "1.2.3s",
            "ten",
            "99999999999h",
            "1sm",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn byte_sizes() {
        let k = 1024u64;
        let cases = [
            ("1024", k),
            ("100b", 100),
            ("100k", 100 * k),
            ("100K", 100 * k),
            ("100kb", 100 * k),
            ("512m", 512 * k * k),
            ("512M", 512 * k * k),
            ("4G", 4 * k * k * k),
            ("1gb", k * k * k),
            ("1GiB", k * k * k),
            ("1.5g", 3 * k * k * k / 2),
            ("2 MB", 2 * k * k),
            ("1t", k * k * k * k),
        ];
        for (text, want) in cases {
            assert_eq!(parse_bytes(text), Ok(want), "{text}");
        }
        for bad in ["", "g", "-1", "1x", "1.g", "1 2", "99999999999999p"] {
            assert!(parse_bytes(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
