//! The state-signing key (`signing-key rotate`).

use noco_proto::v1 as pb;
use serde::Serialize;

/// The key the server signs with now, and the keys agents trust.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SigningKeyView {
    pub key_id: String,
    pub trusted_key_ids: Vec<String>,
}

impl From<&pb::RotateSigningKeyResponse> for SigningKeyView {
    fn from(r: &pb::RotateSigningKeyResponse) -> Self {
        let pb::RotateSigningKeyResponse {
            key_id,
            trusted_key_ids,
        } = r;
        SigningKeyView {
            key_id: key_id.clone(),
            trusted_key_ids: trusted_key_ids.clone(),
        }
    }
}

impl SigningKeyView {
    pub fn line(&self) -> String {
        format!(
            "signing with key {} now; agents trust {} (they reconnect once to take it)",
            self.key_id,
            self.trusted_key_ids.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_rotation_shows_the_new_key_and_the_trusted_ones() {
        let k = SigningKeyView::from(&pb::RotateSigningKeyResponse {
            key_id: "k2".into(),
            trusted_key_ids: vec!["k1".into(), "k2".into()],
        });
        assert_eq!(
            serde_json::to_value(&k).unwrap(),
            json!({"key_id": "k2", "trusted_key_ids": ["k1", "k2"]})
        );
        assert_eq!(
            k.line(),
            "signing with key k2 now; agents trust k1, k2 (they reconnect once to take it)"
        );
    }
}
