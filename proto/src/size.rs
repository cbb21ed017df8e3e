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
