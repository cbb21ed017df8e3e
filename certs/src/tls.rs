//! rustls configurations for every connection noco makes, built in one place:
//!
//! - the server: client certificates optional at the handshake (only enrollment may go without
//!   one; the server's auth layer enforces the rest), verified against noco's CA, and refused at
//!   the handshake when their identity is on the ban list; its own certificate can be swapped
//!   while running;
//! - agents and operators: verify the server against noco's CA and present their certificate;
//! - enrollment: no CA yet, so the server's chain must contain the CA the token pins.

use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore,
    ServerConfig, SignatureScheme,
};

use crate::{CertError, Identity, PeerCert, sha256_hex};

const ALPN_H2: &[u8] = b"h2";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Every certificate in a PEM bundle.
pub fn certs_from_pem(pem: &str) -> Result<Vec<CertificateDer<'static>>, CertError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CertError::Pem(format!("reading certificates: {e}")))?;
    if certs.is_empty() {
        return Err(CertError::Pem("no certificate in PEM".to_string()));
    }
    Ok(certs)
}

/// The DER bytes of the first certificate in a PEM bundle.
pub fn first_cert_der(pem: &str) -> Result<Vec<u8>, CertError> {
    Ok(certs_from_pem(pem)?.remove(0).to_vec())
}

/// A private key from PEM (PKCS#8, SEC1 or PKCS#1).
pub fn key_from_pem(pem: &str) -> Result<PrivateKeyDer<'static>, CertError> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| CertError::Pem(format!("reading private key: {e}")))
}

fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, CertError> {
    let mut store = RootCertStore::empty();
    for cert in certs_from_pem(ca_pem)? {
        store.add(cert)?;
    }
    Ok(Arc::new(store))
}

/// Who is refused at the handshake, checked for every client certificate presented.
pub trait BanList: Send + Sync + fmt::Debug {
    fn is_banned(&self, identity: &Identity) -> bool;
}

/// The server's own certificate, replaceable while the server runs (renewal).
#[derive(Debug)]
pub struct RotatingCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl RotatingCert {
    pub fn new(chain_pem: &str, key_pem: &str) -> Result<Arc<Self>, CertError> {
        Ok(Arc::new(RotatingCert {
            current: RwLock::new(certified_key(chain_pem, key_pem)?),
        }))
    }

    pub fn replace(&self, chain_pem: &str, key_pem: &str) -> Result<(), CertError> {
        let new = certified_key(chain_pem, key_pem)?;
        match self.current.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        Ok(())
    }
}

fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, CertError> {
    Ok(Arc::new(CertifiedKey::from_der(
        certs_from_pem(chain_pem)?,
        key_from_pem(key_pem)?,
        &provider(),
    )?))
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        })
    }
}

/// The server's TLS configuration. `cert` must present the chain `[server, CA]` so that
/// enrolling agents can find the CA their token pins.
pub fn server_config(
    ca_pem: &str,
    cert: Arc<RotatingCert>,
    bans: Arc<dyn BanList>,
) -> Result<ServerConfig, CertError> {
    let inner = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider())
        .allow_unauthenticated()
        .build()?;
    let verifier = Arc::new(BanningVerifier { inner, bans });
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client configuration for an enrolled agent or a logged-in operator.
pub fn client_config(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
) -> Result<ClientConfig, CertError> {
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs_from_pem(cert_pem)?, key_from_pem(key_pem)?)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// A client configuration that trusts a server only if its chain contains the CA whose
/// fingerprint a token pins, and presents no certificate (enrollment and login).
pub fn pinned_client_config(ca_fingerprint: &str) -> Result<ClientConfig, CertError> {
    let verifier = Arc::new(PinnedCaVerifier {
        fingerprint: ca_fingerprint.to_lowercase(),
    });
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(config)
}

/// Find the CA certificate in a PEM bundle with the given fingerprint (enrollment: the server's
/// chain), as PEM. Used to store the CA after a pinned handshake.
pub fn find_pinned(
    chain: &[CertificateDer<'_>],
    fingerprint: &str,
) -> Option<CertificateDer<'static>> {
    chain
        .iter()
        .find(|c| sha256_hex(c) == fingerprint)
        .map(|c| c.clone().into_owned())
}

#[derive(Debug)]
struct BanningVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    bans: Arc<dyn BanList>,
}

impl ClientCertVerifier for BanningVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let peer = PeerCert::from_der(end_entity)
            .map_err(|e| rustls::Error::General(format!("client certificate: {e}")))?;
        if self.bans.is_banned(&peer.identity) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = find_pinned(intermediates, &self.fingerprint).ok_or_else(|| {
            rustls::Error::General(format!(
                "the server's CA does not match the token's pinned fingerprint {}",
                self.fingerprint
            ))
        })?;
        let mut store = RootCertStore::empty();
        store.add(ca)?;
        let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider())
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
