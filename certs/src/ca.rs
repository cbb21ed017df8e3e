//! noco's certificate authority: created once by `noco-server init`, it issues every agent,
//! operator and server certificate. The identity in an issued certificate always comes from the
//! caller of [`Ca::issue`], never from the CSR: a CSR only contributes its public key.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, PublicKeyData,
    SanType, SerialNumber,
};

use crate::{CertError, Identity, sha256_hex};

/// The largest CSR accepted, in bytes of PEM.
pub const MAX_CSR_PEM_BYTES: usize = 16 * 1024;

/// What a new certificate says about its holder.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    pub identity: &'a Identity,
    /// A human name for logs and `openssl x509 -text` (host name, operator name).
    pub common_name: &'a str,
    /// Server certificates only: the DNS names and IP addresses clients dial.
    pub dns_names: &'a [String],
    pub ip_addrs: &'a [IpAddr],
    pub lifetime: Duration,
}

pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("fingerprint", &self.fingerprint())
            .finish_non_exhaustive()
    }
}

impl Ca {
    /// Make a new self-signed CA valid from `now` for `lifetime`.
    pub fn create(name: &str, lifetime: Duration, now: SystemTime) -> Result<Self, CertError> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, name);
        dn.push(DnType::OrganizationName, "noco");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = (now - backdate(lifetime)).into();
        params.not_after = (now + lifetime).into();
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        let key_pem = key.serialize_pem();
        Self::load(&cert.pem(), &key_pem)
    }

    /// Load a CA from its certificate and private key (PEM).
    pub fn load(cert_pem: &str, key_pem: &str) -> Result<Self, CertError> {
        let cert_der = crate::tls::first_cert_der(cert_pem)?;
        let key = KeyPair::from_pem(key_pem)?;
        let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key)?;
        Ok(Ca {
            cert_pem: cert_pem.to_string(),
            cert_der,
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Hex SHA-256 of the CA certificate's DER: what join tokens pin.
    pub fn fingerprint(&self) -> String {
        sha256_hex(&self.cert_der)
    }

    /// Issue a certificate for the public key of a PEM CSR. The CSR's signature must verify
    /// (proof of possession); everything else in it is ignored.
    pub fn issue_for_csr(
        &self,
        csr_pem: &str,
        subject: &Subject<'_>,
        now: SystemTime,
    ) -> Result<String, CertError> {
        if csr_pem.len() > MAX_CSR_PEM_BYTES {
            return Err(CertError::Csr(format!(
                "{} bytes is larger than the {MAX_CSR_PEM_BYTES}-byte limit",
                csr_pem.len()
            )));
        }
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CertError::Csr(format!("not a valid, self-signed CSR: {e}")))?;
        self.issue(&csr.public_key, subject, now)
    }

    /// Make a key pair here and issue a certificate for it (the server's own certificate, the
    /// first admin's). Returns `(certificate PEM, private key PEM)`.
    pub fn issue_with_new_key(
        &self,
        subject: &Subject<'_>,
        now: SystemTime,
    ) -> Result<(String, String), CertError> {
        let key = KeyPair::generate()?;
        Ok((self.issue(&key, subject, now)?, key.serialize_pem()))
    }

    fn issue(
        &self,
        public_key: &impl PublicKeyData,
        subject: &Subject<'_>,
        now: SystemTime,
    ) -> Result<String, CertError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, subject.common_name);
        dn.push(DnType::OrganizationName, "noco");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = match subject.identity {
            Identity::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            _ => vec![ExtendedKeyUsagePurpose::ClientAuth],
        };
        let uri = subject.identity.uri();
        let mut sans = vec![SanType::URI(uri.as_str().try_into()?)];
        for dns in subject.dns_names {
            sans.push(SanType::DnsName(dns.as_str().try_into()?));
        }
        sans.extend(subject.ip_addrs.iter().copied().map(SanType::IpAddress));
        params.subject_alt_names = sans;
        params.not_before = (now - backdate(subject.lifetime)).into();
        params.not_after = (now + subject.lifetime).into();
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        Ok(params.signed_by(public_key, &self.issuer)?.pem())
    }
}

/// Certificates start a little in the past to absorb clock skew between hosts: a tenth of the
/// lifetime, at most five minutes.
fn backdate(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

fn random_serial() -> SerialNumber {
    let mut bytes = crate::random_bytes::<16>();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and never shortened by DER encoding
    SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PeerCert, Role, csr};

    #[test]
    fn issued_certificates_carry_the_callers_identity_not_the_csrs() {
        let now = SystemTime::now();
        let ca = Ca::create("test CA", Duration::from_secs(3600), now).unwrap();
        let req = csr::generate("evil").unwrap();
        let identity = Identity::Operator {
            operator_id: "op1".into(),
            role: Role::Viewer,
        };
        let subject = Subject {
            identity: &identity,
            common_name: "alice",
            dns_names: &[],
            ip_addrs: &[],
            lifetime: Duration::from_secs(60),
        };
        let pem = ca.issue_for_csr(&req.csr_pem, &subject, now).unwrap();
        let peer = PeerCert::from_pem(&pem).unwrap();
        assert_eq!(peer.identity, identity);
        assert_eq!(peer.common_name, "alice");
        let lifetime = peer.not_after.duration_since(peer.not_before).unwrap();
        assert_eq!(lifetime, Duration::from_secs(66));
    }

    #[test]
    fn a_tampered_csr_is_refused() {
        let ca = Ca::create("test CA", Duration::from_secs(3600), SystemTime::now()).unwrap();
        let identity = Identity::Agent {
            host_id: "h1".into(),
        };
        let subject = Subject {
            identity: &identity,
            common_name: "h1",
            dns_names: &[],
            ip_addrs: &[],
            lifetime: Duration::from_secs(60),
        };
        let garbage =
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
        let err = ca
            .issue_for_csr(garbage, &subject, SystemTime::now())
            .unwrap_err();
        assert!(err.to_string().contains("CSR"), "{err}");
        let huge = "x".repeat(MAX_CSR_PEM_BYTES + 1);
        assert!(
            ca.issue_for_csr(&huge, &subject, SystemTime::now())
                .is_err()
        );
    }

    #[test]
    fn a_ca_survives_a_save_and_load() {
        let ca = Ca::create("test CA", Duration::from_secs(3600), SystemTime::now()).unwrap();
        let loaded = Ca::load(ca.cert_pem(), ca.key_pem()).unwrap();
        assert_eq!(loaded.fingerprint(), ca.fingerprint());
    }
}
