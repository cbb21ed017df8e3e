//! The compose engine: applies a stack of the compose model to the local Docker engine through
//! the Engine API (bollard). [`observe`] reads what exists, `noco_compose::plan` decides,
//! [`apply`] acts; [`spec`] maps a service to a container; [`labels`] marks what we made;
//! [`files`] writes the secret and config files containers mount.

pub mod apply;
pub mod docker;
pub mod files;
pub mod labels;
pub mod observe;
pub mod project;
pub mod spec;

use std::fmt;

/// What went wrong while applying, naming the thing and the reason.
#[derive(Debug)]
pub enum EngineError {
    /// A Docker API call failed.
    Docker {
        context: String,
        source: bollard::errors::Error,
    },
    /// Something the stack needs is missing before anything was changed.
    Precondition(String),
    /// A service could not be brought up.
    Service {
        service: String,
        reason: String,
        logs: Vec<String>,
    },
    /// Several services failed.
    Many(Vec<EngineError>),
}

impl EngineError {
    pub fn docker(context: impl Into<String>, source: bollard::errors::Error) -> Self {
        EngineError::Docker {
            context: context.into(),
            source,
        }
    }

    pub fn service(service: &str, reason: impl Into<String>) -> Self {
        EngineError::Service {
            service: service.to_string(),
            reason: reason.into(),
            logs: Vec::new(),
        }
    }
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Docker { context, source } => {
                write!(f, "{context}: {}", docker_message(source))
            }
            EngineError::Precondition(m) => f.write_str(m),
            EngineError::Service {
                service,
                reason,
                logs,
            } => {
                write!(f, "service {service:?}: {reason}")?;
                if !logs.is_empty() {
                    write!(f, "\n  last log lines:")?;
                    for line in logs {
                        write!(f, "\n    {line}")?;
                    }
                }
                Ok(())
            }
            EngineError::Many(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for EngineError {}

/// Docker's own message where it sent one, not the HTTP wrapping.
pub fn docker_message(e: &bollard::errors::Error) -> String {
    match e {
        bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        } => format!("{message} (HTTP {status_code})"),
        other => other.to_string(),
    }
}

/// Whether a Docker error is a 404.
pub fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}
