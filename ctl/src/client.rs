//! Connecting to the server as the operator in the credential, renewing the credential first
//! when it is past two thirds of its life.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use noco_certs::credential::Credential;
use noco_certs::dial::{self, ServerAddr};
use noco_proto::v1::control_client::ControlClient;
use tonic::transport::Channel;

use crate::config;
use crate::error::CtlError;
use crate::output::errln;

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Load the credential at `path` (renewing it if due) and connect to the Control service.
pub async fn open(
    path: &Path,
    server: Option<&str>,
) -> Result<(Credential, ControlClient<Channel>), CtlError> {
    let mut cred = config::load(path, server)?;
    renew_if_due(&mut cred, path).await;
    let ctl = control(connect_as(&cred).await?);
    Ok((cred, ctl))
}

pub async fn connect_as(cred: &Credential) -> Result<Channel, CtlError> {
    let addr = ServerAddr::parse(&cred.server).map_err(CtlError::Local)?;
    let tls = Arc::new(cred.client_config().map_err(CtlError::local)?);
    dial::connect(&addr, move || tls.clone(), CONNECT_TIMEOUT)
        .await
        .map_err(|e| {
            CtlError::Unreachable(format!(
                "cannot reach the noco server at {}: {}",
                addr.url(),
                noco_certs::dial::describe(&e)
            ))
        })
}

/// Renew the credential in place if it is due. A failed renewal is a warning: the current
/// certificate still works.
pub async fn renew_if_due(cred: &mut Credential, path: &Path) {
    if !cred.renewal_due(SystemTime::now()).unwrap_or(false) {
        return;
    }
    match noco_certs::renew::renew(cred, CONNECT_TIMEOUT).await {
        Ok(next) => match next.save(path) {
            Ok(()) => *cred = next,
            Err(e) => {
                errln!("nococtl: warning: renewed the certificate but could not save it: {e}")
            }
        },
        Err(e) => errln!("nococtl: warning: could not renew the certificate: {e}"),
    }
}

pub fn control(channel: Channel) -> ControlClient<Channel> {
    ControlClient::new(channel)
        .max_decoding_message_size(noco_proto::limits::MAX_CONTROL_RESPONSE)
        .max_encoding_message_size(noco_proto::limits::MAX_CONTROL_REQUEST)
}
