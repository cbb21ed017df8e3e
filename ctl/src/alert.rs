//! `nococtl alert …`: the alert rules and their state, silences, and test notifications. Rules
//! and receivers live in the server's configuration file (`[alerts]`); an unknown rule,
//! receiver, host or stack is refused by the server with the nearest name.

use std::path::Path;

use noco_proto::v1 as pb;

use crate::cli::AlertCmd;
use crate::client;
use crate::error::{CtlError, refused};
use crate::output::{self, Format, errln, outln};
use crate::view::alert::{AlertView, SilenceView, TestAlertView};

pub async fn run(
    cmd: AlertCmd,
    path: &Path,
    server: Option<&str>,
    out: Format,
) -> Result<(), CtlError> {
    if let AlertCmd::Silence { duration, .. } = &cmd
        && duration.is_zero()
    {
        return Err(CtlError::Local(
            "--for 0 silences nothing: give how long (2h, 7d)".into(),
        ));
    }
    let (_, mut ctl) = client::open(path, server).await?;
    match cmd {
        AlertCmd::Ls => {
            let r = ctl
                .list_alerts(pb::ListAlertsRequest {})
                .await
                .map_err(|s| refused("list alerts", s))?
                .into_inner();
            output::list(out, &AlertView::rows(&r));
        }
        AlertCmd::Test { receiver } => {
            let r = ctl
                .test_alert(pb::TestAlertRequest { receiver })
                .await
                .map_err(|s| refused("test alert", s))?
                .into_inner();
            let v = TestAlertView::from(&r);
            match out {
                Format::Json => output::json(&v),
                Format::Table => outln!("{}", v.line()),
            }
        }
        AlertCmd::Silence {
            rule,
            host,
            stack,
            duration,
            comment,
        } => {
            let s = ctl
                .silence_alert(pb::SilenceAlertRequest {
                    rule,
                    host: host.unwrap_or_default(),
                    stack: stack.unwrap_or_default(),
                    duration_seconds: duration.as_secs().max(1),
                    comment: comment.unwrap_or_default(),
                })
                .await
                .map_err(|s| refused("silence alert", s))?
                .into_inner();
            let v = SilenceView::from(&s);
            match out {
                Format::Json => output::json(&v),
                Format::Table => {
                    outln!("{}", v.id);
                    errln!(
                        "silenced {} until {} (`nococtl alert unsilence {}` ends it sooner)",
                        v.what(),
                        v.ends,
                        v.id
                    );
                }
            }
        }
        AlertCmd::Unsilence { id } => {
            let s = ctl
                .remove_silence(pb::RemoveSilenceRequest { id })
                .await
                .map_err(|s| refused("unsilence", s))?
                .into_inner();
            let v = SilenceView::from(&s);
            match out {
                Format::Json => output::json(&v),
                Format::Table => outln!("ended silence {} of {}", v.id, v.what()),
            }
        }
        AlertCmd::Silences => {
            let r = ctl
                .list_silences(pb::ListSilencesRequest {})
                .await
                .map_err(|s| refused("list silences", s))?
                .into_inner();
            let views: Vec<SilenceView> = r.silences.iter().map(SilenceView::from).collect();
            output::list(out, &views);
        }
    }
    Ok(())
}
