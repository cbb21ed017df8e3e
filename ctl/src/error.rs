//! nococtl's failures and the exit codes scripts can rely on:
//! 0 success · 1 the server refused or failed the request, or what was shown or watched failed
//! (a failed stack in `status`; nothing to wait for in `status -w`) · 2 usage or local problem
//! (no or bad credential, expired certificate) · 3 the server could not be reached · 130
//! interrupted with Ctrl-C (a download, which leaves nothing behind; watches exit 130 through
//! `output::Screen`). (A closed stdout is not a failure: see `output`.)

use std::fmt;

#[derive(Debug)]
pub enum CtlError {
    /// The server answered with an error.
    Refused(String),
    /// The request worked, and what it shows failed: a stack failed or was refused, there is
    /// nothing to wait for.
    Failed(String),
    /// Something on this machine is wrong: configuration, credential, arguments.
    Local(String),
    /// The server could not be reached or the TLS handshake failed.
    Unreachable(String),
    /// Ctrl-C stopped it (after cleaning up).
    Interrupted(String),
}

impl CtlError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CtlError::Refused(_) | CtlError::Failed(_) => 1,
            CtlError::Local(_) => 2,
            CtlError::Unreachable(_) => 3,
            CtlError::Interrupted(_) => 130,
        }
    }

    pub fn local(e: impl fmt::Display) -> Self {
        CtlError::Local(e.to_string())
    }
}

impl fmt::Display for CtlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CtlError::Refused(m)
            | CtlError::Failed(m)
            | CtlError::Local(m)
            | CtlError::Unreachable(m)
            | CtlError::Interrupted(m) => f.write_str(m),
        }
    }
}

/// A gRPC status from the server, with a hint where one helps.
pub fn refused(action: &str, status: tonic::Status) -> CtlError {
    let text = format!(
        "{}: {}",
        status.message(),
        noco_certs::dial::describe(&status)
    );
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown
            if text.to_lowercase().contains("revoked") =>
        {
            CtlError::Refused(format!(
                "{action}: the server refused this credential: it has been revoked"
            ))
        }
        tonic::Code::Unavailable => {
            CtlError::Unreachable(format!("{action}: the server is unavailable: {text}"))
        }
        tonic::Code::Unauthenticated | tonic::Code::PermissionDenied => {
            CtlError::Refused(format!("{action}: refused: {}", status.message()))
        }
        _ => CtlError::Refused(format!("{action}: {}", status.message())),
    }
}
