//! What each nococtl command does.

use std::collections::BTreeMap;
use std::sync::Arc;

use noco_certs::credential::Credential;
use noco_certs::dial::{self, ServerAddr};
use noco_certs::token::Token;
use noco_certs::{PeerCert, csr, sha256_hex, tls};
use noco_proto::Enumeration;
use noco_proto::v1 as pb;

use crate::cli::{BackupCmd, Cli, Command, HostCmd, OperatorCmd, SigningKeyCmd, TokenCmd};
use crate::client::{self, CONNECT_TIMEOUT};
use crate::error::{CtlError, refused};
use crate::output::{self, Format, errln, outln};
use crate::view::audit::AuditView;
use crate::view::host::{HostView, JoinTokenView};
use crate::view::operator::{LoginTokenView, LoginView, OperatorView, WhoAmIView};
use crate::view::signing::SigningKeyView;
use crate::{alert, backup, config, host, logs, rollout, stack, status, top};

pub async fn run(cli: Cli) -> Result<(), CtlError> {
    // `backup download` reads -o as the file it writes; every other command as the format.
    let out = match &cli.command {
        Command::Backup(BackupCmd::Download { .. }) => Format::Table,
        _ => cli.format()?,
    };
    let path = config::resolve(cli.config.as_deref())?;
    if let Command::Login { token, force } = &cli.command {
        return login(&path, cli.server.as_deref(), token, *force, out).await;
    }
    let server = cli.server.as_deref();
    match cli.command {
        // These check their arguments (and local files) before they connect.
        Command::Backup(cmd) => return backup::run(cmd, cli.output, &path, server, out).await,
        // These read and check local files before they connect.
        Command::Stack(cmd) => return stack::run(cmd, &path, server, out).await,
        Command::Status {
            stack,
            watch,
            timeout,
        } => return status::run(stack, watch, timeout, &path, server, out).await,
        Command::Rollout(cmd) => return rollout::run(cmd, &path, server, out).await,
        // These check their arguments before they connect.
        Command::Logs(args) => return logs::run(args, &path, server, out).await,
        Command::Top { stack, hosts } => return top::run(stack, hosts, &path, server, out).await,
        Command::Alert(cmd) => return alert::run(cmd, &path, server, out).await,
        _ => {}
    }
    let (cred, mut ctl) = client::open(&path, server).await?;
    match cli.command {
        Command::Login { .. }
        | Command::Backup(_)
        | Command::Stack(_)
        | Command::Status { .. }
        | Command::Rollout(_)
        | Command::Logs(_)
        | Command::Top { .. }
        | Command::Alert(_) => {
            unreachable!("handled above")
        }
        Command::Whoami => {
            let r = ctl
                .who_am_i(pb::WhoAmIRequest {})
                .await
                .map_err(|s| refused("whoami", s))?
                .into_inner();
            let me = WhoAmIView::new(&r, &cred.server);
            match out {
                Format::Json => output::json(&me),
                Format::Table => outln!("{}", me.line()),
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
            let token = JoinTokenView::from(&r);
            match out {
                Format::Json => output::json(&token),
                Format::Table => {
                    outln!("{}", token.token);
                    errln!(
                        "single-use, expires {}. On the host: noco-agent enroll --server {} --token <token>",
                        token.expires,
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
            let hosts: Vec<HostView> = hosts.iter().map(HostView::from).collect();
            output::list(out, &hosts);
        }
        Command::Host(HostCmd::Show {
            host: name,
            history,
        }) => {
            host::show(&mut ctl, name, history, out).await?;
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
            let h = HostView::from(&h);
            match out {
                Format::Json => output::json(&h),
                Format::Table => outln!("{}: {}", h.name, h.labels_text()),
            }
        }
        Command::Host(HostCmd::Revoke { host }) => {
            let h = ctl
                .revoke_host(pb::RevokeHostRequest { host })
                .await
                .map_err(|s| refused("revoke host", s))?
                .into_inner();
            let h = HostView::from(&h);
            match out {
                Format::Json => output::json(&h),
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
                    role: role.into(),
                    ttl_seconds: ttl.as_secs().max(1),
                    reissue: false,
                })
                .await
                .map_err(|s| refused("add operator", s))?
                .into_inner();
            print_login_token(&LoginTokenView::from(&r), &cred, out);
        }
        Command::Operator(OperatorCmd::Token { name, ttl }) => {
            let r = ctl
                .add_operator(pb::AddOperatorRequest {
                    name,
                    role: pb::Role::Unspecified.into(),
                    ttl_seconds: ttl.as_secs().max(1),
                    reissue: true,
                })
                .await
                .map_err(|s| refused("new login token", s))?
                .into_inner();
            print_login_token(&LoginTokenView::from(&r), &cred, out);
        }
        Command::Operator(OperatorCmd::Ls) => {
            let ops = ctl
                .list_operators(pb::ListOperatorsRequest {})
                .await
                .map_err(|s| refused("list operators", s))?
                .into_inner()
                .operators;
            let ops: Vec<OperatorView> = ops.iter().map(OperatorView::from).collect();
            output::list(out, &ops);
        }
        Command::Operator(OperatorCmd::Revoke { name }) => {
            let o = ctl
                .revoke_operator(pb::RevokeOperatorRequest { name })
                .await
                .map_err(|s| refused("revoke operator", s))?
                .into_inner();
            let o = OperatorView::from(&o);
            match out {
                Format::Json => output::json(&o),
                Format::Table => outln!("revoked operator {} ({})", o.name, o.id),
            }
        }
        Command::SigningKey(SigningKeyCmd::Rotate) => {
            let r = ctl
                .rotate_signing_key(pb::RotateSigningKeyRequest {})
                .await
                .map_err(|s| refused("rotate the signing key", s))?
                .into_inner();
            let key = SigningKeyView::from(&r);
            match out {
                Format::Json => output::json(&key),
                Format::Table => outln!("{}", key.line()),
            }
        }
        Command::Audit {
            limit,
            since,
            action,
            caller,
        } => {
            let since_unix_ms = since.map_or(0, |d| {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                now.saturating_sub(d).as_millis() as i64
            });
            let records = ctl
                .list_audit(pb::ListAuditRequest {
                    limit,
                    since_unix_ms,
                    action: action.unwrap_or_default(),
                    caller: caller.unwrap_or_default(),
                })
                .await
                .map_err(|s| refused("read audit log", s))?
                .into_inner()
                .records;
            let records: Vec<AuditView> = records.iter().map(AuditView::from).collect();
            output::list(out, &records);
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
    let login = LoginView::new(&r, path);
    let cred = Credential {
        server: addr.url(),
        name: r.name,
        id: r.operator_id,
        // As `noco_certs` writes it on renewal; none (as before enums) if the server sent none.
        role: noco_certs::Role::try_from(login.role)
            .map(|role| role.to_string())
            .unwrap_or_default(),
        ca_pem: r.ca_pem,
        cert_pem: r.cert_pem,
        key_pem: request.key_pem,
    };
    cred.save(path).map_err(CtlError::local)?;
    match out {
        Format::Json => output::json(&login),
        Format::Table => outln!("{}", login.line()),
    }
    Ok(())
}

fn print_login_token(token: &LoginTokenView, cred: &Credential, out: Format) {
    match out {
        Format::Json => output::json(token),
        Format::Table => {
            outln!("{}", token.login_token);
            errln!(
                "one-time login token for {} ({}), expires {}. They run:\n  nococtl login --server {} --token <token>",
                token.operator.name,
                token.operator.role,
                token.expires,
                cred.server
            );
        }
    }
}

/// `--role`: `admin`, `deployer` or `viewer`.
pub fn parse_role(text: &str) -> Result<pb::Role, String> {
    pb::Role::parse_text(text).ok_or_else(|| {
        // Every role the protocol defines, in order (0 is unspecified).
        let roles: Vec<&str> = (1..)
            .map_while(|n| pb::Role::try_from(n).ok())
            .map(|r| r.text())
            .collect();
        let (last, rest) = roles.split_last().unwrap_or((&"", &[]));
        format!(
            "{text:?} is not a role: expected {} or {last}",
            rest.join(", ")
        )
    })
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

    #[test]
    fn roles_parse_from_their_text_and_an_unknown_one_names_the_valid_ones() {
        assert_eq!(parse_role("deployer"), Ok(pb::Role::Deployer));
        assert_eq!(parse_role("Admin"), Ok(pb::Role::Admin));
        assert_eq!(
            parse_role("root"),
            Err("\"root\" is not a role: expected viewer, deployer or admin".to_string())
        );
        assert!(parse_role("unspecified").is_err());
    }
}
