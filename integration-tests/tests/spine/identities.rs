//! Who may talk to the server: only certificates of noco's own CA, unexpired, of the right kind
//! for the service, and not revoked. Checked with certificates nococtl would never present.

use std::time::{Duration, SystemTime};

use noco_certs::Identity;
use noco_certs::ca::Ca;
use noco_integration_tests::{Fleet, ServerOptions};
use tonic::Code;

use crate::grpc::{
    self, anonymous_config, client_config, fleet_ca, issue, list_hosts, load_credential,
    open_session,
};

fn refused(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) -> tonic::Status {
    match result {
        Ok(v) => panic!("{what} was accepted: {v:?}"),
        Err(status) => status,
    }
}

#[test]
fn certificates_from_another_ca_expired_or_absent_are_refused() {
    let fleet = Fleet::start(ServerOptions::default());
    let agent_dir = fleet.enroll("web-1", "");
    let host_id = load_credential(&agent_dir.join("credential.toml")).id;
    let rt = grpc::rt();
    rt.block_on(async {
        // Another CA issuing the very identity of an enrolled host.
        let foreign =
            Ca::create("impostor CA", Duration::from_secs(3600), SystemTime::now()).unwrap();
        let (cert, key) = issue(
            &foreign,
            &Identity::Agent {
                host_id: host_id.clone(),
            },
            Duration::from_secs(600),
            SystemTime::now(),
        );
        let s = refused(
            open_session(&fleet, client_config(&fleet, &cert, &key)).await,
            "a foreign-CA agent cert",
        );
        assert_ne!(s.code(), Code::Ok);

        // Our CA, but expired an hour ago.
        let ca = fleet_ca(&fleet);
        let (cert, key) = issue(
            &ca,
            &Identity::Agent {
                host_id: host_id.clone(),
            },
            Duration::from_secs(60),
            SystemTime::now() - Duration::from_secs(3600),
        );
        refused(
            open_session(&fleet, client_config(&fleet, &cert, &key)).await,
            "an expired agent cert",
        );

        // No certificate at all: sessions and control calls are refused, with a clear status.
        let s = refused(
            open_session(&fleet, anonymous_config(&fleet)).await,
            "an anonymous session",
        );
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");
        assert!(s.message().contains("client certificate"), "{s:?}");
        let s = refused(
            list_hosts(&fleet, anonymous_config(&fleet)).await,
            "an anonymous ListHosts",
        );
        assert_eq!(s.code(), Code::Unauthenticated, "{s:?}");

        // A valid certificate of ours still works, so the refusals above were about the certs.
        let cred = load_credential(&agent_dir.join("credential.toml"));
        open_session(&fleet, client_config(&fleet, &cred.cert_pem, &cred.key_pem))
            .await
            .expect("the host's own certificate");
    });
}

#[test]
fn operator_and_agent_certificates_cannot_stand_in_for_each_other() {
    let fleet = Fleet::start(ServerOptions::default());
    let agent_dir = fleet.enroll("web-1", "");
    let agent = load_credential(&agent_dir.join("credential.toml"));
    let admin = load_credential(&fleet.admin_config());
    let rt = grpc::rt();
    rt.block_on(async {
        let s = refused(
            open_session(
                &fleet,
                client_config(&fleet, &admin.cert_pem, &admin.key_pem),
            )
            .await,
            "an operator cert as agent",
        );
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("not an agent certificate"), "{s:?}");

        let s = refused(
            list_hosts(
                &fleet,
                client_config(&fleet, &agent.cert_pem, &agent.key_pem),
            )
            .await,
            "an agent cert as operator",
        );
        assert_eq!(s.code(), Code::PermissionDenied, "{s:?}");
        assert!(s.message().contains("not an operator certificate"), "{s:?}");
    });
}

#[test]
fn a_second_session_from_the_same_host_replaces_the_first() {
    let fleet = Fleet::start(ServerOptions::default());
    let agent_dir = fleet.enroll("web-1", "");
    let cred = load_credential(&agent_dir.join("credential.toml"));
    let rt = grpc::rt();
    rt.block_on(async {
        let config = || client_config(&fleet, &cred.cert_pem, &cred.key_pem);
        let (mut first, _keep1) = open_session(&fleet, config()).await.expect("first session");
        let (_second, _keep2) = open_session(&fleet, config())
            .await
            .expect("second session");
        let ended = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match first.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                }
            }
        })
        .await
        .expect("the first session ended");
        let status = ended.expect("the first session ended with a status");
        assert_eq!(status.code(), Code::Aborted, "{status:?}");
        assert!(status.message().contains("replaced"), "{status:?}");
    });
    assert_eq!(fleet.status_of("web-1"), "online");
}

#[test]
fn malformed_and_oversized_input_gets_a_clear_status_and_the_server_stays_up() {
    use noco_proto::v1 as pb;
    let fleet = Fleet::start(ServerOptions::default());
    let rt = grpc::rt();
    rt.block_on(async {
        let ch = grpc::channel(
            &fleet,
            noco_certs::tls::pinned_client_config(&fleet_ca(&fleet).fingerprint()).unwrap(),
        )
        .await
        .unwrap();
        let mut enroll = pb::enrollment_client::EnrollmentClient::new(ch);
        let s = enroll
            .enroll(pb::EnrollRequest {
                token: "garbage".into(),
                ..Default::default()
            })
            .await
            .expect_err("a garbage token");
        assert_eq!(s.code(), Code::InvalidArgument, "{s:?}");
        assert!(s.message().contains("malformed token"), "{s:?}");
        let s = enroll
            .enroll(pb::EnrollRequest {
                token: "x".into(),
                csr_pem: "A".repeat(200 * 1024),
                ..Default::default()
            })
            .await
            .expect_err("an oversized request");
        assert_eq!(s.code(), Code::OutOfRange, "{s:?}");
    });
    let token = fleet.join_token("");
    let out = std::process::Command::new(noco_integration_tests::bin("noco-agent"))
        .args([
            "enroll",
            "--server",
            &fleet.url,
            "--token",
            &token,
            "--data-dir",
        ])
        .arg(fleet.path("agent-x"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the server still serves after bad input: {}",
        noco_integration_tests::stderr(&out)
    );
    let bad_label = fleet.ctl(&["host", "label", "nope", "a b=c"]);
    assert_eq!(bad_label.status.code(), Some(1));
    let bad_labels = fleet.ctl(&["token", "create", "--labels", "role=a=b"]);
    assert_eq!(bad_labels.status.code(), Some(1));
    assert!(
        noco_integration_tests::stderr(&bad_labels).contains("label role"),
        "{}",
        noco_integration_tests::stderr(&bad_labels)
    );
}

/// A host revoked while its session waits for Hello (past the server's check of the host, not
/// yet registered) must not get that session: it was welcomed and stayed online until the
/// idle timeout, the revocation's cut having come before the registration.
#[test]
fn a_host_revoked_while_its_session_opens_is_refused() {
    let fleet = Fleet::start(ServerOptions::default());
    let agent_dir = fleet.enroll("web-1", "");
    let cred = load_credential(&agent_dir.join("credential.toml"));
    let rt = grpc::rt();
    rt.block_on(async {
        let ch = grpc::channel(&fleet, client_config(&fleet, &cred.cert_pem, &cred.key_pem))
            .await
            .expect("connect");
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let call = tokio::spawn(async move {
            noco_proto::v1::agent_client::AgentClient::new(ch)
                .session(tokio_stream::wrappers::ReceiverStream::new(rx))
                .await
        });
        // The server reads the host (not revoked yet) and waits for Hello.
        tokio::time::sleep(Duration::from_secs(1)).await;
        fleet.ctl_ok(&["host", "revoke", "web-1"]);
        tx.send(noco_proto::v1::AgentMessage {
            msg: Some(noco_proto::v1::agent_message::Msg::Hello(
                noco_proto::v1::Hello::default(),
            )),
        })
        .await
        .expect("send Hello");
        let answer = tokio::time::timeout(Duration::from_secs(10), call)
            .await
            .expect("the server answers the session")
            .expect("the session task");
        match answer {
            Err(status) => {
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                assert!(status.message().contains("revoked"), "{status:?}");
            }
            Ok(resp) => {
                let mut inbound = resp.into_inner();
                let first = tokio::time::timeout(Duration::from_secs(5), inbound.message()).await;
                panic!("the revoked host's session was accepted; its first message: {first:?}");
            }
        }
        drop(tx);
    });
    assert_eq!(fleet.status_of("web-1"), "revoked");
}
