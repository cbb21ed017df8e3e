//! Signing desired state (server) and accepting it (agent). The signature covers the exact
//! payload bytes and is checked before they are decoded. An agent accepts a state only if it is
//! signed by a trust-root key, addressed to this host, not expired, and not older than what it
//! last accepted; an equal generation must be the same bytes (anything else is a replay, a
//! rollback or an equivocating server).

use std::time::{SystemTime, UNIX_EPOCH};

use noco_proto::v1::{DesiredState, SignedState};
use prost::Message;

use crate::sha256_hex;
use crate::signing::{StateSigner, TrustRoot};

/// The largest payload an agent decodes: the largest host state the server issues.
pub const MAX_PAYLOAD: usize = noco_proto::limits::MAX_HOST_STATE;

/// Why a signed state was refused. Each is reported to the server and shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the state is {0} bytes, over the {MAX_PAYLOAD}-byte limit")]
    TooLarge(usize),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("the signed payload does not decode: {0}")]
    Malformed(String),
    #[error("the state is for host {got}, not this host ({want})")]
    OtherHost { want: String, got: String },
    #[error("the state expired at {0} (unix ms)")]
    Expired(i64),
    #[error(
        "generation {got} is older than the accepted generation {accepted} (rollback or replay)"
    )]
    Rollback { accepted: u64, got: u64 },
    #[error("generation {0} was already accepted with different content")]
    Equivocation(u64),
}

/// What an agent last accepted: enough to judge the next state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub generation: u64,
    /// Hex SHA-256 of the accepted payload bytes.
    pub digest: String,
}

/// The outcome of a state that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// A newer generation: persist it, then apply it.
    New(DesiredState),
    /// The generation already accepted, byte for byte (a re-send after a reconnect).
    Same,
}

/// Sign a desired state: encode it once and sign those bytes.
pub fn sign(signer: &StateSigner, state: &DesiredState) -> SignedState {
    let payload = state.encode_to_vec();
    let signature = signer.sign(&payload).to_vec();
    SignedState {
        payload,
        key_id: signer.key_id(),
        signature,
        traceparents: Default::default(),
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Judge `envelope` for host `host_id`, given what was last accepted.
pub fn verify(
    root: &TrustRoot,
    envelope: &SignedState,
    host_id: &str,
    last: Option<&Accepted>,
    now: SystemTime,
) -> Result<Verdict, Refusal> {
    if envelope.payload.len() > MAX_PAYLOAD {
        return Err(Refusal::TooLarge(envelope.payload.len()));
    }
    root.verify(&envelope.key_id, &envelope.payload, &envelope.signature)
        .map_err(|e| Refusal::BadSignature(e.to_string()))?;
    let state = DesiredState::decode(envelope.payload.as_slice())
        .map_err(|e| Refusal::Malformed(e.to_string()))?;
    if state.host_id != host_id {
        return Err(Refusal::OtherHost {
            want: host_id.to_string(),
            got: state.host_id,
        });
    }
    if state.expires_unix_ms <= unix_ms(now) {
        return Err(Refusal::Expired(state.expires_unix_ms));
    }
    if let Some(last) = last {
        if state.generation < last.generation {
            return Err(Refusal::Rollback {
                accepted: last.generation,
                got: state.generation,
            });
        }
        if state.generation == last.generation {
            return if sha256_hex(&envelope.payload) == last.digest {
                Ok(Verdict::Same)
            } else {
                Err(Refusal::Equivocation(state.generation))
            };
        }
    }
    Ok(Verdict::New(state))
}

/// What to remember after accepting `envelope`.
pub fn accepted(envelope: &SignedState, generation: u64) -> Accepted {
    Accepted {
        generation,
        digest: sha256_hex(&envelope.payload),
    }
}

/// Sign a trust-root update (the keys agents should trust next) with a key they trust now.
pub fn sign_trust_root(
    signer: &StateSigner,
    update: &noco_proto::v1::TrustRootUpdate,
) -> noco_proto::v1::SignedTrustRoot {
    let payload = update.encode_to_vec();
    let signature = signer.sign(&payload).to_vec();
    noco_proto::v1::SignedTrustRoot {
        payload,
        key_id: signer.key_id(),
        signature,
    }
}

/// Check a trust-root update against the current trust root: signed by a trusted key, over the
/// exact bytes, with at least one valid key. Returns the new root and its keys.
pub fn verify_trust_root(
    root: &TrustRoot,
    envelope: &noco_proto::v1::SignedTrustRoot,
) -> Result<(TrustRoot, Vec<noco_proto::v1::TrustKey>), Refusal> {
    if envelope.payload.len() > 64 * 1024 {
        return Err(Refusal::TooLarge(envelope.payload.len()));
    }
    root.verify(&envelope.key_id, &envelope.payload, &envelope.signature)
        .map_err(|e| Refusal::BadSignature(e.to_string()))?;
    let update = noco_proto::v1::TrustRootUpdate::decode(envelope.payload.as_slice())
        .map_err(|e| Refusal::Malformed(e.to_string()))?;
    if update.keys.is_empty() {
        return Err(Refusal::Malformed("a trust root with no key".into()));
    }
    let new = TrustRoot::new(
        &update
            .keys
            .iter()
            .map(|k| k.public_key.clone())
            .collect::<Vec<_>>(),
    )
    .map_err(|e| Refusal::Malformed(e.to_string()))?;
    Ok((new, update.keys))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn state(host: &str, generation: u64, expires_in: i64) -> DesiredState {
        let now = unix_ms(SystemTime::now());
        DesiredState {
            host_id: host.into(),
            generation,
            issued_unix_ms: now,
            expires_unix_ms: now + expires_in,
            stacks: vec![],
        }
    }

    fn setup() -> (StateSigner, TrustRoot) {
        let signer = StateSigner::generate();
        let root = TrustRoot::new(&[signer.public_key().to_vec()]).unwrap();
        (signer, root)
    }

    #[test]
    fn a_fresh_state_for_this_host_is_accepted_and_a_resend_is_the_same() {
        let (signer, root) = setup();
        let env = sign(&signer, &state("h1", 5, 60_000));
        let Ok(Verdict::New(s)) = verify(&root, &env, "h1", None, SystemTime::now()) else {
            panic!("refused")
        };
        assert_eq!(s.generation, 5);
        let last = accepted(&env, 5);
        assert_eq!(
            verify(&root, &env, "h1", Some(&last), SystemTime::now()),
            Ok(Verdict::Same)
        );
        let next = sign(&signer, &state("h1", 6, 60_000));
        assert!(matches!(
            verify(&root, &next, "h1", Some(&last), SystemTime::now()),
            Ok(Verdict::New(_))
        ));
    }

    #[test]
    fn every_refusal_names_its_reason() {
        let (signer, root) = setup();
        let now = SystemTime::now();
        let last = accepted(&sign(&signer, &state("h1", 5, 60_000)), 5);

        let older = sign(&signer, &state("h1", 4, 60_000));
        assert_eq!(
            verify(&root, &older, "h1", Some(&last), now),
            Err(Refusal::Rollback {
                accepted: 5,
                got: 4
            })
        );

        let mut different = state("h1", 5, 60_000);
        different.issued_unix_ms += 1;
        assert_eq!(
            verify(&root, &sign(&signer, &different), "h1", Some(&last), now),
            Err(Refusal::Equivocation(5))
        );

        let other = sign(&signer, &state("h2", 6, 60_000));
        assert!(matches!(
            verify(&root, &other, "h1", Some(&last), now),
            Err(Refusal::OtherHost { .. })
        ));

        let expired = sign(&signer, &state("h1", 6, -60_000));
        assert!(matches!(
            verify(&root, &expired, "h1", Some(&last), now),
            Err(Refusal::Expired(_))
        ));

        let mut tampered = sign(&signer, &state("h1", 6, 60_000));
        tampered.payload[3] ^= 1;
        assert!(matches!(
            verify(&root, &tampered, "h1", Some(&last), now),
            Err(Refusal::BadSignature(_))
        ));

        let (stranger, _) = setup();
        let foreign = sign(&stranger, &state("h1", 6, 60_000));
        assert!(matches!(
            verify(&root, &foreign, "h1", Some(&last), now),
            Err(Refusal::BadSignature(_))
        ));

        // Signed but not a DesiredState: refused after the signature, before use.
        let garbage = SignedState {
            payload: vec![0xff; 8],
            key_id: signer.key_id(),
            signature: signer.sign(&[0xff; 8]).to_vec(),
            ..Default::default()
        };
        assert!(matches!(
            verify(&root, &garbage, "h1", None, now),
            Err(Refusal::Malformed(_))
        ));

        let huge = SignedState {
            payload: vec![0; MAX_PAYLOAD + 1],
            key_id: signer.key_id(),
            signature: vec![],
            ..Default::default()
        };
        assert_eq!(
            verify(&root, &huge, "h1", None, now),
            Err(Refusal::TooLarge(MAX_PAYLOAD + 1))
        );
    }

    #[test]
    fn a_new_key_is_trusted_only_when_introduced_by_a_trusted_one() {
        let (old, root) = setup();
        let new = StateSigner::generate();
        let keys = vec![
            noco_proto::v1::TrustKey {
                key_id: old.key_id(),
                public_key: old.public_key().to_vec(),
            },
            noco_proto::v1::TrustKey {
                key_id: new.key_id(),
                public_key: new.public_key().to_vec(),
            },
        ];
        let update = noco_proto::v1::TrustRootUpdate {
            keys,
            issued_unix_ms: 1,
        };
        // Introduced by the new key itself: refused.
        let self_signed = sign_trust_root(&new, &update);
        assert!(matches!(
            verify_trust_root(&root, &self_signed),
            Err(Refusal::BadSignature(_))
        ));
        // Introduced by the trusted key: the new root trusts both.
        let (next, _) = verify_trust_root(&root, &sign_trust_root(&old, &update)).unwrap();
        let state = sign(&new, &state("h1", 1, 60_000));
        assert!(
            verify(&root, &state, "h1", None, SystemTime::now()).is_err(),
            "the old root does not know the new key"
        );
        assert!(verify(&next, &state, "h1", None, SystemTime::now()).is_ok());
        let mut tampered = sign_trust_root(&old, &update);
        tampered.payload[5] ^= 1;
        assert!(verify_trust_root(&root, &tampered).is_err());
    }

    #[test]
    fn a_state_is_valid_until_it_expires() {
        let (signer, root) = setup();
        let env = sign(&signer, &state("h1", 1, 1_000));
        assert!(verify(&root, &env, "h1", None, SystemTime::now()).is_ok());
        let later = SystemTime::now() + Duration::from_secs(2);
        assert!(matches!(
            verify(&root, &env, "h1", None, later),
            Err(Refusal::Expired(_))
        ));
    }
}
