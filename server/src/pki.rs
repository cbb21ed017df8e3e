//! The server's data directory and the key material in it: the CA, the server's own TLS
//! certificate (renewed by the server itself at two thirds of its life), and the state-signing
//! key. Every private key is a 0600 file; the directory is 0700.
//!
//! ```text
//! <data-dir>/ca.crt  ca.key  server.crt  server.key  state-signing.key  server.toml  db/
//!            admin.nococtl.toml   (written by init: the first admin's credential)
//! ```

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use noco_certs::ca::{Ca, Subject};
use noco_certs::signing::StateSigner;
use noco_certs::tls::RotatingCert;
use noco_certs::{Identity, PeerCert, keyfile, rotation};
use serde::{Deserialize, Serialize};

/// Where each file of the data directory lives.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: &Path) -> Self {
        DataDir {
            root: root.to_path_buf(),
        }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.crt")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }
    pub fn signing_key(&self) -> PathBuf {
        self.root.join("state-signing.key")
    }
    /// The latest signed trust-root update (after a key rotation).
    pub fn trust_root(&self) -> PathBuf {
        self.root.join("trust-root.pb")
    }
    pub fn settings(&self) -> PathBuf {
        self.root.join("server.toml")
    }
    pub fn db(&self) -> PathBuf {
        self.root.join("db")
    }
    pub fn admin_credential(&self) -> PathBuf {
        self.root.join("admin.nococtl.toml")
    }
}

/// What `init` decided and `run` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    /// The URL agents and operators are told to dial.
    pub server_url: String,
    pub dns_names: Vec<String>,
    pub ip_addrs: Vec<IpAddr>,
    pub server_cert_ttl_secs: u64,
}

pub struct Pki {
    pub dir: DataDir,
    pub ca: Ca,
    /// The key desired state is signed with (replaced by rotation).
    signer: std::sync::RwLock<std::sync::Arc<StateSigner>>,
    /// The latest signed trust-root update, once the key has been rotated.
    trust_roots: std::sync::RwLock<Vec<noco_proto::v1::SignedTrustRoot>>,
    pub server_cert: Arc<RotatingCert>,
    pub settings: Settings,
    /// The server certificate chain last loaded into `server_cert` (to notice a new one on
    /// disk, written by `noco-server cert add-san`).
    loaded_chain: std::sync::Mutex<String>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .field("ca", &self.ca)
            .finish_non_exhaustive()
    }
}

fn read(path: &Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

impl Pki {
    /// Create the CA, the state-signing key and the server certificate in an empty data
    /// directory.
    pub fn create(
        dir: &DataDir,
        settings: Settings,
        ca_ttl: Duration,
        now: SystemTime,
    ) -> anyhow::Result<Pki> {
        if dir.ca_cert().exists() || dir.db().exists() {
            bail!(
                "{} already holds a noco server (found {}); refusing to overwrite it",
                dir.root.display(),
                if dir.ca_cert().exists() {
                    "ca.crt"
                } else {
                    "db/"
                }
            );
        }
        keyfile::create_private_dir(&dir.root)
            .with_context(|| format!("creating {}", dir.root.display()))?;
        let ca = Ca::create("noco CA", ca_ttl, now)?;
        let signer = StateSigner::generate();
        keyfile::write_secret(&dir.ca_key(), ca.key_pem().as_bytes()).context("writing ca.key")?;
        keyfile::write_atomic(&dir.ca_cert(), ca.cert_pem().as_bytes(), 0o644)
            .context("writing ca.crt")?;
        keyfile::write_secret(&dir.signing_key(), hex::encode(signer.to_seed()).as_bytes())
            .context("writing state-signing.key")?;
        let text = toml::to_string(&settings).context("encoding server.toml")?;
        keyfile::write_atomic(&dir.settings(), text.as_bytes(), 0o644)
            .context("writing server.toml")?;
        let (chain, key) = issue_server_cert(&ca, &settings, now)?;
        write_server_cert(dir, &chain, &key)?;
        let server_cert = RotatingCert::new(&chain, &key)?;
        Ok(Pki::assemble(
            dir,
            ca,
            signer,
            Vec::new(),
            server_cert,
            settings,
        ))
    }

    fn assemble(
        dir: &DataDir,
        ca: Ca,
        signer: StateSigner,
        trust_roots: Vec<noco_proto::v1::SignedTrustRoot>,
        server_cert: Arc<RotatingCert>,
        settings: Settings,
    ) -> Pki {
        Pki {
            dir: dir.clone(),
            ca,
            signer: std::sync::RwLock::new(Arc::new(signer)),
            trust_roots: std::sync::RwLock::new(trust_roots),
            server_cert,
            settings,
            loaded_chain: std::sync::Mutex::default(),
        }
    }

    /// The current state-signing key.
    pub fn signer(&self) -> Arc<StateSigner> {
        match self.signer.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Every signed trust-root update, oldest first (none before the first rotation). Sent in
    /// order, they lead an agent from any earlier root to the current one, each update signed by
    /// a key of the root before it.
    pub fn trust_roots(&self) -> Vec<noco_proto::v1::SignedTrustRoot> {
        match self.trust_roots.read() {
            Ok(t) => t.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The latest signed trust-root update.
    pub fn trust_root(&self) -> Option<noco_proto::v1::SignedTrustRoot> {
        self.trust_roots().pop()
    }

    /// The keys agents should trust: those of the latest update, else the signing key alone.
    pub fn trusted_keys(&self) -> Vec<noco_proto::v1::TrustKey> {
        use prost::Message;
        self.trust_root()
            .and_then(|t| noco_proto::v1::TrustRootUpdate::decode(t.payload.as_slice()).ok())
            .map(|u| u.keys)
            .unwrap_or_else(|| {
                let s = self.signer();
                vec![noco_proto::v1::TrustKey {
                    key_id: s.key_id(),
                    public_key: s.public_key().to_vec(),
                }]
            })
    }

    /// Make a new signing key, introduce it in a trust root `[current, new]` signed by the
    /// current key, and persist both before using the new key. Returns the new trust root.
    pub fn rotate_signing_key(
        &self,
        now_ms: i64,
    ) -> anyhow::Result<noco_proto::v1::SignedTrustRoot> {
        let current = self.signer();
        let next = StateSigner::generate();
        let keys = vec![
            noco_proto::v1::TrustKey {
                key_id: current.key_id(),
                public_key: current.public_key().to_vec(),
            },
            noco_proto::v1::TrustKey {
                key_id: next.key_id(),
                public_key: next.public_key().to_vec(),
            },
        ];
        let update = noco_proto::v1::TrustRootUpdate {
            keys,
            issued_unix_ms: now_ms,
        };
        let signed = noco_certs::state::sign_trust_root(&current, &update);
        // The trust root first: if we crash before the key is replaced, agents trust both keys
        // and the old one keeps signing.
        let mut chain = self.trust_roots();
        chain.push(signed.clone());
        keyfile::write_secret(&self.dir.trust_root(), &encode_chain(&chain))
            .context("writing trust-root.pb")?;
        keyfile::write_secret(
            &self.dir.signing_key(),
            hex::encode(next.to_seed()).as_bytes(),
        )
        .context("writing state-signing.key")?;
        match self.signer.write() {
            Ok(mut s) => *s = Arc::new(next),
            Err(p) => *p.into_inner() = Arc::new(next),
        }
        match self.trust_roots.write() {
            Ok(mut t) => *t = chain,
            Err(p) => *p.into_inner() = chain,
        }
        Ok(signed)
    }

    /// Load the key material of an initialized data directory.
    pub fn load(dir: &DataDir) -> anyhow::Result<Pki> {
        if !dir.ca_cert().exists() {
            bail!(
                "{} is not an initialized noco server data directory (no ca.crt): run `noco-server init --data-dir {}` first",
                dir.root.display(),
                dir.root.display()
            );
        }
        let ca =
            Ca::load(&read(&dir.ca_cert())?, &read(&dir.ca_key())?).context("loading the CA")?;
        let seed = hex::decode(read(&dir.signing_key())?.trim())
            .context("state-signing.key is not hex")?;
        let signer = StateSigner::from_seed(&seed).context("loading state-signing.key")?;
        let trust_roots = match std::fs::read(dir.trust_root()) {
            Ok(bytes) => decode_chain(&bytes).context("parsing trust-root.pb")?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).context("reading trust-root.pb"),
        };
        let settings: Settings =
            toml::from_str(&read(&dir.settings())?).context("parsing server.toml")?;
        let server_cert = RotatingCert::new(&read(&dir.server_cert())?, &read(&dir.server_key())?)
            .context("loading the server certificate")?;
        Ok(Pki::assemble(
            dir,
            ca,
            signer,
            trust_roots,
            server_cert,
            settings,
        ))
    }

    /// Renew the server's certificate when it is due; the new one serves the next handshake.
    /// The names and addresses come from `server.toml` as it is now on disk.
    pub fn renew_server_cert_if_due(&self, now: SystemTime) -> anyhow::Result<bool> {
        let current = PeerCert::from_pem(&read(&self.dir.server_cert())?)?;
        if !rotation::due(current.not_before, current.not_after, now) {
            return Ok(false);
        }
        let settings = self.settings_on_disk()?;
        let (chain, key) = issue_server_cert(&self.ca, &settings, now)?;
        write_server_cert(&self.dir, &chain, &key)?;
        self.load_server_cert(&chain, &key)?;
        tracing::info!("renewed the server certificate");
        Ok(true)
    }

    fn settings_on_disk(&self) -> anyhow::Result<Settings> {
        toml::from_str(&read(&self.dir.settings())?).context("parsing server.toml")
    }

    fn load_server_cert(&self, chain: &str, key: &str) -> anyhow::Result<()> {
        self.server_cert.replace(chain, key)?;
        let mut loaded = self.loaded_chain.lock().unwrap_or_else(|p| p.into_inner());
        *loaded = chain.to_string();
        Ok(())
    }

    /// Serve the certificate on disk when it is not the one served (another process wrote a
    /// new one: `noco-server cert add-san`).
    pub fn reload_server_cert_if_changed(&self) -> anyhow::Result<bool> {
        let chain = read(&self.dir.server_cert())?;
        let unchanged = *self.loaded_chain.lock().unwrap_or_else(|p| p.into_inner()) == chain;
        if unchanged {
            return Ok(false);
        }
        let key = read(&self.dir.server_key())?;
        self.load_server_cert(&chain, &key)?;
        tracing::info!("serving the server certificate found on disk");
        Ok(true)
    }

    /// Add DNS names or IP addresses to the server's certificate: recorded in `server.toml`
    /// and a new certificate issued and served at once (a running server on the same data
    /// directory serves it within a minute). Returns those that were new.
    pub fn add_sans(&self, sans: &[String], now: SystemTime) -> anyhow::Result<Vec<String>> {
        let mut settings = self.settings_on_disk()?;
        let mut added = Vec::new();
        for san in sans {
            let san = san.trim();
            match san.parse::<IpAddr>() {
                Ok(ip) if !settings.ip_addrs.contains(&ip) => {
                    settings.ip_addrs.push(ip);
                    added.push(san.to_string());
                }
                Ok(_) => {}
                Err(_) => {
                    let name = san.to_ascii_lowercase();
                    let valid = !name.is_empty()
                        && name.len() <= 253
                        && name.split('.').all(|l| {
                            !l.is_empty()
                                && l.len() <= 63
                                && !l.starts_with('-')
                                && !l.ends_with('-')
                                && l.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'*')
                        });
                    if !valid {
                        bail!("{san:?} is neither an IP address nor a DNS name");
                    }
                    if !settings.dns_names.contains(&name) {
                        settings.dns_names.push(name.clone());
                        added.push(name);
                    }
                }
            }
        }
        if added.is_empty() {
            return Ok(added);
        }
        let (chain, key) = issue_server_cert(&self.ca, &settings, now)?;
        let text = toml::to_string(&settings).context("encoding server.toml")?;
        // The file is also the server's configuration (`[alerts]`): keep everything else in it.
        let text = crate::config::replace_settings(&read(&self.dir.settings())?, &text)
            .context("encoding server.toml")?;
        keyfile::write_atomic(&self.dir.settings(), text.as_bytes(), 0o644)
            .context("writing server.toml")?;
        write_server_cert(&self.dir, &chain, &key)?;
        self.load_server_cert(&chain, &key)?;
        Ok(added)
    }

    /// The names and addresses the server's certificate carries.
    pub fn sans(&self) -> anyhow::Result<Vec<String>> {
        let settings = self.settings_on_disk()?;
        Ok(settings
            .dns_names
            .iter()
            .cloned()
            .chain(settings.ip_addrs.iter().map(|ip| ip.to_string()))
            .collect())
    }

    pub fn issue(
        &self,
        csr_pem: &str,
        identity: &Identity,
        name: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, noco_certs::CertError> {
        let subject = Subject {
            identity,
            common_name: name,
            dns_names: &[],
            ip_addrs: &[],
            lifetime: ttl,
        };
        self.ca.issue_for_csr(csr_pem, &subject, now)
    }
}

fn issue_server_cert(
    ca: &Ca,
    settings: &Settings,
    now: SystemTime,
) -> anyhow::Result<(String, String)> {
    let subject = Subject {
        identity: &Identity::Server,
        common_name: "noco-server",
        dns_names: &settings.dns_names,
        ip_addrs: &settings.ip_addrs,
        lifetime: Duration::from_secs(settings.server_cert_ttl_secs),
    };
    let (cert, key) = ca.issue_with_new_key(&subject, now)?;
    // The chain carries the CA so enrolling agents can check the pin.
    Ok((format!("{cert}{}", ca.cert_pem()), key))
}

fn write_server_cert(dir: &DataDir, chain: &str, key: &str) -> anyhow::Result<()> {
    keyfile::write_secret(&dir.server_key(), key.as_bytes()).context("writing server.key")?;
    keyfile::write_atomic(&dir.server_cert(), chain.as_bytes(), 0o644)
        .context("writing server.crt")?;
    Ok(())
}

/// `trust-root.pb`: the chain of signed trust-root updates, each length-delimited.
fn encode_chain(chain: &[noco_proto::v1::SignedTrustRoot]) -> Vec<u8> {
    use prost::Message;
    let mut out = Vec::new();
    for update in chain {
        // Writing into a Vec cannot fail.
        let _ = update.encode_length_delimited(&mut out);
    }
    out
}

fn decode_chain(
    mut bytes: &[u8],
) -> Result<Vec<noco_proto::v1::SignedTrustRoot>, prost::DecodeError> {
    use prost::Message;
    let mut chain = Vec::new();
    while !bytes.is_empty() {
        chain.push(noco_proto::v1::SignedTrustRoot::decode_length_delimited(
            &mut bytes,
        )?);
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sans_in(pem: &str) -> Vec<String> {
        let der = rustls_pemfile_first(pem);
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let mut out = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    x509_parser::extensions::GeneralName::DNSName(d) => out.push(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(ip) => {
                        out.push(format!("{ip:?}"))
                    }
                    _ => {}
                }
            }
        }
        out
    }

    fn rustls_pemfile_first(pem: &str) -> Vec<u8> {
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        p.contents
    }

    #[test]
    fn names_added_to_the_server_certificate_are_kept_served_and_noticed_by_a_running_server() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = DataDir::new(&tmp.path().join("srv"));
        let settings = Settings {
            server_url: "https://localhost:7443".into(),
            dns_names: vec!["localhost".into()],
            ip_addrs: vec!["127.0.0.1".parse().unwrap()],
            server_cert_ttl_secs: 3600,
        };
        let now = SystemTime::now();
        let running = Pki::create(&dir, settings, Duration::from_secs(86400), now).unwrap();
        running.reload_server_cert_if_changed().unwrap();
        assert!(!running.reload_server_cert_if_changed().unwrap());

        // Another process (`noco-server cert add-san`) on the same data directory.
        let other = Pki::load(&dir).unwrap();
        let added = other
            .add_sans(
                &[
                    "noco.example.com".into(),
                    "localhost".into(),
                    "10.1.2.3".into(),
                ],
                now,
            )
            .unwrap();
        assert_eq!(added, ["noco.example.com", "10.1.2.3"]);
        assert!(other.add_sans(&["-bad-".into()], now).is_err());
        let on_disk = sans_in(&std::fs::read_to_string(dir.server_cert()).unwrap());
        assert!(
            on_disk.contains(&"noco.example.com".to_string()),
            "{on_disk:?}"
        );
        assert!(on_disk.contains(&"localhost".to_string()), "{on_disk:?}");
        assert_eq!(other.sans().unwrap().len(), 4);

        // The running server notices the new certificate, and a renewal keeps the new names.
        assert!(running.reload_server_cert_if_changed().unwrap());
        let later = now + Duration::from_secs(3000);
        assert!(running.renew_server_cert_if_due(later).unwrap());
        let renewed = sans_in(&std::fs::read_to_string(dir.server_cert()).unwrap());
        assert!(
            renewed.contains(&"noco.example.com".to_string()),
            "{renewed:?}"
        );
    }
}
