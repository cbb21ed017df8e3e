//! Renewing the host's certificate while the agent runs: at a jittered point between one half and
//! two thirds of its lifetime, over a fresh connection; retried until it works or the certificate
//! expires. The renewed credential is saved before it is used, and the live session is untouched:
//! the next connection presents the new certificate.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use noco_certs::credential::Credential;
use noco_certs::renew::{RenewError, renew};
use noco_certs::rotation;
use rustls::ClientConfig;

use crate::backoff::{Backoff, random_unit};
use crate::datadir::DataDir;

/// The credential in use and the TLS configuration made from it.
#[derive(Debug, Clone)]
pub struct LiveCredential {
    pub cred: Arc<ArcSwap<Credential>>,
    pub tls: Arc<ArcSwap<ClientConfig>>,
}

impl LiveCredential {
    pub fn new(cred: Credential) -> anyhow::Result<Self> {
        let tls = Arc::new(ArcSwap::from_pointee(cred.client_config()?));
        Ok(LiveCredential {
            cred: Arc::new(ArcSwap::from_pointee(cred)),
            tls,
        })
    }
}

/// Renew forever; returns only when renewal has become impossible (revoked, or expired).
pub async fn run(dir: DataDir, live: LiveCredential) -> String {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        let cred = live.cred.load_full();
        let peer = match cred.peer() {
            Ok(p) => p,
            Err(e) => return format!("the stored certificate is unreadable: {e}"),
        };
        let at = rotation::renew_at(peer.not_before, peer.not_after, random_unit());
        if let Ok(wait) = at.duration_since(SystemTime::now()) {
            tracing::debug!("next certificate renewal in {wait:?}");
            tokio::time::sleep(wait).await;
        }
        loop {
            match renew(&cred, Duration::from_secs(10)).await {
                Ok(next) => {
                    if let Err(e) = dir.save_credential(&next) {
                        tracing::error!(
                            "saving the renewed certificate: {e:#}; keeping the old one"
                        );
                        tokio::time::sleep(backoff.next_delay(random_unit())).await;
                        continue;
                    }
                    match next.client_config() {
                        Ok(config) => live.tls.store(Arc::new(config)),
                        Err(e) => return format!("the renewed certificate is unusable: {e}"),
                    }
                    let until = next
                        .peer()
                        .map(|p| humantime::format_rfc3339_seconds(p.not_after).to_string())
                        .unwrap_or_default();
                    live.cred.store(Arc::new(next));
                    backoff.reset();
                    tracing::info!("renewed the host certificate; valid until {until}");
                    break;
                }
                Err(RenewError::Refused(status))
                    if status.code() == tonic::Code::PermissionDenied =>
                {
                    return format!(
                        "the server refused to renew this host's certificate: {}",
                        status.message()
                    );
                }
                Err(e) => {
                    let now = SystemTime::now();
                    if now >= peer.not_after {
                        return format!(
                            "the certificate expired at {} before it could be renewed ({e}): enroll this host again",
                            humantime::format_rfc3339_seconds(peer.not_after)
                        );
                    }
                    let remaining = peer.not_after.duration_since(now).unwrap_or_default();
                    let delay = backoff
                        .next_delay(random_unit())
                        .min(remaining / 4)
                        .max(Duration::from_millis(100));
                    tracing::warn!("renewing the host certificate: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}
