//! noco-certs: noco's PKI and trust root.
//!
//! The CA ([`ca`]), key pairs and CSRs ([`csr`]), the identities certificates carry
//! ([`identity`]), when to renew ([`rotation`]), rustls configurations with the ban-list hook and
//! CA pinning ([`tls`]), join/login tokens that pin the CA ([`token`]), and the ed25519 keys that
//! sign desired state ([`signing`]).

pub mod ca;
pub mod credential;
pub mod csr;
pub mod dial;
pub mod error;
pub mod identity;
pub mod keyfile;
pub mod order;
pub mod renew;
pub mod rotation;
pub mod signing;
pub mod state;
pub mod tls;
pub mod token;

pub use error::CertError;
pub use identity::{Identity, PeerCert, Role};

/// Install the ring crypto provider as the process default. Call first thing in every `main` and
/// test; calling it twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Hex SHA-256 of DER bytes: the CA fingerprint format tokens pin.
pub fn sha256_hex(der: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(der))
}

/// `N` bytes from the operating system's CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; N];
    // SystemRandom only fails when the OS has no entropy source at all; there is nothing
    // sensible to do then but stop.
    #[allow(clippy::expect_used)]
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the OS random number generator failed");
    bytes
}

/// A random lowercase hex string of `2 * N` characters, for ids and secrets.
pub fn random_hex<const N: usize>() -> String {
    hex::encode(random_bytes::<N>())
}
