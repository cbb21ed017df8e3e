//! `nococtl host show HOST [--history]`: one host in full — facts, labels, its stacks as it
//! reports them, its latest metrics and, with `--history`, the metrics history the server keeps.

use std::time::Duration;

use noco_proto::duration;
use noco_proto::v1 as pb;
use noco_proto::v1::control_client::ControlClient;
use tonic::transport::Channel;

use crate::error::{CtlError, refused};
use crate::output::{self, Format, ago_ms, human_rate, outln, percent};
use crate::view::host::HostDetailView;

pub async fn show(
    ctl: &mut ControlClient<Channel>,
    host: String,
    history: bool,
    out: Format,
) -> Result<(), CtlError> {
    let r = ctl
        .get_host(pb::GetHostRequest {
            host: host.clone(),
            history,
        })
        .await
        .map_err(|s| refused(&format!("show host {host}"), s))?
        .into_inner();
    let view = HostDetailView::from(&r);
    match out {
        Format::Json => output::json(&view),
        Format::Table => {
            for line in lines(&view, history) {
                outln!("{line}");
            }
        }
    }
    Ok(())
}

/// What `host show` prints.
pub fn lines(v: &HostDetailView, history: bool) -> Vec<String> {
    let h = &v.host;
    let f = &h.facts;
    let mut lines = vec![
        format!("host:        {} ({})", h.name, h.id),
        format!(
            "status:      {}{}",
            h.status,
            if h.status == pb::Presence::Online {
                format!(" since {}", h.connected_since)
            } else {
                format!(", last seen {}", ago_ms(h.last_seen_unix_ms))
            }
        ),
        format!("labels:      {}", h.labels_text()),
        format!(
            "facts:       {} {} {} {}, docker {}, agent {}",
            output::or_dash(&f.hostname),
            output::or_dash(&f.os),
            output::or_dash(&f.kernel),
            output::or_dash(&f.arch),
            output::or_dash(&f.docker_version),
            output::or_dash(&f.agent_version)
        ),
        format!("enrolled:    {}", h.enrolled),
        format!("certificate: valid until {}", h.cert_not_after),
        String::new(),
        "stacks:".to_string(),
    ];
    if v.stacks.is_empty() {
        lines.push("  -".to_string());
    } else {
        lines.extend(output::listed_lines(&v.stacks));
    }
    lines.push(String::new());
    match v
        .latest
        .as_ref()
        .and_then(|t| Some((t, t.metrics.as_ref()?)))
    {
        None => lines.push("metrics:     none received from this host yet".to_string()),
        Some((t, m)) => {
            lines.push(format!(
                "metrics:     sampled {} ({})",
                t.sampled,
                ago_ms(t.sampled_unix_ms)
            ));
            lines.push(format!(
                "cpu:         {} of {} CPUs",
                percent(m.cpu_percent),
                m.cpus
            ));
            lines.push(format!("memory:      {}", m.memory_text()));
            lines.push(format!("load:        {}", m.load_text()));
            lines.push(format!(
                "network:     rx {}, tx {}",
                human_rate(t.net_rx_rate),
                human_rate(t.net_tx_rate)
            ));
            lines.push(format!(
                "containers:  {} running of {}",
                m.containers_running, m.containers_total
            ));
            lines.push(format!(
                "uptime:      {}",
                duration::format(Duration::from_secs(m.uptime_secs))
            ));
            lines.push("disks:".to_string());
            if m.disks.is_empty() {
                lines.push("  -".to_string());
            } else {
                lines.extend(output::listed_lines(&m.disks));
            }
        }
    }
    if history {
        lines.push(String::new());
        lines.push("history:".to_string());
        if v.history.is_empty() {
            lines.push("  - (the server has no samples of this host)".to_string());
        } else {
            lines.extend(output::listed_lines(&v.history));
        }
        if !v.container_history.is_empty() {
            lines.push(String::new());
            lines.push("containers' history:".to_string());
            lines.extend(output::listed_lines(&v.container_history));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::top::tests::host_top;

    fn response() -> pb::GetHostResponse {
        pb::GetHostResponse {
            host: Some(pb::Host {
                id: "h1".into(),
                name: "web-1".into(),
                status: pb::Presence::Online.into(),
                connected_since_unix_ms: 1_700_000_000_000,
                ..Default::default()
            }),
            stacks: Vec::new(),
            latest: Some(host_top()),
            history: vec![pb::HostMetricsPoint {
                time_unix_ms: 1_700_000_000_000,
                cpu_percent: 50.0,
                memory_used_bytes: 1024,
                load1: 1.0,
            }],
            container_history: vec![pb::ContainerHistory {
                container: "shop-web-1".into(),
                points: vec![pb::ContainerMetricsPoint {
                    time_unix_ms: 1_700_000_000_000,
                    cpu_percent: 12.5,
                    memory_bytes: 64 * 1024 * 1024,
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn host_show_prints_facts_stacks_metrics_and_on_request_the_history() {
        let v = HostDetailView::from(&response());
        let text = lines(&v, false).join("\n");
        assert!(text.contains("host:        web-1 (h1)"), "{text}");
        assert!(
            text.contains("status:      online since 2023-11-14T22:13:20Z"),
            "{text}"
        );
        assert!(text.contains("stacks:\n  -"), "{text}");
        assert!(text.contains("cpu:         12.3% of 4 CPUs"), "{text}");
        assert!(text.contains("memory:      1.2 GiB / 7.7 GiB"), "{text}");
        assert!(text.contains("MOUNT   USED  SIZE   USE%"), "{text}");
        assert!(!text.contains("history:"), "{text}");
        let text = lines(&v, true).join("\n");
        assert!(text.contains("history:\nTIME"), "{text}");
        assert!(text.contains("50.0%  1.0 KiB  1.00"), "{text}");

        let mut bare = response();
        bare.latest = None;
        let text = lines(&HostDetailView::from(&bare), false).join("\n");
        assert!(text.contains("metrics:     none received"), "{text}");
    }
}
