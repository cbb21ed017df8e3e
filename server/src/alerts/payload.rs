//! What a notification looks like on the wire, per receiver format (pure):
//!
//! - `json`: Alertmanager's webhook payload, version 4 (`version`, `groupKey`, `status`,
//!   `receiver`, `groupLabels`, `commonLabels`, `commonAnnotations`, `externalURL`, `alerts[]`
//!   with `status`, `labels`, `annotations`, `startsAt`, `endsAt`, `fingerprint`), POSTed to the
//!   URL;
//! - `slack`: `{"text": …}`, readable lines (Slack's incoming webhooks, and those of Mattermost
//!   and Rocket.Chat), POSTed to the URL;
//! - `ntfy`: ntfy's JSON publishing, `{topic, message, title, priority, tags}`: the topic is the
//!   URL's last path segment, and the JSON is POSTed to the URL without it (the server's root,
//!   `https://ntfy.sh/` for `https://ntfy.sh/noco-alerts`), as ntfy wants.
//!
//! Every request carries the notification's key as `Idempotency-Key`: a receiver may drop one
//! it has seen (a server that stopped between delivering and recording it sends it again).

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};

use super::config::{Format, Receiver};
use crate::store::{NotifiedAlert, OutboxRecord};

/// An HTTP request to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub url: String,
    pub body: Vec<u8>,
}

/// RFC 3339 with milliseconds, as Alertmanager writes times.
fn time(ms: i64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
        .to_string()
}

/// What every alert of the notification has alike.
fn common(
    alerts: &[NotifiedAlert],
    of: impl Fn(&NotifiedAlert) -> &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let Some(first) = alerts.first() else {
        return BTreeMap::new();
    };
    of(first)
        .iter()
        .filter(|(k, v)| alerts.iter().all(|a| of(a).get(*k) == Some(*v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The request notifying `n` to `receiver`.
pub fn render(receiver: &Receiver, external_url: &str, n: &OutboxRecord) -> Request {
    match receiver.format {
        Format::Json => Request {
            url: receiver.url.to_string(),
            body: alertmanager(n, external_url).to_string().into_bytes(),
        },
        Format::Slack => Request {
            url: receiver.url.to_string(),
            body: json!({ "text": text(n, external_url) })
                .to_string()
                .into_bytes(),
        },
        Format::Ntfy => {
            let (url, topic) = ntfy_target(&receiver.url);
            Request {
                url,
                body: ntfy(n, &topic, external_url).to_string().into_bytes(),
            }
        }
    }
}

/// Alertmanager's webhook payload, version 4.
pub fn alertmanager(n: &OutboxRecord, external_url: &str) -> Value {
    let alerts: Vec<Value> = n
        .alerts
        .iter()
        .map(|a| {
            json!({
                "status": a.status,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": time(a.starts_ms),
                "endsAt": a.ends_ms.map_or_else(|| "0001-01-01T00:00:00Z".to_string(), time),
                "generatorURL": external_url,
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status,
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common(&n.alerts, |a| &a.labels),
        "commonAnnotations": common(&n.alerts, |a| &a.annotations),
        "externalURL": external_url,
        "alerts": alerts,
    })
}

/// `[FIRING:2] host-offline`, `[RESOLVED] host-offline`.
fn title(n: &OutboxRecord) -> String {
    let firing = n.alerts.iter().filter(|a| a.status == "firing").count();
    let name = n
        .group_labels
        .values()
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    if firing > 0 {
        format!("[FIRING:{firing}] {name}")
    } else {
        format!("[RESOLVED] {name}")
    }
}

/// One line per alert: `• firing: host web-1 is offline — no live agent session since …`.
fn lines(n: &OutboxRecord) -> Vec<String> {
    n.alerts
        .iter()
        .map(|a| {
            let summary = a.annotations.get("summary").cloned().unwrap_or_else(|| {
                a.labels
                    .iter()
                    .filter(|(k, _)| *k != "alertname" && *k != "severity")
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            });
            let mut line = format!("• {}: {summary}", a.status);
            if let Some(d) = a.annotations.get("description") {
                line.push_str(" — ");
                line.push_str(d);
            }
            match a.ends_ms {
                Some(end) => line.push_str(&format!(" (resolved {})", time(end))),
                None => line.push_str(&format!(" (since {})", time(a.starts_ms))),
            }
            line
        })
        .collect()
}

/// The readable text of a notification (Slack's `text`).
pub fn text(n: &OutboxRecord, external_url: &str) -> String {
    let mut out = title(n);
    for l in lines(n) {
        out.push('\n');
        out.push_str(&l);
    }
    if !external_url.is_empty() {
        out.push_str(&format!("\nnoco server: {external_url}"));
    }
    out
}

/// Where an ntfy URL posts and its topic: `https://ntfy.sh/alerts` → (`https://ntfy.sh/`,
/// `alerts`).
pub fn ntfy_target(url: &url::Url) -> (String, String) {
    let mut base = url.clone();
    let topic = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default()
        .to_string();
    if let Ok(mut segments) = base.path_segments_mut() {
        segments.pop();
        segments.push("");
    }
    base.set_query(None);
    (base.to_string(), topic)
}

/// ntfy's JSON: priority 5 for a critical alert firing, 4 for another firing one, 3 when all
/// resolved.
pub fn ntfy(n: &OutboxRecord, topic: &str, external_url: &str) -> Value {
    let firing: Vec<&NotifiedAlert> = n.alerts.iter().filter(|a| a.status == "firing").collect();
    let critical = firing
        .iter()
        .any(|a| a.labels.get("severity").map(String::as_str) == Some("critical"));
    let (priority, tags) = match (firing.is_empty(), critical) {
        (true, _) => (3, vec!["white_check_mark", "resolved"]),
        (false, true) => (5, vec!["rotating_light", "critical"]),
        (false, false) => (4, vec!["warning", "firing"]),
    };
    let mut message = lines(n).join("\n");
    if message.is_empty() {
        message = title(n);
    }
    let mut v = json!({
        "topic": topic,
        "title": format!("noco: {}", title(n)),
        "message": message,
        "priority": priority,
        "tags": tags,
    });
    if !external_url.is_empty()
        && let Some(o) = v.as_object_mut()
    {
        o.insert("click".into(), json!(external_url));
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(host: &str, status: &str, ends_ms: Option<i64>) -> NotifiedAlert {
        NotifiedAlert {
            fingerprint: format!("fp-{host}"),
            status: status.into(),
            labels: [
                ("alertname", "host-offline"),
                ("host", host),
                ("severity", "critical"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            annotations: [("summary".to_string(), format!("host {host} is offline"))].into(),
            starts_ms: 1_700_000_000_000,
            ends_ms,
        }
    }

    fn notification(alerts: Vec<NotifiedAlert>) -> OutboxRecord {
        let status = if alerts.iter().any(|a| a.status == "firing") {
            "firing"
        } else {
            "resolved"
        };
        OutboxRecord {
            key: "k1".into(),
            receiver: "ops".into(),
            group_key: "{}:{alertname=\"host-offline\"}".into(),
            group_labels: [("alertname".to_string(), "host-offline".to_string())].into(),
            status: status.into(),
            alerts,
            created_ms: 1_700_000_001_000,
        }
    }

    fn receiver(format: Format, url: &str) -> Receiver {
        Receiver {
            name: "ops".into(),
            url: url::Url::parse(url).unwrap_or_else(|e| panic!("{e}")),
            format,
            rules: Vec::new(),
            headers: BTreeMap::new(),
            send_resolved: true,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn json_is_alertmanager_s_webhook_version_4() {
        let n = notification(vec![
            alert("web-1", "firing", None),
            alert("web-2", "resolved", Some(1_700_000_000_500)),
        ]);
        let v = alertmanager(&n, "https://noco:7443");
        assert_eq!(
            v,
            json!({
                "version": "4",
                "groupKey": "{}:{alertname=\"host-offline\"}",
                "truncatedAlerts": 0,
                "status": "firing",
                "receiver": "ops",
                "groupLabels": {"alertname": "host-offline"},
                "commonLabels": {"alertname": "host-offline", "severity": "critical"},
                "commonAnnotations": {},
                "externalURL": "https://noco:7443",
                "alerts": [
                    {
                        "status": "firing",
                        "labels": {"alertname": "host-offline", "host": "web-1", "severity": "critical"},
                        "annotations": {"summary": "host web-1 is offline"},
                        "startsAt": "2023-11-14T22:13:20.000Z",
                        "endsAt": "0001-01-01T00:00:00Z",
                        "generatorURL": "https://noco:7443",
                        "fingerprint": "fp-web-1",
                    },
                    {
                        "status": "resolved",
                        "labels": {"alertname": "host-offline", "host": "web-2", "severity": "critical"},
                        "annotations": {"summary": "host web-2 is offline"},
                        "startsAt": "2023-11-14T22:13:20.000Z",
                        "endsAt": "2023-11-14T22:13:20.500Z",
                        "generatorURL": "https://noco:7443",
                        "fingerprint": "fp-web-2",
                    },
                ],
            })
        );
        let r = render(
            &receiver(Format::Json, "http://hook:9000/alerts?x=1"),
            "https://noco:7443",
            &n,
        );
        assert_eq!(r.url, "http://hook:9000/alerts?x=1");
        assert_eq!(serde_json::from_slice::<Value>(&r.body).ok(), Some(v));
    }

    #[test]
    fn slack_gets_readable_text() {
        let n = notification(vec![alert("web-1", "firing", None)]);
        let r = render(
            &receiver(Format::Slack, "https://hooks.slack.com/services/T/B/X"),
            "",
            &n,
        );
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            v,
            json!({"text": "[FIRING:1] host-offline\n• firing: host web-1 is offline (since 2023-11-14T22:13:20.000Z)"})
        );
        let n = notification(vec![alert("web-1", "resolved", Some(1_700_000_060_000))]);
        assert_eq!(
            text(&n, "https://noco:7443"),
            "[RESOLVED] host-offline\n• resolved: host web-1 is offline (resolved 2023-11-14T22:14:20.000Z)\nnoco server: https://noco:7443"
        );
    }

    #[test]
    fn ntfy_posts_to_the_server_root_with_the_topic_from_the_url() {
        let n = notification(vec![alert("web-1", "firing", None)]);
        let r = render(
            &receiver(Format::Ntfy, "https://ntfy.sh/noco-alerts"),
            "",
            &n,
        );
        assert_eq!(r.url, "https://ntfy.sh/");
        let v: Value = serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v["topic"], "noco-alerts");
        assert_eq!(v["priority"], 5);
        assert_eq!(v["title"], "noco: [FIRING:1] host-offline");
        assert_eq!(v["tags"], json!(["rotating_light", "critical"]));
        let (url, topic) = ntfy_target(
            &url::Url::parse("http://127.0.0.1:8080/ntfy/ops").unwrap_or_else(|e| panic!("{e}")),
        );
        assert_eq!(
            (url.as_str(), topic.as_str()),
            ("http://127.0.0.1:8080/ntfy/", "ops")
        );
        let resolved = notification(vec![alert("web-1", "resolved", Some(1))]);
        assert_eq!(ntfy(&resolved, "t", "")["priority"], 3);
    }
}
