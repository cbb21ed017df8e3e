//! Signed orders: something an agent must do now (run a backup, restore one, verify one). They
//! are signed with the state-signing key like a desired state, over a context string and the
//! payload so that an order can never be taken for a state (or the reverse). An agent accepts an
//! order only if it is signed by a trust-root key, addressed to this host and not expired; it
//! does each order id once (the agent keeps the ids it has done until they expire).

use std::time::SystemTime;

use noco_proto::v1::{Order, SignedOrder};
use prost::Message;

use crate::signing::{StateSigner, TrustRoot};

/// The largest order payload an agent decodes: a restore order carries the backup's manifest.
pub const MAX_ORDER: usize = noco_proto::limits::MAX_BACKUP_MANIFEST + (1 << 20);

/// What the signature covers before the payload.
const CONTEXT: &[u8] = b"noco order v1\0";

/// Why an order was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrderRefusal {
    #[error("the order is {0} bytes, over the {MAX_ORDER}-byte limit")]
    TooLarge(usize),
    #[error("bad signature: {0}")]
    BadSignature(String),
    #[error("the signed order does not decode: {0}")]
    Malformed(String),
    #[error("the order is for host {got}, not this host ({want})")]
    OtherHost { want: String, got: String },
    #[error("the order expired at {0} (unix ms)")]
    Expired(i64),
}

fn signed_bytes(payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(CONTEXT.len() + payload.len());
    bytes.extend_from_slice(CONTEXT);
    bytes.extend_from_slice(payload);
    bytes
}

/// Sign an order.
pub fn sign(signer: &StateSigner, order: &Order) -> SignedOrder {
    let payload = order.encode_to_vec();
    let signature = signer.sign(&signed_bytes(&payload)).to_vec();
    SignedOrder {
        payload,
        key_id: signer.key_id(),
        signature,
    }
}

/// Check `envelope` for host `host_id`: signature, host, expiry.
pub fn verify(
    root: &TrustRoot,
    envelope: &SignedOrder,
    host_id: &str,
    now: SystemTime,
) -> Result<Order, OrderRefusal> {
    if envelope.payload.len() > MAX_ORDER {
        return Err(OrderRefusal::TooLarge(envelope.payload.len()));
    }
    root.verify(
        &envelope.key_id,
        &signed_bytes(&envelope.payload),
        &envelope.signature,
    )
    .map_err(|e| OrderRefusal::BadSignature(e.to_string()))?;
    let order = Order::decode(envelope.payload.as_slice())
        .map_err(|e| OrderRefusal::Malformed(e.to_string()))?;
    if order.host_id != host_id {
        return Err(OrderRefusal::OtherHost {
            want: host_id.to_string(),
            got: order.host_id,
        });
    }
    let now_ms = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    if order.expires_unix_ms <= now_ms {
        return Err(OrderRefusal::Expired(order.expires_unix_ms));
    }
    Ok(order)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::state;
    use noco_proto::v1::{DesiredState, SignedState};
    use std::time::Duration;

    fn order(host: &str, expires: i64) -> Order {
        Order {
            host_id: host.into(),
            id: "job-1".into(),
            issued_unix_ms: 0,
            expires_unix_ms: expires,
            what: None,
        }
    }

    fn root(signer: &StateSigner) -> TrustRoot {
        TrustRoot::new(&[signer.public_key().to_vec()]).unwrap()
    }

    #[test]
    fn a_signed_order_is_accepted_by_its_host_only_and_until_it_expires() {
        let signer = StateSigner::generate();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let signed = sign(&signer, &order("h1", 2_000_000));
        assert_eq!(
            verify(&root(&signer), &signed, "h1", now).unwrap().id,
            "job-1"
        );
        assert!(matches!(
            verify(&root(&signer), &signed, "h2", now),
            Err(OrderRefusal::OtherHost { .. })
        ));
        let late = SystemTime::UNIX_EPOCH + Duration::from_secs(3000);
        assert!(matches!(
            verify(&root(&signer), &signed, "h1", late),
            Err(OrderRefusal::Expired(_))
        ));
        let other = StateSigner::generate();
        assert!(matches!(
            verify(&root(&other), &signed, "h1", now),
            Err(OrderRefusal::BadSignature(_))
        ));
    }

    #[test]
    fn a_state_signature_never_passes_for_an_order_nor_the_reverse() {
        let signer = StateSigner::generate();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        // The same bytes, signed as a state: refused as an order.
        let o = order("h1", 2_000_000);
        let as_state = signer.sign(&o.encode_to_vec()).to_vec();
        let forged = SignedOrder {
            payload: o.encode_to_vec(),
            key_id: signer.key_id(),
            signature: as_state,
        };
        assert!(matches!(
            verify(&root(&signer), &forged, "h1", now),
            Err(OrderRefusal::BadSignature(_))
        ));
        // An order's signature over a state's bytes: refused as a state.
        let st = DesiredState {
            host_id: "h1".into(),
            generation: 1,
            expires_unix_ms: 2_000_000,
            ..Default::default()
        };
        let signed = sign(&signer, &o);
        let forged_state = SignedState {
            payload: st.encode_to_vec(),
            key_id: signer.key_id(),
            signature: signed.signature,
            ..Default::default()
        };
        assert!(state::verify(&root(&signer), &forged_state, "h1", None, now).is_err());
    }
}
