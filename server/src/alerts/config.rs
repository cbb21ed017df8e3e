//! The `[alerts]` section of the server's configuration file: timing (as Alertmanager's:
//! `group_wait` 30s, `group_interval` 5m, `repeat_interval` 4h), `group_by`, the settings of each
//! built-in rule (`[alerts.rules.<name>]`: `enabled`, `for`, `severity` and the rule's own
//! options) and the receivers (`[[alerts.receivers]]`). Read by [`read`], which refuses what is
//! wrong naming the key.

use std::collections::BTreeMap;
use std::time::Duration;

use super::rules::{self, Opt, RULES};
use crate::config::{ConfigError, Table};

/// How a receiver is sent its notifications.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Slack's incoming webhooks (and Mattermost, Rocket.Chat): `{"text": …}`.
    Slack,
    /// ntfy's JSON publishing: `{topic, message, title, priority, tags}`.
    Ntfy,
    /// Alertmanager's webhook payload, version 4.
    Json,
}

impl Format {
    pub const ALL: [(&'static str, Format); 3] = [
        ("slack", Format::Slack),
        ("ntfy", Format::Ntfy),
        ("json", Format::Json),
    ];

    pub fn name(self) -> &'static str {
        Format::ALL
            .iter()
            .find(|(_, f)| *f == self)
            .map_or("json", |(n, _)| n)
    }
}

/// Where notifications go.
#[derive(Debug, Clone, PartialEq)]
pub struct Receiver {
    pub name: String,
    pub url: url::Url,
    pub format: Format,
    /// The rules it gets (empty: every rule).
    pub rules: Vec<String>,
    /// Extra HTTP headers (`Authorization`); never shown.
    pub headers: BTreeMap<String, String>,
    /// Whether it is told when alerts resolve.
    pub send_resolved: bool,
    /// How long one delivery attempt may take.
    pub timeout: Duration,
}

impl Receiver {
    /// Whether alerts of `rule` go to this receiver.
    pub fn wants(&self, rule: &str) -> bool {
        self.rules.is_empty() || self.rules.iter().any(|r| r == rule)
    }

    /// The URL as it may be shown: without user, password or query.
    pub fn shown_url(&self) -> String {
        let mut u = self.url.clone();
        let _ = u.set_username("");
        let _ = u.set_password(None);
        u.set_query(None);
        u.set_fragment(None);
        u.to_string()
    }
}

/// A rule's settings: its defaults from [`RULES`], as the file tunes them.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSettings {
    pub enabled: bool,
    /// How long the condition must hold before the alert fires (`for`).
    pub for_: Duration,
    pub severity: String,
    pub threshold: Option<f64>,
    pub within: Option<Duration>,
    pub resolve_after: Option<Duration>,
}

impl RuleSettings {
    fn defaults(rule: &rules::Rule) -> Self {
        let mut s = RuleSettings {
            enabled: true,
            for_: rule.for_,
            severity: rule.severity.to_string(),
            threshold: None,
            within: None,
            resolve_after: None,
        };
        for opt in rule.options {
            match *opt {
                Opt::Threshold(v) => s.threshold = Some(v),
                Opt::Within(d) => s.within = Some(d),
                Opt::ResolveAfter(d) => s.resolve_after = Some(d),
            }
        }
        s
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// How long a new group waits before its first notification.
    pub group_wait: Duration,
    /// How long a group waits between notifications of changes.
    pub group_interval: Duration,
    /// How long before an unchanged firing group is notified again.
    pub repeat_interval: Duration,
    /// The labels alerts are grouped by (per receiver).
    pub group_by: Vec<String>,
    /// The `externalURL` of notifications (default: the server's URL).
    pub external_url: Option<String>,
    /// Every rule's settings, by name.
    pub rules: BTreeMap<&'static str, RuleSettings>,
    pub receivers: Vec<Receiver>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            group_wait: Duration::from_secs(30),
            group_interval: Duration::from_secs(300),
            repeat_interval: Duration::from_secs(4 * 3600),
            group_by: vec!["alertname".to_string()],
            external_url: None,
            rules: RULES
                .iter()
                .map(|r| (r.name, RuleSettings::defaults(r)))
                .collect(),
            receivers: Vec::new(),
        }
    }
}

impl AlertsConfig {
    pub fn receiver(&self, name: &str) -> Option<&Receiver> {
        self.receivers.iter().find(|r| r.name == name)
    }
}

const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];
const LABELS: [&str; 7] = [
    "alertname",
    "severity",
    "host",
    "stack",
    "rollout",
    "backup",
    "cert",
];
/// Notifications need a moment; a day is surely a mistake.
const MAX_TIMEOUT: Duration = Duration::from_secs(300);

/// Read `[alerts]` (an empty table when the file has none).
pub fn read(t: &Table<'_>) -> Result<AlertsConfig, ConfigError> {
    t.known(&[
        "group_wait",
        "group_interval",
        "repeat_interval",
        "group_by",
        "external_url",
        "rules",
        "receivers",
    ])?;
    let mut c = AlertsConfig::default();
    for (key, field) in [
        ("group_wait", &mut c.group_wait),
        ("group_interval", &mut c.group_interval),
        ("repeat_interval", &mut c.repeat_interval),
    ] {
        if let Some(d) = t.duration(key)? {
            if key != "group_wait" && d < Duration::from_secs(1) {
                return Err(ConfigError::new(t.key(key), "must be at least 1s"));
            }
            *field = d;
        }
    }
    if c.repeat_interval < c.group_interval {
        return Err(ConfigError::new(
            t.key("repeat_interval"),
            format!(
                "must be at least group_interval ({})",
                noco_proto::duration::format(c.group_interval)
            ),
        ));
    }
    if let Some(labels) = t.strings("group_by")? {
        for l in &labels {
            if !LABELS.contains(l) {
                let hint = noco_compose::suggest::did_you_mean(l, LABELS)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_else(|| format!(" (alerts carry {})", LABELS.join(", ")));
                return Err(ConfigError::new(
                    t.key("group_by"),
                    format!("{l:?} is not a label of noco's alerts{hint}"),
                ));
            }
        }
        c.group_by = labels.iter().map(|l| l.to_string()).collect();
    }
    if let Some(u) = t.string("external_url")? {
        let parsed = url::Url::parse(u)
            .map_err(|e| ConfigError::new(t.key("external_url"), format!("{u:?}: {e}")))?;
        c.external_url = Some(parsed.to_string());
    }
    if let Some(rules) = t.table("rules")? {
        let names: Vec<&str> = rules::names().collect();
        rules.known(&names)?;
        for name in rules.keys() {
            let Some(rule) = rules::rule(name) else {
                continue;
            };
            let Some(table) = rules.table(name)? else {
                continue;
            };
            if let Some(s) = c.rules.get_mut(rule.name) {
                read_rule(rule, &table, s)?;
            }
        }
    }
    for r in t.tables("receivers")? {
        let receiver = read_receiver(&r)?;
        if c.receiver(&receiver.name).is_some() {
            return Err(ConfigError::new(
                r.key("name"),
                format!("a receiver named {:?} is defined twice", receiver.name),
            ));
        }
        c.receivers.push(receiver);
    }
    Ok(c)
}

fn read_rule(rule: &rules::Rule, t: &Table<'_>, s: &mut RuleSettings) -> Result<(), ConfigError> {
    let mut known = vec!["enabled", "for", "severity"];
    known.extend(rule.options.iter().map(Opt::key));
    t.known(&known)?;
    if let Some(b) = t.bool("enabled")? {
        s.enabled = b;
    }
    if let Some(d) = t.duration("for")? {
        s.for_ = d;
    }
    if let Some(sev) = t.string("severity")? {
        if !SEVERITIES.contains(&sev) {
            return Err(ConfigError::new(
                t.key("severity"),
                format!("{sev:?} is not a severity: use critical, warning or info"),
            ));
        }
        s.severity = sev.to_string();
    }
    for opt in rule.options {
        match opt {
            Opt::Threshold(_) => {
                if let Some(v) = t.number("threshold")? {
                    if !(0.0..=100.0).contains(&v) {
                        return Err(ConfigError::new(
                            t.key("threshold"),
                            format!("{v} is not a percentage from 0 to 100"),
                        ));
                    }
                    s.threshold = Some(v);
                }
            }
            Opt::Within(_) => {
                if let Some(d) = t.duration("within")? {
                    s.within = Some(d);
                }
            }
            Opt::ResolveAfter(_) => {
                if let Some(d) = t.duration("resolve_after")? {
                    if d.is_zero() {
                        return Err(ConfigError::new(
                            t.key("resolve_after"),
                            "must be more than 0s",
                        ));
                    }
                    s.resolve_after = Some(d);
                }
            }
        }
    }
    Ok(())
}

fn read_receiver(t: &Table<'_>) -> Result<Receiver, ConfigError> {
    t.known(&[
        "name",
        "url",
        "format",
        "rules",
        "headers",
        "send_resolved",
        "timeout",
    ])?;
    let required = |key: &str| ConfigError::new(t.key(key), "required");
    let name = t.string("name")?.ok_or_else(|| required("name"))?;
    crate::names::check_name("receiver", name)
        .map_err(|e| ConfigError::new(t.key("name"), e.to_string()))?;
    let url_text = t.string("url")?.ok_or_else(|| required("url"))?;
    let url = url::Url::parse(url_text)
        .map_err(|e| ConfigError::new(t.key("url"), format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::new(
            t.key("url"),
            "must be an http:// or https:// URL with a host",
        ));
    }
    let format = match t.string("format")? {
        None => Format::Json,
        Some(f) => Format::ALL
            .iter()
            .find(|(n, _)| *n == f)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names = Format::ALL.map(|(n, _)| n);
                let hint = noco_compose::suggest::did_you_mean(f, names)
                    .map(|h| format!("; {h}"))
                    .unwrap_or_default();
                ConfigError::new(
                    t.key("format"),
                    format!("{f:?} is not a format: use slack, ntfy or json{hint}"),
                )
            })?,
    };
    if format == Format::Ntfy
        && url
            .path_segments()
            .and_then(|mut s| s.next_back())
            .is_none_or(str::is_empty)
    {
        return Err(ConfigError::new(
            t.key("url"),
            "an ntfy URL ends with its topic: https://ntfy.sh/TOPIC",
        ));
    }
    let mut rules_wanted = Vec::new();
    for r in t.strings("rules")?.unwrap_or_default() {
        if rules::rule(r).is_none() {
            let hint = noco_compose::suggest::did_you_mean(r, rules::names())
                .map(|h| format!("; {h}"))
                .unwrap_or_else(|| {
                    format!(
                        " (rules: {})",
                        rules::names().collect::<Vec<_>>().join(", ")
                    )
                });
            return Err(ConfigError::new(
                t.key("rules"),
                format!("no rule named {r:?}{hint}"),
            ));
        }
        rules_wanted.push(r.to_string());
    }
    let headers = t.string_map("headers")?.unwrap_or_default();
    for (k, v) in &headers {
        if http::HeaderName::from_bytes(k.as_bytes()).is_err() {
            return Err(ConfigError::new(
                format!("{}.{k}", t.key("headers")),
                "not a valid HTTP header name",
            ));
        }
        if http::HeaderValue::from_str(v).is_err() {
            return Err(ConfigError::new(
                format!("{}.{k}", t.key("headers")),
                "not a valid HTTP header value (printable ASCII)",
            ));
        }
    }
    let timeout = t.duration("timeout")?.unwrap_or(Duration::from_secs(10));
    if timeout.is_zero() || timeout > MAX_TIMEOUT {
        return Err(ConfigError::new(
            t.key("timeout"),
            "must be more than 0s and at most 5m",
        ));
    }
    Ok(Receiver {
        name: name.to_string(),
        url,
        format,
        rules: rules_wanted,
        headers,
        send_resolved: t.bool("send_resolved")?.unwrap_or(true),
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alerts(text: &str) -> Result<AlertsConfig, String> {
        crate::config::parse(text)
            .map(|c| c.alerts)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn the_example_of_the_readme_reads() {
        let c = alerts(
            r#"
[alerts]
group_wait = "30s"
group_interval = "5m"
repeat_interval = "4h"
[alerts.rules.host-offline]
for = "0s"
[alerts.rules.host-disk]
threshold = 90
[alerts.rules.host-memory]
threshold = 85.5
[alerts.rules.cert-expiry]
within = "14d"
[alerts.rules.stack-unhealthy]
enabled = true
for = "1m"
[[alerts.receivers]]
name = "ops"
url = "https://hooks.slack.com/services/T0/B0/XXX"
format = "slack"
rules = ["host-offline"]
headers = { Authorization = "Bearer secret" }
[[alerts.receivers]]
name = "phone"
url = "https://ntfy.sh/noco-alerts"
format = "ntfy"
send_resolved = false
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.group_wait, Duration::from_secs(30));
        assert_eq!(c.rules["host-memory"].threshold, Some(85.5));
        assert_eq!(
            c.rules["cert-expiry"].within,
            Some(Duration::from_secs(14 * 24 * 3600))
        );
        assert_eq!(c.receivers.len(), 2);
        assert!(c.receivers[0].wants("host-offline"));
        assert!(!c.receivers[0].wants("host-disk"));
        assert!(c.receivers[1].wants("host-disk"));
        assert!(!c.receivers[1].send_resolved);
        assert_eq!(
            c.receivers[0].shown_url(),
            "https://hooks.slack.com/services/T0/B0/XXX"
        );
    }

    #[test]
    fn defaults_are_alertmanager_s_and_every_rule_is_on() {
        let c = alerts("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.group_wait, Duration::from_secs(30));
        assert_eq!(c.group_interval, Duration::from_secs(300));
        assert_eq!(c.repeat_interval, Duration::from_secs(4 * 3600));
        assert_eq!(c.group_by, ["alertname"]);
        assert_eq!(c.rules.len(), RULES.len());
        assert!(c.rules.values().all(|r| r.enabled));
        assert_eq!(c.rules["stack-unhealthy"].for_, Duration::from_secs(60));
        assert!(c.receivers.is_empty());
    }

    #[test]
    fn a_wrong_value_is_refused_naming_its_key_and_why() {
        for (text, want) in [
            (
                "[alerts]\ngroup_wait = \"soon\"",
                "alerts.group_wait: \"soon\" is not a duration",
            ),
            (
                "[alerts]\ngroup_interval = 5.5",
                "alerts.group_interval: expected a duration (\"30s\", \"5m\", \"4h\"), found the number 5.5",
            ),
            (
                "[alerts]\nrepeat_interval = \"1m\"",
                "alerts.repeat_interval: must be at least group_interval (5m)",
            ),
            (
                "[alerts.rules.host-disk]\nthreshold = 120",
                "alerts.rules.host-disk.threshold: 120 is not a percentage from 0 to 100",
            ),
            (
                "[alerts.rules.host-disk]\nthreshold = \"90%\"",
                "alerts.rules.host-disk.threshold: expected a number, found the string \"90%\"",
            ),
            (
                "[alerts.rules.host-offline]\nseverity = \"page\"",
                "alerts.rules.host-offline.severity: \"page\" is not a severity",
            ),
            (
                "[[alerts.receivers]]\nurl = \"https://x\"",
                "alerts.receivers[0].name: required",
            ),
            (
                "[[alerts.receivers]]\nname = \"ops\"\nurl = \"ftp://x/y\"",
                "alerts.receivers[0].url: must be an http:// or https:// URL",
            ),
            (
                "[[alerts.receivers]]\nname = \"ops\"\nurl = \"https://x/\"\nformat = \"slak\"",
                "alerts.receivers[0].format: \"slak\" is not a format: use slack, ntfy or json; did you mean \"slack\"?",
            ),
            (
                "[[alerts.receivers]]\nname = \"ops\"\nurl = \"https://ntfy.sh/\"\nformat = \"ntfy\"",
                "alerts.receivers[0].url: an ntfy URL ends with its topic",
            ),
            (
                "[[alerts.receivers]]\nname = \"ops\"\nurl = \"https://x/\"\nrules = [\"host-ofline\"]",
                "alerts.receivers[0].rules: no rule named \"host-ofline\"; did you mean \"host-offline\"?",
            ),
            (
                "[[alerts.receivers]]\nname = \"ops\"\nurl = \"https://x/\"\n[[alerts.receivers]]\nname = \"ops\"\nurl = \"https://y/\"",
                "alerts.receivers[1].name: a receiver named \"ops\" is defined twice",
            ),
            (
                "[[alerts.receivers]]\nname = \"ops\"\nurl = \"https://x/\"\nheaders = { \"bad header\" = \"x\" }",
                "alerts.receivers[0].headers.bad header: not a valid HTTP header name",
            ),
            (
                "[alerts]\ngroup_by = [\"hots\"]",
                "alerts.group_by: \"hots\" is not a label of noco's alerts; did you mean \"host\"?",
            ),
        ] {
            let e = alerts(text).err().unwrap_or_default();
            assert!(e.starts_with(want), "{text}:\n{e}\nwanted: {want}");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_did_you_mean() {
        for (text, want) in [
            (
                "[alerts]\ngroup_wiat = \"1s\"",
                "alerts.group_wiat: unknown key; did you mean \"group_wait\"?",
            ),
            (
                "[alerts.rules.host-ofline]\nfor = \"1s\"",
                "alerts.rules.host-ofline: unknown key; did you mean \"host-offline\"?",
            ),
            (
                "[alerts.rules.host-disk]\nthreshhold = 80",
                "alerts.rules.host-disk.threshhold: unknown key; did you mean \"threshold\"?",
            ),
            (
                "[alerts.rules.host-offline]\nthreshold = 80",
                "alerts.rules.host-offline.threshold: unknown key (known here: enabled, for, severity)",
            ),
            (
                "[[alerts.receivers]]\nname = \"ops\"\nurl = \"https://x/\"\nformt = \"json\"",
                "alerts.receivers[0].formt: unknown key; did you mean \"format\"?",
            ),
        ] {
            let e = alerts(text).err().unwrap_or_default();
            assert_eq!(e, want, "{text}");
        }
    }
}
