//! The typed error every function of noco-certs returns.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum CertError {
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("PEM: {0}")]
    Pem(String),
    #[error("certificate: {0}")]
    Parse(String),
    #[error("certificate has no noco identity: {0}")]
    NoIdentity(String),
    #[error("certificate signing request: {0}")]
    Csr(String),
    #[error("token: {0}")]
    Token(String),
    #[error("signature: {0}")]
    Signature(String),
}
