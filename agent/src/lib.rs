//! noco-agent: runs on every host. [`enroll`] trades a join token for the host's certificate,
//! [`session`] keeps the one long-lived mTLS stream to the server up (with [`backoff`]),
//! [`renewal`] renews the certificate before it expires, [`facts`] describes the host,
//! [`datadir`] is what the agent keeps on disk. Desired state: [`desired`] receives it (verified
//! and persisted by [`state`]), [`stacks`] applies it (files in [`stackdir`], checked against
//! the host [`policy`]) and keeps it converged, [`report`] says how it went. The command line
//! writes through [`out`].

#![warn(clippy::print_stdout, clippy::print_stderr)]

pub mod backoff;
pub mod backup;
pub mod config;
pub mod datadir;
pub mod desired;
pub mod engine;
pub mod enroll;
pub mod facts;
pub mod local;
pub mod locks;
pub mod out;
pub mod policy;
pub mod renewal;
pub mod report;
pub mod session;
pub mod stackdir;
pub mod stacks;
pub mod state;
pub mod telemetry;

/// Exit status when the server has revoked this host or its certificate can no longer be
/// renewed: restarting will not help (the systemd unit does not restart on it).
pub const EXIT_REVOKED: u8 = 3;

/// Completes on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::error!("cannot listen for SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
