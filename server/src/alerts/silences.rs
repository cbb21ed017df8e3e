//! Silences (pure): a rule's alerts, of one host and/or one stack, send nothing from when the
//! silence starts until it ends. An ended silence stops applying at once and is removed
//! [`PRUNE_AFTER`] later (until then `alert silences` shows it ended).

use std::collections::BTreeMap;

use crate::store::{AlertRecord, SilenceRecord};

/// How long an ended silence is kept before it is removed.
pub const PRUNE_AFTER_MS: i64 = 3600 * 1000;
/// The longest silence.
pub const MAX_MS: i64 = 366 * 24 * 3600 * 1000;

/// Whether the silence applies at `now_ms`.
pub fn active(s: &SilenceRecord, now_ms: i64) -> bool {
    s.starts_ms <= now_ms && now_ms < s.ends_ms
}

/// Whether the silence applies to an alert with these labels at `now_ms`.
pub fn matches(s: &SilenceRecord, labels: &BTreeMap<String, String>, now_ms: i64) -> bool {
    active(s, now_ms)
        && labels.get("alertname") == Some(&s.rule)
        && (s.host.is_empty() || labels.get("host") == Some(&s.host))
        && (s.stack.is_empty() || labels.get("stack") == Some(&s.stack))
}

/// The silence that holds back an alert now, if one does (the one that ends last).
pub fn silencing<'a>(
    silences: impl IntoIterator<Item = &'a SilenceRecord>,
    alert: &AlertRecord,
    now_ms: i64,
) -> Option<&'a SilenceRecord> {
    silences
        .into_iter()
        .filter(|s| matches(s, &alert.labels, now_ms))
        .max_by_key(|s| s.ends_ms)
}

/// Whether an ended silence is due for removal.
pub fn prunable(s: &SilenceRecord, now_ms: i64) -> bool {
    now_ms >= s.ends_ms + PRUNE_AFTER_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn silence(host: &str, stack: &str) -> SilenceRecord {
        SilenceRecord {
            id: "s1".into(),
            rule: "stack-failed".into(),
            host: host.into(),
            stack: stack.into(),
            starts_ms: 100,
            ends_ms: 200,
            comment: String::new(),
            created_by: "operator alice (deployer)".into(),
        }
    }

    fn labels(rule: &str, host: &str, stack: &str) -> BTreeMap<String, String> {
        [("alertname", rule), ("host", host), ("stack", stack)]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_silence_matches_its_rule_and_the_labels_it_names_while_it_lasts() {
        let any = silence("", "");
        let web1 = silence("web-1", "");
        let shop_on_web1 = silence("web-1", "shop");
        let l = labels("stack-failed", "web-1", "shop");
        for s in [&any, &web1, &shop_on_web1] {
            assert!(matches(s, &l, 150), "{s:?}");
            assert!(!matches(s, &l, 99), "not yet: {s:?}");
            assert!(!matches(s, &l, 200), "ended: {s:?}");
            assert!(!matches(
                s,
                &labels("stack-unhealthy", "web-1", "shop"),
                150
            ));
        }
        assert!(!matches(
            &web1,
            &labels("stack-failed", "web-2", "shop"),
            150
        ));
        assert!(!matches(
            &shop_on_web1,
            &labels("stack-failed", "web-1", "blog"),
            150
        ));
        assert!(matches(&any, &labels("stack-failed", "web-2", "blog"), 150));
    }

    #[test]
    fn an_ended_silence_is_removed_an_hour_later() {
        let s = silence("", "");
        assert!(!prunable(&s, 200));
        assert!(prunable(&s, 200 + PRUNE_AFTER_MS));
    }
}
