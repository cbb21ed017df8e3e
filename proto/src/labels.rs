//! What a host label looks like: the one rule for keys and values, read alike by the server
//! (labels on tokens and hosts) and by [`crate::selector`] (in nococtl and the server).

/// The longest label key or value, in bytes.
pub const MAX_LABEL_LEN: usize = 63;

/// A label key: 1 to 63 of `A-Z a-z 0-9 - _ . /`, starting and ending with a letter or digit.
pub fn check_key(key: &str) -> Result<(), String> {
    let bytes = key.as_bytes();
    let ok = key.len() <= MAX_LABEL_LEN
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label key {key:?} is not valid: 1 to 63 letters, digits, '-', '_', '.' or '/', starting and ending with a letter or digit"
        ))
    }
}

/// A label value: up to 63 of `A-Z a-z 0-9 - _ .` (empty is a value).
pub fn check_value(value: &str) -> Result<(), String> {
    let ok = value.len() <= MAX_LABEL_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} is not valid: up to 63 letters, digits, '-', '_' or '.'"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_start_and_end_with_a_letter_or_digit() {
        for good in ["role", "example.com/tier", "a", "A-1_b.c"] {
            assert_eq!(check_key(good), Ok(()), "{good}");
        }
        for bad in ["", "-role", "role-", "bad key", "a=b", &"k".repeat(64)] {
            let e = check_key(bad).unwrap_err();
            assert!(e.starts_with("label key"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn values_may_be_empty_but_not_hold_separators() {
        for good in ["", "web", "v1.2_x-y"] {
            assert_eq!(check_value(good), Ok(()), "{good}");
        }
        for bad in ["a b", "a=b", "a,b", "=web", &"v".repeat(64)] {
            assert!(check_value(bad).is_err(), "{bad:?}");
        }
    }
}
