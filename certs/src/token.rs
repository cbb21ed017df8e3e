//! Join and login tokens: `noco1:<ca-sha256>:<id>.<secret>`.
//!
//! The `id` names the token's record on the server, which stores only the SHA-256 of `secret`.
//! The CA fingerprint lets a new host trust the server on first contact without a CA file, as
//! kubeadm's discovery hash does.

use std::fmt;
use std::str::FromStr;

use crate::{CertError, random_hex, sha256_hex};

const PREFIX: &str = "noco1";

#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub ca_fingerprint: String,
    pub id: String,
    pub secret: String,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Token {
    /// A new token for the CA with this fingerprint.
    pub fn generate(ca_fingerprint: &str) -> Self {
        Token {
            ca_fingerprint: ca_fingerprint.to_string(),
            id: random_hex::<6>(),
            secret: random_hex::<16>(),
        }
    }

    /// What the server stores instead of the secret.
    pub fn secret_hash(&self) -> String {
        sha256_hex(self.secret.as_bytes())
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}:{}:{}.{}",
            self.ca_fingerprint, self.id, self.secret
        )
    }
}

fn is_lower_hex(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl FromStr for Token {
    type Err = CertError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |why: &str| {
            CertError::Token(format!(
                "malformed token: {why} (expected noco1:<ca-sha256>:<id>.<secret>)"
            ))
        };
        let mut parts = s.trim().splitn(3, ':');
        if parts.next() != Some(PREFIX) {
            return Err(bad("it does not start with noco1:"));
        }
        let fp = parts.next().ok_or_else(|| bad("no CA fingerprint"))?;
        let rest = parts.next().ok_or_else(|| bad("no id.secret"))?;
        if !is_lower_hex(fp, 64, 64) {
            return Err(bad("the CA fingerprint is not 64 hex digits"));
        }
        let (id, secret) = rest.split_once('.').ok_or_else(|| bad("no id.secret"))?;
        if !is_lower_hex(id, 6, 32) || !is_lower_hex(secret, 16, 64) {
            return Err(bad("id or secret has the wrong form"));
        }
        Ok(Token {
            ca_fingerprint: fp.to_string(),
            id: id.to_string(),
            secret: secret.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_hide_their_secret_in_debug() {
        let t = Token::generate(&"ab".repeat(32));
        let parsed: Token = t.to_string().parse().unwrap();
        assert_eq!(parsed, t);
        assert!(!format!("{t:?}").contains(&t.secret));
    }

    #[test]
    fn malformed_tokens_say_what_is_wrong() {
        for (s, why) in [
            ("", "noco1"),
            ("noco1:xyz:abcdef.0123456789abcdef", "fingerprint"),
            (&format!("noco1:{}:abcdef", "a".repeat(64)), "id.secret"),
            (
                &format!("noco1:{}:ABCDEF.0123456789abcdef", "a".repeat(64)),
                "wrong form",
            ),
        ] {
            let err = s.parse::<Token>().unwrap_err().to_string();
            assert!(err.contains(why), "{s:?}: {err}");
        }
    }
}
