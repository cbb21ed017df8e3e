//! The desired state this host accepted, kept on disk: `<data-dir>/state/desired.pb`, the signed
//! envelope exactly as received. A state is persisted (atomically, fsync) before it is applied,
//! so a restarted agent — even with the server away — applies its last good state, and still
//! refuses anything older. The file is re-verified when read: a copy edited on disk is refused.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use noco_certs::signing::TrustRoot;
use noco_certs::state::{self, Accepted, Refusal, Verdict};
use noco_proto::v1::{DesiredState, SignedState};
use prost::Message;

use crate::datadir::{DataDir, TrustRootFile};

/// The accepted state of this host.
#[derive(Debug)]
pub struct StateStore {
    path: PathBuf,
    host_id: String,
    root: TrustRoot,
    current: Option<(DesiredState, Accepted)>,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("refused desired state: {0}")]
    Refused(#[from] Refusal),
    #[error("{path}: {err}")]
    Disk { path: String, err: String },
}

impl DataDir {
    pub fn desired_state(&self) -> PathBuf {
        self.root.join("state").join("desired.pb")
    }
}

/// The trust root from `trust-root.json`.
pub fn trust_root(file: &TrustRootFile) -> Result<TrustRoot, String> {
    let keys = file
        .keys
        .iter()
        .map(|k| hex::decode(&k.public_key_hex).map_err(|e| format!("trust key {}: {e}", k.key_id)))
        .collect::<Result<Vec<_>, _>>()?;
    TrustRoot::new(&keys).map_err(|e| e.to_string())
}

impl StateStore {
    /// Open the store of `host_id`, reading (and re-verifying) the persisted state if there is
    /// one. An expired persisted state is still loaded: a host keeps running what it has.
    pub fn open(path: &Path, host_id: &str, root: TrustRoot) -> Result<Self, StateError> {
        let disk = |err: String| StateError::Disk {
            path: path.display().to_string(),
            err,
        };
        let mut store = StateStore {
            path: path.to_path_buf(),
            host_id: host_id.to_string(),
            root,
            current: None,
        };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(store),
            Err(e) => return Err(disk(e.to_string())),
        };
        let envelope = SignedState::decode(bytes.as_slice())
            .map_err(|e| disk(format!("not a signed state: {e}")))?;
        // Expiry is judged at receipt, not at restart: verify as of the moment it was issued.
        let issued = DesiredState::decode(envelope.payload.as_slice())
            .map(|s| s.issued_unix_ms)
            .unwrap_or(0);
        let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(issued.max(0) as u64);
        match state::verify(&store.root, &envelope, host_id, None, at)
            .map_err(|e| disk(format!("refusing the persisted state: {e}")))?
        {
            Verdict::New(s) => {
                let accepted = state::accepted(&envelope, s.generation);
                store.current = Some((s, accepted));
            }
            Verdict::Same => {}
        }
        Ok(store)
    }

    /// Trust a new root from now on (after it was verified against the current one).
    pub fn set_root(&mut self, root: TrustRoot) {
        self.root = root;
    }

    pub fn host_id(&self) -> &str {
        &self.host_id
    }

    pub fn root(&self) -> &TrustRoot {
        &self.root
    }

    pub fn current(&self) -> Option<&DesiredState> {
        self.current.as_ref().map(|(s, _)| s)
    }

    pub fn generation(&self) -> u64 {
        self.current
            .as_ref()
            .map(|(_, a)| a.generation)
            .unwrap_or(0)
    }

    /// Whether the accepted state has expired (the host keeps running it, and says it is stale).
    pub fn stale(&self, now: SystemTime) -> bool {
        let now_ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        self.current
            .as_ref()
            .is_some_and(|(s, _)| s.expires_unix_ms <= now_ms)
    }

    /// Judge a state from the server; a new one is persisted before this returns it.
    pub fn accept(
        &mut self,
        envelope: &SignedState,
        now: SystemTime,
    ) -> Result<Verdict, StateError> {
        let last = self.current.as_ref().map(|(_, a)| a);
        let verdict = state::verify(&self.root, envelope, &self.host_id, last, now)?;
        if let Verdict::New(s) = &verdict {
            noco_certs::keyfile::write_secret(&self.path, &envelope.encode_to_vec()).map_err(
                |e| StateError::Disk {
                    path: self.path.display().to_string(),
                    err: e.to_string(),
                },
            )?;
            self.current = Some((s.clone(), state::accepted(envelope, s.generation)));
        }
        Ok(verdict)
    }
}

#[cfg(test)]
mod tests {
    use noco_certs::signing::StateSigner;

    use super::*;

    fn desired(host: &str, generation: u64) -> DesiredState {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        DesiredState {
            host_id: host.into(),
            generation,
            issued_unix_ms: now,
            expires_unix_ms: now + 60_000,
            stacks: vec![],
        }
    }

    #[test]
    fn an_accepted_state_survives_a_restart_and_still_guards_against_rollback() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/desired.pb");
        let signer = StateSigner::generate();
        let root = || TrustRoot::new(&[signer.public_key().to_vec()]).unwrap();
        let mut store = StateStore::open(&path, "h1", root()).unwrap();
        assert_eq!(store.generation(), 0);
        let g7 = noco_certs::state::sign(&signer, &desired("h1", 7));
        assert!(matches!(
            store.accept(&g7, SystemTime::now()),
            Ok(Verdict::New(_))
        ));

        let mut reopened = StateStore::open(&path, "h1", root()).unwrap();
        assert_eq!(reopened.generation(), 7);
        let g6 = noco_certs::state::sign(&signer, &desired("h1", 6));
        let err = reopened.accept(&g6, SystemTime::now()).unwrap_err();
        assert!(
            err.to_string()
                .contains("older than the accepted generation 7"),
            "{err}"
        );
        assert!(matches!(
            reopened.accept(&g7, SystemTime::now()),
            Ok(Verdict::Same)
        ));
        // A refused state changed nothing on disk.
        assert_eq!(
            StateStore::open(&path, "h1", root()).unwrap().generation(),
            7
        );
    }

    #[test]
    fn a_state_file_edited_on_disk_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("desired.pb");
        let signer = StateSigner::generate();
        let root = TrustRoot::new(&[signer.public_key().to_vec()]).unwrap();
        let mut store = StateStore::open(&path, "h1", root.clone()).unwrap();
        store
            .accept(
                &noco_certs::state::sign(&signer, &desired("h1", 1)),
                SystemTime::now(),
            )
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[6] ^= 1; // inside the signed payload
        std::fs::write(&path, bytes).unwrap();
        let err = StateStore::open(&path, "h1", root).unwrap_err();
        assert!(
            err.to_string().contains("refusing the persisted state"),
            "{err}"
        );
    }
}
