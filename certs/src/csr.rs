//! Key pairs and certificate signing requests. Private keys are made where they are used and
//! never leave that host; only the CSR travels.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::CertError;

/// A new private key and a CSR for it.
#[derive(Debug, Clone)]
pub struct KeyAndCsr {
    /// PKCS#8 PEM. Store it 0600.
    pub key_pem: String,
    pub csr_pem: String,
}

/// Make an ECDSA P-256 key and a CSR naming `common_name` (a hint only: the CA decides the
/// identity).
pub fn generate(common_name: &str) -> Result<KeyAndCsr, CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    let csr = params.serialize_request(&key)?;
    Ok(KeyAndCsr {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(|e| CertError::Csr(e.to_string()))?,
    })
}
