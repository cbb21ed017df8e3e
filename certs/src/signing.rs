//! The ed25519 keys that sign desired state, and the trust root agents verify it with. The
//! signature always covers the exact payload bytes, and is checked before the payload is decoded.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::{CertError, random_bytes, sha256_hex};

/// A key that may sign desired state (held by the server only).
pub struct StateSigner {
    key: SigningKey,
}

impl std::fmt::Debug for StateSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSigner")
            .field("key_id", &self.key_id())
            .finish_non_exhaustive()
    }
}

impl StateSigner {
    pub fn generate() -> Self {
        StateSigner {
            key: SigningKey::from_bytes(&random_bytes::<32>()),
        }
    }

    /// The 32-byte seed, for storing (0600).
    pub fn to_seed(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    pub fn from_seed(seed: &[u8]) -> Result<Self, CertError> {
        let seed: [u8; 32] = seed.try_into().map_err(|_| {
            CertError::Signature(format!(
                "a signing key seed is 32 bytes, not {}",
                seed.len()
            ))
        })?;
        Ok(StateSigner {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn key_id(&self) -> String {
        key_id(&self.public_key())
    }

    pub fn sign(&self, payload: &[u8]) -> [u8; 64] {
        self.key.sign(payload).to_bytes()
    }
}

/// The id of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &[u8]) -> String {
    sha256_hex(public_key)[..16].to_string()
}

/// The keys an agent accepts desired state from.
#[derive(Debug, Clone, Default)]
pub struct TrustRoot {
    keys: Vec<(String, VerifyingKey)>,
}

impl TrustRoot {
    pub fn new(public_keys: &[Vec<u8>]) -> Result<Self, CertError> {
        let mut keys = Vec::new();
        for pk in public_keys {
            let bytes: [u8; 32] = pk.as_slice().try_into().map_err(|_| {
                CertError::Signature(format!("a public key is 32 bytes, not {}", pk.len()))
            })?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|e| CertError::Signature(format!("invalid public key: {e}")))?;
            keys.push((key_id(&bytes), key));
        }
        Ok(TrustRoot { keys })
    }

    pub fn key_ids(&self) -> Vec<String> {
        self.keys.iter().map(|(id, _)| id.clone()).collect()
    }

    /// Verify `signature` over `payload` by the key `key_id`.
    pub fn verify(&self, key_id: &str, payload: &[u8], signature: &[u8]) -> Result<(), CertError> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .ok_or_else(|| {
                CertError::Signature(format!("key {key_id} is not in the trust root"))
            })?;
        let sig: [u8; 64] = signature.try_into().map_err(|_| {
            CertError::Signature(format!("a signature is 64 bytes, not {}", signature.len()))
        })?;
        key.verify_strict(payload, &Signature::from_bytes(&sig))
            .map_err(|_| CertError::Signature(format!("bad signature by key {key_id}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_over_the_exact_bytes() {
        let signer = StateSigner::generate();
        let root = TrustRoot::new(&[signer.public_key().to_vec()]).unwrap();
        let sig = signer.sign(b"payload");
        root.verify(&signer.key_id(), b"payload", &sig).unwrap();
        assert!(root.verify(&signer.key_id(), b"payloae", &sig).is_err());
        assert!(root.verify("0000000000000000", b"payload", &sig).is_err());
        let reloaded = StateSigner::from_seed(&signer.to_seed()).unwrap();
        assert_eq!(reloaded.public_key(), signer.public_key());
    }
}
