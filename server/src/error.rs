//! The domain error of the server and its one conversion to the wire. Domain modules return
//! [`Error`]; only [`From<Error> for tonic::Status`] decides codes and what a client may read:
//! a store or internal failure is logged in full and reaches the client as a reference to that
//! log line, never as the store's own text.

use tonic::Status;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed or names something invalid.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is valid but the system is not in a state that allows it.
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Unauthenticated(String),
    /// The store failed while doing `doing`.
    #[error("{doing}: {source}")]
    Store {
        doing: &'static str,
        source: StoreError,
    },
    /// Something that should not happen did; the text is for the log.
    #[error("{0}")]
    Internal(String),
    /// Over a size limit (a backup over `--backup-max-size`): sending it again will not help.
    #[error("{0}")]
    TooLarge(String),
    /// What was received is not what the sender says it sent (a checksum mismatch).
    #[error("{0}")]
    DataLoss(String),
    /// Something else is doing this right now: try again shortly.
    #[error("{0}")]
    Busy(String),
    /// An offset or range beyond what there is.
    #[error("{0}")]
    OutOfRange(String),
    /// The backup store (object storage) failed while doing `doing`: worth trying again; the
    /// store's own text is for the log.
    #[error("{doing}: {reason}")]
    Objects { doing: String, reason: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach what was being done to a store result: `store.hosts().await.doing("reading hosts")?`.
pub trait Doing<T> {
    fn doing(self, doing: &'static str) -> Result<T>;
}

impl<T> Doing<T> for std::result::Result<T, StoreError> {
    fn doing(self, doing: &'static str) -> Result<T> {
        self.map_err(|source| Error::from_store(doing, source))
    }
}

/// "no stack named \"shpo\"; did you mean \"shop\"?" — a name that is not there, with the
/// nearest that is (the one rule of `noco_compose::suggest`).
pub fn not_found<'a>(what: &str, name: &str, known: impl IntoIterator<Item = &'a str>) -> Error {
    match noco_compose::suggest::did_you_mean(name, known) {
        Some(hint) => Error::NotFound(format!("no {what} named {name:?}; {hint}")),
        None => Error::NotFound(format!("no {what} named {name:?}")),
    }
}

impl Error {
    /// A store error while `doing`: conflicts and refusals are the caller's to read.
    pub fn from_store(doing: &'static str, source: StoreError) -> Error {
        match source {
            StoreError::Conflict(m) => Error::Precondition(m),
            StoreError::Refused(m) => Error::Invalid(m),
            source => Error::Store { doing, source },
        }
    }
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::Invalid(m) => Status::invalid_argument(m),
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::Precondition(m) => Status::failed_precondition(m),
            Error::Denied(m) => Status::permission_denied(m),
            Error::Unauthenticated(m) => Status::unauthenticated(m),
            Error::Store { doing, source } => {
                let reference = noco_certs::random_hex::<4>();
                tracing::error!(reference, "{doing}: {source}");
                Status::internal(format!(
                    "internal error while {doing} (server log reference {reference})"
                ))
            }
            Error::Internal(m) => {
                let reference = noco_certs::random_hex::<4>();
                tracing::error!(reference, "{m}");
                Status::internal(format!("internal error (server log reference {reference})"))
            }
            Error::TooLarge(m) => Status::resource_exhausted(m),
            Error::DataLoss(m) => Status::data_loss(m),
            Error::Busy(m) => Status::aborted(m),
            Error::OutOfRange(m) => Status::out_of_range(m),
            Error::Objects { doing, reason } => {
                let reference = noco_certs::random_hex::<4>();
                tracing::error!(reference, "backup store: {doing}: {reason}");
                Status::unavailable(format!(
                    "the backup store failed while {doing} (server log reference {reference}); try again later"
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_reaches_the_client_without_the_store_text() {
        let status: Status = Error::Store {
            doing: "reading hosts",
            source: StoreError::Db("IO error: /var/lib/noco-server/db/conf: secret path".into()),
        }
        .into();
        assert_eq!(status.code(), tonic::Code::Internal);
        assert!(
            status
                .message()
                .starts_with("internal error while reading hosts")
        );
        assert!(
            !status.message().contains("/var/lib"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_conflict_is_the_callers_to_read() {
        let status: Status = Error::from_store(
            "storing host",
            StoreError::Conflict("host name \"web-1\" is taken".into()),
        )
        .into();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert!(status.message().contains("web-1"));
    }
}
