//! How the protocol's enumerations read on screen and in JSON: the value's name without its
//! enumeration's prefix, in lowercase (`APPLY_STATE_CONVERGED` → `converged`,
//! `ROLLOUT_PHASE_ROLLING_BACK` → `rolling_back`), and back. One rule for every enumeration,
//! so nothing lists the names by hand.

use crate::v1;

/// An enumeration of the protocol.
pub trait Enumeration: Sized + Copy {
    /// The prefix of its value names (`STACK_STATE_`).
    const PREFIX: &'static str;
    fn proto_name(self) -> &'static str;
    fn from_proto_name(name: &str) -> Option<Self>;

    /// The value as people and scripts read it.
    fn text(self) -> &'static str {
        let name = self.proto_name();
        let short = name.strip_prefix(Self::PREFIX).unwrap_or(name);
        // The generated names are ASCII upper snake case; lowercase each once and keep it.
        lowercase(short)
    }

    /// The value a person wrote (`converged`, `Rolling-Back`), if it is one.
    fn parse_text(text: &str) -> Option<Self> {
        let upper = text.trim().replace('-', "_").to_ascii_uppercase();
        if upper == "UNSPECIFIED" {
            return None;
        }
        Self::from_proto_name(&format!("{}{upper}", Self::PREFIX))
    }
}

/// Lowercase ASCII names, each leaked once (there are a few dozen in the protocol).
fn lowercase(s: &'static str) -> &'static str {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<&'static str, &'static str>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut map = cache.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(s)
        .or_insert_with(|| Box::leak(s.to_ascii_lowercase().into_boxed_str()))
}

macro_rules! enumeration {
    ($($t:ident = $prefix:literal),* $(,)?) => {$(
        impl Enumeration for v1::$t {
            const PREFIX: &'static str = $prefix;
            fn proto_name(self) -> &'static str {
                self.as_str_name()
            }
            fn from_proto_name(name: &str) -> Option<Self> {
                Self::from_str_name(name)
            }
        }

        impl std::fmt::Display for v1::$t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.text())
            }
        }
    )*};
}

enumeration! {
    ApplyState = "APPLY_STATE_",
    Health = "HEALTH_",
    RolloutPhase = "ROLLOUT_PHASE_",
    RolloutHostPhase = "ROLLOUT_HOST_PHASE_",
    RolloutAction = "ROLLOUT_ACTION_",
    Role = "ROLE_",
    Presence = "PRESENCE_",
    OperatorStatus = "OPERATOR_STATUS_",
    AuditOutcome = "AUDIT_OUTCOME_",
    LogStream = "LOG_STREAM_",
    BackupKind = "BACKUP_KIND_",
    BackupState = "BACKUP_STATE_",
    BackupJobKind = "BACKUP_JOB_KIND_",
    BackupJobState = "BACKUP_JOB_STATE_",
    AlertState = "ALERT_STATE_",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_read_as_their_short_lowercase_names_and_back() {
        assert_eq!(v1::ApplyState::Converged.text(), "converged");
        assert_eq!(v1::RolloutPhase::RollingBack.text(), "rolling_back");
        assert_eq!(v1::Health::None.text(), "none");
        assert_eq!(
            v1::RolloutPhase::parse_text("rolled-back"),
            Some(v1::RolloutPhase::RolledBack)
        );
        assert_eq!(v1::Role::parse_text("Admin"), Some(v1::Role::Admin));
        assert_eq!(v1::Role::parse_text("root"), None);
        assert_eq!(v1::Role::parse_text("unspecified"), None);
        assert_eq!(v1::Presence::Online.to_string(), "online");
    }
}
