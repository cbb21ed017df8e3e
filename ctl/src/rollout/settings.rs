//! A rollout's settings: `--batch` parsing, the compose file's `x-noco.rollout` defaults, how
//! flags, those defaults and the built-in ones combine into a `RolloutConfig`, and which phases
//! end a rollout with which exit code.

use std::fmt;
use std::time::Duration;

use noco_proto::v1 as pb;
use pb::RolloutPhase;
use serde::Deserialize;
use serde_saphyr::{DuplicateKeyPolicy, MergeKeyPolicy};

use crate::view::rollout::RolloutConfigView;
use noco_proto::duration;

/// Built-in defaults, used when neither a flag nor `x-noco.rollout` gives a value.
pub const DEFAULT_CANARY: u32 = 1;
pub const DEFAULT_BATCH: Batch = Batch::Percent(25);
pub const DEFAULT_MIN_HEALTHY: Duration = Duration::from_secs(10);
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_MAX_FAILURES: u32 = 0;

/// How many hosts a batch after the canary holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batch {
    Count(u32),
    /// Percent of all the rollout's hosts (rounded up, at least one host).
    Percent(u32),
}

impl fmt::Display for Batch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Batch::Count(n) => write!(f, "{n}"),
            Batch::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `2` (hosts) or `25%` (of all hosts): a count of at least 1, a percentage from 1 to 100.
pub fn parse_batch(text: &str) -> Result<Batch, String> {
    let t = text.trim();
    if let Some(number) = t.strip_suffix('%') {
        let p: u32 = number.trim().parse().map_err(|_| {
            format!("{text:?} is not a batch size: give a percentage like 25% or a count like 2")
        })?;
        if !(1..=100).contains(&p) {
            return Err(format!(
                "{text:?}: a batch percentage is from 1% to 100% (of all the rollout's hosts)"
            ));
        }
        Ok(Batch::Percent(p))
    } else {
        let n: u32 = t.parse().map_err(|_| {
            format!("{text:?} is not a batch size: give a count like 2 or a percentage like 25%")
        })?;
        if n == 0 {
            return Err(format!("{text:?}: a batch holds at least 1 host"));
        }
        Ok(Batch::Count(n))
    }
}

/// Rollout settings from one place (flags, or the compose file); `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    pub canary: Option<u32>,
    pub batch: Option<Batch>,
    pub min_healthy: Option<Duration>,
    pub deadline: Option<Duration>,
    pub max_failures: Option<u32>,
    pub auto_rollback: Option<bool>,
    pub pause_after_canary: Option<bool>,
    pub backup_first: Option<bool>,
}

impl Settings {
    /// These settings, with `fallback`'s where these say nothing.
    pub fn or(self, fallback: Settings) -> Settings {
        Settings {
            canary: self.canary.or(fallback.canary),
            batch: self.batch.or(fallback.batch),
            min_healthy: self.min_healthy.or(fallback.min_healthy),
            deadline: self.deadline.or(fallback.deadline),
            max_failures: self.max_failures.or(fallback.max_failures),
            auto_rollback: self.auto_rollback.or(fallback.auto_rollback),
            pause_after_canary: self.pause_after_canary.or(fallback.pause_after_canary),
            backup_first: self.backup_first.or(fallback.backup_first),
        }
    }

    /// The config sent to the server: these settings, the built-in defaults where they say
    /// nothing, checked.
    pub fn config(&self) -> Result<pb::RolloutConfig, String> {
        let batch = self.batch.unwrap_or(DEFAULT_BATCH);
        let min_healthy = self.min_healthy.unwrap_or(DEFAULT_MIN_HEALTHY);
        let deadline = self.deadline.unwrap_or(DEFAULT_DEADLINE);
        if deadline.is_zero() {
            return Err("the deadline must be longer than 0s".to_string());
        }
        if min_healthy >= deadline {
            return Err(format!(
                "min-healthy ({}) must be shorter than the deadline ({}): no host could stay healthy that long before its step's deadline",
                duration::format(min_healthy),
                duration::format(deadline)
            ));
        }
        let (batch_count, batch_percent) = match batch {
            Batch::Count(n) => (n, 0),
            Batch::Percent(p) => (0, p),
        };
        Ok(pb::RolloutConfig {
            canary: self.canary.unwrap_or(DEFAULT_CANARY),
            batch_count,
            batch_percent,
            min_healthy_ms: millis(min_healthy),
            deadline_ms: millis(deadline),
            max_failures: self.max_failures.unwrap_or(DEFAULT_MAX_FAILURES),
            auto_rollback: self.auto_rollback.unwrap_or(false),
            pause_after_canary: self.pause_after_canary.unwrap_or(false),
            backup_first: self.backup_first.unwrap_or(false),
        })
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `canary 1, batch 25%, min-healthy 10s, deadline 5m, max-failures 0, auto-rollback off, …`
pub fn describe(c: &RolloutConfigView) -> String {
    let batch = if c.batch_percent > 0 {
        Batch::Percent(c.batch_percent)
    } else {
        Batch::Count(c.batch_count)
    };
    let on_off = |b: bool| if b { "on" } else { "off" };
    format!(
        "canary {}, batch {batch}, min-healthy {}, deadline {}, max-failures {}, auto-rollback {}, pause-after-canary {}, backup-first {}",
        c.canary,
        duration::format(Duration::from_millis(c.min_healthy_ms)),
        duration::format(Duration::from_millis(c.deadline_ms)),
        c.max_failures,
        on_off(c.auto_rollback),
        on_off(c.pause_after_canary),
        on_off(c.backup_first)
    )
}

/// The top level of a compose file, as far as nococtl's own extension goes.
#[derive(Debug, Default, Deserialize)]
struct TopLevel {
    #[serde(rename = "x-noco", default)]
    x_noco: Option<XNoco>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct XNoco {
    #[serde(default)]
    rollout: Option<XRollout>,
    /// `x-noco.profiles`: the compose loader's (`noco_compose::load` enables them), not ours.
    #[serde(default, rename = "profiles")]
    _profiles: Option<serde::de::IgnoredAny>,
    /// `x-noco.backups`: the compose loader's too (`noco_compose::load` reads and checks them
    /// into `project.backups`).
    #[serde(default, rename = "backups")]
    _backups: Option<serde::de::IgnoredAny>,
}

/// `x-noco.rollout`, as written: durations and the batch as text, checked afterwards so that
/// errors name the key.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct XRollout {
    canary: Option<u32>,
    batch: Option<String>,
    min_healthy: Option<String>,
    deadline: Option<String>,
    max_failures: Option<u32>,
    auto_rollback: Option<bool>,
    pause_after_canary: Option<bool>,
    backup_first: Option<bool>,
}

/// The rollout defaults a compose file gives under the top-level `x-noco.rollout` mapping
/// (nothing when it has none). Unknown keys and bad values are errors naming the key.
pub fn compose_defaults(compose: &str) -> Result<Settings, String> {
    let options = serde_saphyr::options! {
        duplicate_keys: DuplicateKeyPolicy::Error,
        merge_keys: MergeKeyPolicy::Merge,
        strict_booleans: true,
        with_snippet: false,
    };
    let top: Option<TopLevel> = serde_saphyr::from_str_with_options(compose, options)
        .map_err(|e| format!("x-noco: {}", e.without_snippet()))?;
    let Some(raw) = top.and_then(|t| t.x_noco).and_then(|x| x.rollout) else {
        return Ok(Settings::default());
    };
    let duration = |key: &str, text: Option<String>| -> Result<Option<Duration>, String> {
        text.map(|t| duration::parse(&t).map_err(|e| format!("x-noco.rollout.{key}: {e}")))
            .transpose()
    };
    Ok(Settings {
        canary: raw.canary,
        batch: raw
            .batch
            .map(|b| parse_batch(&b).map_err(|e| format!("x-noco.rollout.batch: {e}")))
            .transpose()?,
        min_healthy: duration("min_healthy", raw.min_healthy)?,
        deadline: duration("deadline", raw.deadline)?,
        max_failures: raw.max_failures,
        auto_rollback: raw.auto_rollback,
        pause_after_canary: raw.pause_after_canary,
        backup_first: raw.backup_first,
    })
}

/// How a rollout in a final phase ended (`-w` exits 0 for success, 1 otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Succeeded,
    /// failed, rolled_back, rollback_failed or aborted.
    NotSucceeded,
}

/// How a phase ends the rollout; `None` while it goes on (running, paused, rolling_back, or a
/// phase this nococtl does not know, which reads as unspecified).
pub fn ending(phase: RolloutPhase) -> Option<Ending> {
    match phase {
        RolloutPhase::Succeeded => Some(Ending::Succeeded),
        RolloutPhase::Failed
        | RolloutPhase::RolledBack
        | RolloutPhase::RollbackFailed
        | RolloutPhase::Aborted => Some(Ending::NotSucceeded),
        RolloutPhase::Running
        | RolloutPhase::Paused
        | RolloutPhase::RollingBack
        | RolloutPhase::Unspecified => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_accepts_a_count_or_a_percentage() {
        assert_eq!(parse_batch("2"), Ok(Batch::Count(2)));
        assert_eq!(parse_batch("25%"), Ok(Batch::Percent(25)));
        assert_eq!(parse_batch(" 100% "), Ok(Batch::Percent(100)));
        assert_eq!(Batch::Percent(25).to_string(), "25%");
        assert_eq!(Batch::Count(3).to_string(), "3");
    }

    #[test]
    fn batch_refuses_zero_out_of_range_percentages_and_words() {
        for bad in ["0", "0%", "101%", "-1", "x", "%", "2.5", "25 %x", ""] {
            let e = parse_batch(bad).unwrap_err();
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
    }

    #[test]
    fn built_in_defaults_apply_when_nothing_is_given() {
        let c = Settings::default().config().unwrap();
        assert_eq!(
            c,
            pb::RolloutConfig {
                canary: 1,
                batch_count: 0,
                batch_percent: 25,
                min_healthy_ms: 10_000,
                deadline_ms: 300_000,
                max_failures: 0,
                auto_rollback: false,
                pause_after_canary: false,
                backup_first: false,
            }
        );
        assert_eq!(
            describe(&RolloutConfigView::from(&c)),
            "canary 1, batch 25%, min-healthy 10s, deadline 5m, max-failures 0, auto-rollback off, pause-after-canary off, backup-first off"
        );
    }

    #[test]
    fn flags_win_over_compose_defaults_which_win_over_built_in_ones() {
        let flags = Settings {
            batch: Some(Batch::Count(2)),
            auto_rollback: Some(false),
            ..Default::default()
        };
        let file = Settings {
            canary: Some(0),
            batch: Some(Batch::Percent(50)),
            min_healthy: Some(Duration::from_secs(30)),
            auto_rollback: Some(true),
            pause_after_canary: Some(true),
            ..Default::default()
        };
        let c = flags.or(file).config().unwrap();
        assert_eq!(c.canary, 0);
        assert_eq!((c.batch_count, c.batch_percent), (2, 0));
        assert_eq!(c.min_healthy_ms, 30_000);
        assert_eq!(c.deadline_ms, 300_000);
        assert!(!c.auto_rollback, "--no-auto-rollback overrides the file");
        assert!(c.pause_after_canary);
    }

    #[test]
    fn min_healthy_must_be_shorter_than_a_nonzero_deadline() {
        let s = Settings {
            min_healthy: Some(Duration::from_secs(600)),
            ..Default::default()
        };
        let e = s.config().unwrap_err();
        assert!(
            e.contains("min-healthy (10m)") && e.contains("deadline (5m)"),
            "{e}"
        );
        let zero = Settings {
            deadline: Some(Duration::ZERO),
            ..Default::default()
        };
        assert!(zero.config().unwrap_err().contains("deadline"));
        let zero_min = Settings {
            min_healthy: Some(Duration::ZERO),
            ..Default::default()
        };
        assert_eq!(zero_min.config().unwrap().min_healthy_ms, 0);
    }

    #[test]
    fn compose_defaults_read_every_x_noco_rollout_key() {
        let yaml = "services:\n  web:\n    image: nginx\nx-noco:\n  rollout:\n    canary: 2\n    batch: 25%\n    min_healthy: 30s\n    deadline: 10m\n    max_failures: 1\n    auto_rollback: true\n    pause_after_canary: false\n    backup_first: true\n";
        let s = compose_defaults(yaml).unwrap();
        assert_eq!(
            s,
            Settings {
                canary: Some(2),
                batch: Some(Batch::Percent(25)),
                min_healthy: Some(Duration::from_secs(30)),
                deadline: Some(Duration::from_secs(600)),
                max_failures: Some(1),
                auto_rollback: Some(true),
                pause_after_canary: Some(false),
                backup_first: Some(true),
            }
        );
    }

    #[test]
    fn compose_defaults_take_a_plain_number_as_a_batch_count_or_seconds() {
        let s = compose_defaults(
            "x-noco:\n  rollout:\n    batch: 3\n    min_healthy: 0\n    deadline: 300\n",
        )
        .unwrap();
        assert_eq!(s.batch, Some(Batch::Count(3)));
        assert_eq!(s.min_healthy, Some(Duration::ZERO));
        assert_eq!(s.deadline, Some(Duration::from_secs(300)));
    }

    #[test]
    fn compose_files_without_x_noco_rollout_give_no_defaults() {
        for yaml in [
            "services:\n  web:\n    image: nginx\n",
            "x-other: {a: 1}\nservices: {}\n",
            "x-noco: {}\n",
            "x-noco:\n  rollout:\n",
            "x-noco:\n  profiles: [debug]\n",
            // The compose loader's: read and checked by noco_compose::load, not here.
            "x-noco:\n  backups:\n    db: {service: db, dump: [pg_dump]}\n",
            "",
        ] {
            assert_eq!(
                compose_defaults(yaml).unwrap(),
                Settings::default(),
                "{yaml:?}"
            );
        }
    }

    #[test]
    fn unknown_x_noco_rollout_keys_are_errors_naming_them() {
        let e =
            compose_defaults("x-noco:\n  rollout:\n    canary: 1\n    batchsize: 2\n").unwrap_err();
        assert!(e.contains("batchsize"), "{e}");
        let e = compose_defaults("x-noco:\n  rollouts:\n    canary: 1\n").unwrap_err();
        assert!(e.contains("rollouts"), "{e}");
    }

    #[test]
    fn bad_x_noco_rollout_values_name_the_key() {
        let e = compose_defaults("x-noco:\n  rollout:\n    min_healthy: soon\n").unwrap_err();
        assert_eq!(
            e,
            "x-noco.rollout.min_healthy: \"soon\" is not a duration: use seconds (30) or a unit (30s, 5m, 1h)"
        );
        let e = compose_defaults("x-noco:\n  rollout:\n    deadline: 5x\n").unwrap_err();
        assert!(
            e.starts_with("x-noco.rollout.deadline: \"5x\" is not a duration"),
            "{e}"
        );
        let e = compose_defaults("x-noco:\n  rollout:\n    batch: 0%\n").unwrap_err();
        assert!(e.starts_with("x-noco.rollout.batch"), "{e}");
        let e = compose_defaults("x-noco:\n  rollout:\n    auto_rollback: yes\n").unwrap_err();
        assert!(e.contains("auto_rollback") || e.contains("bool"), "{e}");
        let e = compose_defaults("x-noco:\n  rollout:\n    backup_first: 1\n").unwrap_err();
        assert!(e.contains("backup_first") || e.contains("bool"), "{e}");
    }

    #[test]
    fn only_final_phases_end_the_watch() {
        assert_eq!(ending(RolloutPhase::Succeeded), Some(Ending::Succeeded));
        for phase in [
            RolloutPhase::Failed,
            RolloutPhase::RolledBack,
            RolloutPhase::RollbackFailed,
            RolloutPhase::Aborted,
        ] {
            assert_eq!(ending(phase), Some(Ending::NotSucceeded), "{phase}");
        }
        for phase in [
            RolloutPhase::Running,
            RolloutPhase::Paused,
            RolloutPhase::RollingBack,
            RolloutPhase::Unspecified,
        ] {
            assert_eq!(ending(phase), None, "{phase}");
        }
        // A phase from a newer server reads as unspecified: the watch goes on.
        let newer = pb::RolloutInfo {
            phase: 99,
            ..Default::default()
        };
        assert_eq!(ending(newer.phase()), None);
    }
}
