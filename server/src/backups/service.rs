//! The Backups service: what agents call (the auth layer lets agents only). The caller's host
//! comes from its certificate, as for sessions.

use std::sync::Arc;

use noco_proto::limits::MAX_BACKUP_MESSAGE;
use noco_proto::v1 as pb;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::Caller;
use crate::core::Core;
use crate::session::calling_host;

#[derive(Debug, Clone)]
pub struct BackupsSvc {
    pub core: Arc<Core>,
}

/// The service as the server serves it: messages up to [`MAX_BACKUP_MESSAGE`] both ways.
pub fn server(core: Arc<Core>) -> pb::backups_server::BackupsServer<BackupsSvc> {
    pb::backups_server::BackupsServer::new(BackupsSvc { core })
        .max_decoding_message_size(MAX_BACKUP_MESSAGE)
        .max_encoding_message_size(MAX_BACKUP_MESSAGE)
}

#[tonic::async_trait]
impl pb::backups_server::Backups for BackupsSvc {
    async fn upload(
        &self,
        req: Request<Streaming<pb::BackupUpload>>,
    ) -> Result<Response<pb::BackupInfo>, Status> {
        let caller = Caller::of(&req)?;
        let host = calling_host(&self.core, &caller, "backup uploads").await?;
        let info = self
            .core
            .backups
            .upload(&caller.who(), &host, req.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn upload_offset(
        &self,
        req: Request<pb::BackupUploadOffsetRequest>,
    ) -> Result<Response<pb::BackupUploadOffsetResponse>, Status> {
        let caller = Caller::of(&req)?;
        let host = calling_host(&self.core, &caller, "backup uploads").await?;
        Ok(Response::new(
            self.core
                .backups
                .upload_offset(&host, &req.into_inner().id)
                .await?,
        ))
    }

    async fn report(
        &self,
        req: Request<pb::BackupReport>,
    ) -> Result<Response<pb::BackupReportAck>, Status> {
        let caller = Caller::of(&req)?;
        let host = calling_host(&self.core, &caller, "backup reports").await?;
        let backups = &self.core.backups;
        match req.into_inner().msg {
            Some(pb::backup_report::Msg::Backup(info)) => {
                backups.report_backup(&caller.who(), &host, info).await?
            }
            Some(pb::backup_report::Msg::Job(job)) => {
                backups.report_job(&caller.who(), &host, job).await?
            }
            None => return Err(Status::invalid_argument("an empty backup report")),
        }
        Ok(Response::new(pb::BackupReportAck {}))
    }

    type DownloadStream = ReceiverStream<Result<pb::BackupDownloadChunk, Status>>;

    async fn download(
        &self,
        req: Request<pb::BackupDownloadRequest>,
    ) -> Result<Response<Self::DownloadStream>, Status> {
        let caller = Caller::of(&req)?;
        let host = calling_host(&self.core, &caller, "backup downloads").await?;
        let req = req.into_inner();
        Ok(Response::new(
            self.core
                .backups
                .download(&req.id, req.offset, Some(&host))
                .await?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use noco_certs::{Identity, PeerCert};
    use pb::backup_upload::Msg;
    use pb::backups_client::BackupsClient;
    use sha2::{Digest, Sha256};
    use tokio_stream::wrappers::TcpListenerStream;

    use super::*;
    use crate::bans::BanSet;
    use crate::clock::SystemClock;
    use crate::core::Limits;

    /// The agent a test call speaks for: the `x-host` header (the auth layer reads the
    /// certificate; these tests serve without TLS).
    #[allow(clippy::result_large_err)]
    fn as_agent(mut req: Request<()>) -> Result<Request<()>, Status> {
        let host_id = req
            .metadata()
            .get("x-host")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        req.extensions_mut().insert(Caller {
            peer: PeerCert {
                identity: Identity::Agent { host_id },
                not_before: SystemTime::UNIX_EPOCH,
                not_after: SystemTime::now() + Duration::from_secs(3600),
                serial: "1".into(),
                common_name: "test".into(),
            },
        });
        Ok(req)
    }

    fn with_host<T>(host: &str, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        req.metadata_mut().insert("x-host", host.parse().unwrap());
        req
    }

    /// An agent uploads an archive over gRPC in messages of MAX_BACKUP_CHUNK (a header with a
    /// backup record and a trailer with a manifest fit too), asks where to resume, and only its
    /// own host's backups are its to touch.
    #[tokio::test]
    async fn an_agent_uploads_in_chunk_sized_messages_over_grpc() {
        let dir = tempfile::tempdir().unwrap();
        let (_, pki, store) =
            crate::testing::pki_and_store(dir.path(), Duration::from_secs(86400)).await;
        crate::testing::insert_hosts(&*store, &[("h1", "one")]).await;
        let core = Core::assemble(
            store,
            Arc::new(pki),
            Arc::new(BanSet::default()),
            Arc::new(SystemClock),
            Limits::default(),
            crate::backups::BackupSettings::for_tests(dir.path()),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = tonic::transport::Server::builder().add_service(
            tonic::service::interceptor::InterceptedService::new(server(core.clone()), as_agent),
        );
        tokio::spawn(router.serve_with_incoming(TcpListenerStream::new(listener)));
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = BackupsClient::new(channel)
            .max_decoding_message_size(MAX_BACKUP_MESSAGE)
            .max_encoding_message_size(MAX_BACKUP_MESSAGE);
        let archive: Vec<u8> = (0..(5 << 20) + 77).map(|i| (i % 253) as u8).collect();
        let info = pb::BackupInfo {
            id: "shop.db.20240101T000000Z.0a0b0c0d".into(),
            stack: "shop".into(),
            name: "db".into(),
            host_id: "h1".into(),
            state: pb::BackupState::PendingUpload.into(),
            // A record as large as a manifest may make it.
            manifest_json: "x".repeat(noco_proto::limits::MAX_BACKUP_MANIFEST - 1024),
            ..Default::default()
        };
        let offset = client
            .upload_offset(with_host(
                "h1",
                pb::BackupUploadOffsetRequest {
                    id: info.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!((offset.offset, offset.complete), (0, false));
        let mut msgs = vec![pb::BackupUpload {
            msg: Some(Msg::Header(pb::BackupUploadHeader {
                backup: Some(info.clone()),
                offset: 0,
            })),
        }];
        for chunk in archive.chunks(noco_proto::limits::MAX_BACKUP_CHUNK) {
            msgs.push(pb::BackupUpload {
                msg: Some(Msg::Data(chunk.to_vec())),
            });
        }
        msgs.push(pb::BackupUpload {
            msg: Some(Msg::Trailer(pb::BackupUploadTrailer {
                size: archive.len() as u64,
                sha256: hex::encode(Sha256::digest(&archive)),
                manifest_json: info.manifest_json.clone(),
                finished_unix_ms: 5,
            })),
        });
        let done = client
            .upload(with_host("h1", tokio_stream::iter(msgs.clone())))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(done.state(), pb::BackupState::Complete);
        assert_eq!(done.host, "one");
        let offset = client
            .upload_offset(with_host(
                "h1",
                pb::BackupUploadOffsetRequest {
                    id: info.id.clone(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (offset.offset, offset.complete),
            (archive.len() as u64, true)
        );
        // Another agent: not enrolled, then not the owner.
        let err = client
            .upload(with_host("h9", tokio_stream::iter(msgs)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let err = client
            .report(with_host(
                "h1",
                pb::BackupReport {
                    msg: Some(pb::backup_report::Msg::Backup(pb::BackupInfo {
                        id: "shop.db.x.1".into(),
                        stack: "shop".into(),
                        name: "db".into(),
                        host_id: "h2".into(),
                        state: pb::BackupState::Running.into(),
                        ..Default::default()
                    })),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
        // An agent downloads only what it restores or verifies.
        let err = client
            .download(with_host(
                "h1",
                pb::BackupDownloadRequest {
                    id: info.id.clone(),
                    offset: 0,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    }
}
