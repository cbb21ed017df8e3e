//! Sizes as every noco program reads them (flags, the agent's configuration): a number of bytes
//! (`1048576`) or a number with a binary unit — `512k`, `512KiB`, `8M`, `8MiB`, `1GiB`, `1T` —
//! where `KB`, `MB`, `GB`, `TB` read the same, as Docker reads them.

/// Parse a size; the error names the text and what is accepted.
pub fn parse(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let refused =
        || format!("{text:?} is not a size: use bytes (1048576) or a unit (512KiB, 8MiB, 1GiB)");
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number.parse().map_err(|_| refused())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(refused()),
    };
    number.checked_mul(1 << shift).ok_or_else(refused)
}

/// A size for people, in binary units: `512 B`, `1.5 KiB`, `12.3 MiB`, `512 MiB`, `7.7 GiB`
/// (one decimal below 100 of the unit).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // 1023.96 KiB would print as "1024.0 KiB": show it as the next unit.
    if value >= 1023.95 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if value >= 99.95 {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn bytes_or_a_binary_unit_and_a_clear_refusal() {
        assert_eq!(parse("1048576"), Ok(1 << 20));
        assert_eq!(parse("8MiB"), Ok(8 << 20));
        assert_eq!(parse("8M"), Ok(8 << 20));
        assert_eq!(parse("512kb"), Ok(512 << 10));
        assert_eq!(parse("1 GiB"), Ok(1 << 30));
        assert!(parse("8 parsecs").is_err_and(|e| e.contains("is not a size")));
        assert!(parse("MiB").is_err());
        assert!(parse("-1").is_err());
        assert!(parse("99999999999T").is_err());
    }
}
