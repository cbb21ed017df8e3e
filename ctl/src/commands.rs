//! What each nococtl command does.

use std::collections::BTreeMap;
use std::sync::Arc;

use noco_certs::credential::Credential;
use noco_certs::dial::{self, ServerAddr};
use noco_certs::token::Token;
use noco_certs::{PeerCert, csr, sha256_hex, tls};
use noco_proto::v1 as pb;
use serde_json::json;

use crate::client::{self, CONNECT_TIMEOUT};
use crate::error::{CtlError, refused};
use crate::output::{self, Format, ago_ms, errln, outln, rfc3339_ms};
use crate::{Cli, Command, HostCmd, OperatorCmd, TokenCmd, config, rollout, stack, status};

pub async fn run(cli: Cli) -> Result<(), CtlError> {
    let path = config::resolve(cli.config.as_deref())?;
    if let Command::Login { token, force } = &cli.command {
        return login(&path, cli.server.as_deref(), token, *force, cli.output).await;
    }
    let out = cli.output;
    let server = cli.server.as_deref();
    match cli.command {
        // These read and check local files before they connect.
        Command::Stack(cmd) => return stack::run(cmd, &path, server, out).await,
        Command::Status {
            stack,
            watch,
            timeout,
        } => return status::run(stack, watch, timeout, &path, server, out).await,
        Command::Rollout(cmd) => return rollout::run(cmd, &path, server, out).await,
        _ => {}
    }
    let (cred, mut ctl) = client::open(&path, server).await?;
    match cli.command {
        Command::Login { .. }
        | Command::Stack(_)
        | Command::Status { .. }
        | Command::Rollout(_) => {
            unreachable!("handled above")
        }
        Command::Whoami => {
            let r = ctl
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(|s| refused("whoami", s))?
                .into_inner();
            match out {
                Format::Json => output::json(&json!({
                    "name": r.name, "id": r.operator_id, "role": r.role, "server": cred.server,
                    "cert_not_after": rfc3339_ms(r.cert_not_after_unix_ms), "server_version": r.server_version,
                })),
                Format::Table => outln!(
                    "{} ({}) on {} — certificate valid until {}, server {}",
                    r.name,
                    r.role,
                    cred.server,
                    rfc3339_ms(r.cert_not_after_unix_ms),
                    r.server_version
                ),
            }
        }
        Command::Token(TokenCmd::Create {
            labels,
            ttl,
            description,
        }) => {
            let labels = parse_labels(&labels)?;
            let r = ctl
                .create_token(pb::CreateTokenRequest {
                    labels: labels.into_iter().collect(),
                    ttl_seconds: ttl.as_secs().max(1),
                    description,
                })
                .await
                .map_err(|s| refused("create token", s))?
                .into_inner();
            match out {
                Format::Json => output::json(
                    &json!({"token": r.token, "id": r.token_id, "expires": rfc3339_ms(r.expires_unix_ms)}),
                ),
                Format::Table => {
                    outln!("{}", r.token);
                    errln!(
                        "single-use, expires {}. On the host: noco-agent enroll --server {} --token <token>",
                        rfc3339_ms(r.expires_unix_ms),
                        cred.server
                    );
                }
            }
        }
        Command::Host(HostCmd::Ls) => {
            let hosts = ctl
                .list_hosts(pb::ListHostsRequest {})
                .await
                .map_err(|s| refused("list hosts", s))?
                .into_inner()
                .hosts;
            match out {
                Format::Json => {
                    output::json(&json!(hosts.iter().map(host_json).collect::<Vec<_>>()))
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = hosts
                        .iter()
                        .map(|h| {
                            let f = h.facts.clone().unwrap_or_default();
                            vec![
                                h.name.clone(),
                                h.id.clone(),
                                labels_text(&h.labels),
                                h.status.clone(),
                                if h.status == "online" {
                                    "now".into()
                                } else {
                                    ago_ms(h.last_seen_unix_ms)
                                },
                                f.agent_version,
                                f.docker_version,
                            ]
                        })
                        .collect();
                    output::table(
                        &[
                            "NAME",
                            "ID",
                            "LABELS",
                            "STATUS",
                            "LAST-SEEN",
                            "AGENT",
                            "DOCKER",
                        ],
                        &rows,
                    );
                }
            }
        }
        Command::Host(HostCmd::Label { host, changes }) => {
            let (set, remove) = parse_label_changes(&changes)?;
            let h = ctl
                .label_host(pb::LabelHostRequest {
                    host,
                    set: set.into_iter().collect(),
                    remove,
                })
                .await
                .map_err(|s| refused("label host", s))?
                .into_inner();
            match out {
                Format::Json => output::json(&host_json(&h)),
                Format::Table => outln!("{}: {}", h.name, labels_text(&h.labels)),
            }
        }
        Command::Host(HostCmd::Revoke { host }) => {
            let h = ctl
                .revoke_host(pb::RevokeHostRequest { host })
                .await
                .map_err(|s| refused("revoke host", s))?
                .into_inner();
            match out {
                Format::Json => output::json(&host_json(&h)),
                Format::Table => outln!(
                    "revoked host {} ({}): its session is cut and it can no longer connect",
                    h.name,
                    h.id
                ),
            }
        }
        Command::Operator(OperatorCmd::Add { name, role, ttl }) => {
            let r = ctl
                .add_operator(pb::AddOperatorRequest {
                    name,
                    role,
                    ttl_seconds: ttl.as_secs().max(1),
                    reissue: false,
                })
                .await
                .map_err(|s| refused("add operator", s))?
                .into_inner();
            print_login_token(&r, &cred, out);
        }
        Command::Operator(OperatorCmd::Token { name, ttl }) => {
            let r = ctl
                .add_operator(pb::AddOperatorRequest {
                    name,
                    role: String::new(),
                    ttl_seconds: ttl.as_secs().max(1),
                    reissue: true,
                })
                .await
                .map_err(|s| refused("new login token", s))?
                .into_inner();
            print_login_token(&r, &cred, out);
        }
        Command::Operator(OperatorCmd::Ls) => {
            let ops = ctl
                .list_operators(pb::ListOperatorsRequest {})
                .await
                .map_err(|s| refused("list operators", s))?
                .into_inner()
                .operators;
            match out {
                Format::Json => {
                    output::json(&json!(ops.iter().map(operator_json).collect::<Vec<_>>()))
                }
                Format::Table => {
                    let rows: Vec<Vec<String>> = ops
                        .iter()
                        .map(|o| {
                            vec![
                                o.name.clone(),
                                o.id.clone(),
                                o.role.clone(),
                                o.status.clone(),
                                rfc3339_ms(o.created_unix_ms),
                            ]
                        })
                        .collect();
                    output::table(&["NAME", "ID", "ROLE", "STATUS", "CREATED"], &rows);
                }
            }
        }
        Command::Operator(OperatorCmd::Revoke { name }) => {
            let o = ctl
                .revoke_operator(pb::RevokeOperatorRequest { name })
                .await
                .map_err(|s| refused("revoke operator", s))?
                .into_inner();
            match out {
                Format::Json => output::json(&operator_json(&o)),
                Format::Table => outln!("revoked operator {} ({})", o.name, o.id),
            }
        }
        Command::SigningKey(crate::SigningKeyCmd::Rotate) => {
            let r = ctl
                .rotate_signing_key(pb::RotateSigningKeyRequest {})
                .await
                .map_err(|s| refused("rotate the signing key", s))?
                .into_inner();
            match out {
                Format::Json => {
                    output::json(&json!({"key_id": r.key_id, "trusted_key_ids": r.trusted_key_ids}))
                }
                Format::Table => outln!(
                    "signing with key {} now; agents trust {} (they reconnect once to take it)",
                    r.key_id,
                    r.trusted_key_ids.join(", ")
                ),
            }
        }
        Command::Audit { limit } => {
            let records = ctl
                .list_audit(pb::ListAuditRequest { limit })
                .await
                .map_err(|s| refused("read audit log", s))?
                .into_inner()
                .records;
            match out {
                Format::Json => output::json(&json!(records
                    .iter()
                    .map(|r| json!({"time": rfc3339_ms(r.time_unix_ms), "time_unix_ms": r.time_unix_ms, "caller": r.caller, "action": r.action, "target": r.target, "result": r.result}))
                    .collect::<Vec<_>>())),
                Format::Table => {
                    let rows: Vec<Vec<String>> = records
                        .iter()
                        .map(|r| vec![rfc3339_ms(r.time_unix_ms), r.caller.clone(), r.action.clone(), r.target.clone(), r.result.clone()])
                        .collect();
                    output::table(&["TIME", "CALLER", "ACTION", "TARGET", "RESULT"], &rows);
                }
            }
        }
    }
    Ok(())
}

async fn login(
    path: &std::path::Path,
    server: Option<&str>,
    token_text: &str,
    force: bool,
    out: Format,
) -> Result<(), CtlError> {
    let server = server.ok_or_else(|| {
        CtlError::Local("login needs --server https://host:port (or NOCO_SERVER)".into())
    })?;
    if path.exists() && !force {
        return Err(CtlError::Local(format!(
            "{} already exists: pass --force to replace it, or --config for another file",
            path.display()
        )));
    }
    let addr = ServerAddr::parse(server).map_err(CtlError::Local)?;
    let token: Token = token_text.parse().map_err(CtlError::local)?;
    let request = csr::generate("operator").map_err(CtlError::local)?;
    let config =
        Arc::new(tls::pinned_client_config(&token.ca_fingerprint).map_err(CtlError::local)?);
    let channel = dial::connect(&addr, move || config.clone(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| {
            CtlError::Unreachable(format!(
                "cannot reach the noco server at {}: {}",
                addr.url(),
                noco_certs::dial::describe(&e)
            ))
        })?;
    let r = pb::enrollment_client::EnrollmentClient::new(channel)
        .login(pb::LoginRequest {
            token: token_text.trim().to_string(),
            csr_pem: request.csr_pem,
        })
        .await
        .map_err(|s| refused("login", s))?
        .into_inner();
    let ca_der = tls::first_cert_der(&r.ca_pem).map_err(CtlError::local)?;
    if sha256_hex(&ca_der) != token.ca_fingerprint {
        return Err(CtlError::Refused(
            "login: the server sent a CA that does not match the token's pin".into(),
        ));
    }
    PeerCert::from_pem(&r.cert_pem).map_err(CtlError::local)?;
    let cred = Credential {
        server: addr.url(),
        name: r.name.clone(),
        id: r.operator_id.clone(),
        role: r.role.clone(),
        ca_pem: r.ca_pem,
        cert_pem: r.cert_pem,
        key_pem: request.key_pem,
    };
    cred.save(path).map_err(CtlError::local)?;
    match out {
        Format::Json => output::json(
            &json!({"name": r.name, "id": r.operator_id, "role": r.role, "config": path.display().to_string()}),
        ),
        Format::Table => outln!(
            "logged in as {} ({}); credential written to {}",
            r.name,
            r.role,
            path.display()
        ),
    }
    Ok(())
}

fn print_login_token(r: &pb::AddOperatorResponse, cred: &Credential, out: Format) {
    let op = r.operator.clone().unwrap_or_default();
    match out {
        Format::Json => output::json(&json!({
            "operator": operator_json(&op), "login_token": r.login_token, "expires": rfc3339_ms(r.expires_unix_ms),
        })),
        Format::Table => {
            outln!("{}", r.login_token);
            errln!(
                "one-time login token for {} ({}), expires {}. They run:\n  nococtl login --server {} --token <token>",
                op.name,
                op.role,
                rfc3339_ms(r.expires_unix_ms),
                cred.server
            );
        }
    }
}

fn labels_text(labels: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<_, _> = labels.iter().collect();
    let text: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if text.is_empty() {
        "-".into()
    } else {
        text.join(",")
    }
}

fn host_json(h: &pb::Host) -> serde_json::Value {
    let f = h.facts.clone().unwrap_or_default();
    json!({
        "name": h.name, "id": h.id, "labels": h.labels.iter().collect::<BTreeMap<_, _>>(), "status": h.status,
        "last_seen": rfc3339_ms(h.last_seen_unix_ms), "last_seen_unix_ms": h.last_seen_unix_ms,
        "connected_since_unix_ms": h.connected_since_unix_ms, "enrolled_unix_ms": h.enrolled_unix_ms,
        "cert_not_after_unix_ms": h.cert_not_after_unix_ms,
        "facts": {
            "hostname": f.hostname, "os": f.os, "kernel": f.kernel, "arch": f.arch,
            "docker_version": f.docker_version, "agent_version": f.agent_version,
        },
    })
}

fn operator_json(o: &pb::Operator) -> serde_json::Value {
    json!({"name": o.name, "id": o.id, "role": o.role, "status": o.status, "created": rfc3339_ms(o.created_unix_ms)})
}

/// `k=v,k=v` into a map; an empty string is no labels.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, CtlError> {
    let mut labels = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| CtlError::Local(format!("label {part:?} is not key=value")))?;
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(labels)
}

/// `k=v` sets, `k-` removes.
fn parse_label_changes(
    changes: &[String],
) -> Result<(BTreeMap<String, String>, Vec<String>), CtlError> {
    let mut set = BTreeMap::new();
    let mut remove = Vec::new();
    for c in changes {
        if let Some((k, v)) = c.split_once('=') {
            set.insert(k.to_string(), v.to_string());
        } else if let Some(k) = c.strip_suffix('-') {
            remove.push(k.to_string());
        } else {
            return Err(CtlError::Local(format!(
                "{c:?} is neither key=value (set) nor key- (remove)"
            )));
        }
    }
    Ok((set, remove))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_arguments_parse_sets_and_removals() {
        let (set, remove) = parse_label_changes(&["tier=edge".into(), "zone-".into()]).unwrap();
        assert_eq!(set.get("tier").map(String::as_str), Some("edge"));
        assert_eq!(remove, ["zone"]);
        assert!(parse_label_changes(&["bare".into()]).is_err());
        let labels = parse_labels("role=web, env=prod").unwrap();
        assert_eq!(labels.len(), 2);
        assert!(parse_labels("").unwrap().is_empty());
        assert!(parse_labels("oops").is_err());
    }
}
