//! `nococtl top [--stack S] [--host H]…`: the hosts' latest metrics, or a stack's containers.
//! On a terminal the table is redrawn in place every 2 seconds ([`output::Screen`]) until
//! Ctrl-C; with `-o json`, or into a pipe or a file, it is printed once.

use std::path::Path;
use std::time::{Duration, SystemTime};

use noco_proto::duration;
use noco_proto::v1 as pb;

use crate::client;
use crate::error::{CtlError, refused};
use crate::output::{self, Format, Screen, outln};
use crate::view::top::{ContainerTopView, HostTopView};

/// How often the screen is redrawn.
const REFRESH: Duration = Duration::from_secs(2);
/// How long one Top call may take while redrawing.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

pub async fn run(
    stack: Option<String>,
    hosts: Vec<String>,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    let (_, mut ctl) = client::open(path, server).await?;
    let request = pb::TopRequest {
        hosts,
        stack: stack.clone().unwrap_or_default(),
        containers: stack.is_some(),
    };
    let only = stack.as_deref();
    let answer = ctl
        .top(request.clone())
        .await
        .map_err(|s| refused("top", s))?;
    let mut hosts = views(answer.into_inner());
    if out == Format::Json {
        output::json(&hosts);
        return Ok(());
    }
    if !output::stdout_is_terminal() {
        for line in lines(&hosts, only) {
            outln!("{line}");
        }
        return Ok(());
    }
    // Ctrl-C ends `top` (exit 0), with the cursor shown again.
    let screen = Screen::start(0);
    let mut problem: Option<String> = None;
    loop {
        let mut frame = lines(&hosts, only);
        frame.push(String::new());
        frame.push(match &problem {
            Some(p) => format!("nococtl: {p} (retrying; showing the last answer)"),
            None => format!(
                "{} — every {}; Ctrl-C to quit",
                humantime::format_rfc3339_seconds(SystemTime::now()),
                duration::format(REFRESH)
            ),
        });
        screen.draw(&frame);
        tokio::time::sleep(REFRESH).await;
        problem = match tokio::time::timeout(CALL_TIMEOUT, ctl.top(request.clone())).await {
            Ok(Ok(r)) => {
                hosts = views(r.into_inner());
                None
            }
            Ok(Err(s)) => Some(refused("top", s).to_string()),
            Err(_) => Some(format!(
                "top: no answer from the server within {}",
                duration::format(CALL_TIMEOUT)
            )),
        };
    }
}

/// The hosts by name, their containers by service and number.
fn views(r: pb::TopResponse) -> Vec<HostTopView> {
    let mut hosts: Vec<HostTopView> = r.hosts.iter().map(HostTopView::from).collect();
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    for h in &mut hosts {
        h.containers.sort_by(|a, b| {
            (&a.stack, &a.service, a.number, &a.container).cmp(&(
                &b.stack,
                &b.service,
                b.number,
                &b.container,
            ))
        });
    }
    hosts
}

/// The table: hosts, or with a stack its containers.
fn lines(hosts: &[HostTopView], stack: Option<&str>) -> Vec<String> {
    match stack {
        None if hosts.is_empty() => vec!["no hosts".to_string()],
        None => output::listed_lines(hosts),
        Some(stack) => {
            let containers: Vec<&ContainerTopView> =
                hosts.iter().flat_map(|h| &h.containers).collect();
            if containers.is_empty() {
                vec![format!("no container of stack {stack} reports metrics")]
            } else {
                output::listed_lines(&containers)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::top::tests::host_top;

    #[test]
    fn hosts_are_listed_by_name_and_a_stack_shows_its_containers() {
        let mut other = host_top();
        other.host = "db-1".into();
        other.containers[0].service = "db".into();
        let hosts = views(pb::TopResponse {
            hosts: vec![host_top(), other],
        });
        let table = lines(&hosts, None);
        assert_eq!(table.len(), 3);
        assert!(table[0].starts_with("HOST   STATUS  CPU%"), "{table:?}");
        assert!(table[1].starts_with("db-1 "), "{table:?}");
        assert!(table[2].starts_with("web-1"), "{table:?}");
        let containers = lines(&hosts, Some("shop"));
        assert!(
            containers[0].starts_with("HOST   CONTAINER"),
            "{containers:?}"
        );
        assert!(containers[1].starts_with("db-1   db-2"), "{containers:?}");
        assert!(containers[2].starts_with("web-1  api-2"), "{containers:?}");
        assert_eq!(lines(&[], None), ["no hosts"]);
        let mut empty = host_top();
        empty.containers.clear();
        assert_eq!(
            lines(&views(pb::TopResponse { hosts: vec![empty] }), Some("shop")),
            ["no container of stack shop reports metrics"]
        );
    }
}
