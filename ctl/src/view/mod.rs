//! What nococtl shows, one view per thing (a host, an operator, an audit record, a stack, a
//! host's status, a rollout, a log line, a host's metrics, an alert …): built once from the
//! server's message, serialized by derive for `-o json`, and giving the cells of its table row
//! ([`crate::output::Listed`]) or its lines, so a field cannot be in one and missing from the
//! other.
//!
//! The `From` impls name every field of the message they read (no `..`): a field added to the
//! protocol does not compile here until it is shown or knowingly left out (`field: _`).
//! Enumerations are kept typed in the views (compare `view.phase == RolloutPhase::Paused`) and
//! serialize as their text (`converged`, `rolling_back`: [`noco_proto::Enumeration`]).

pub mod alert;
pub mod audit;
pub mod backup;
pub mod host;
pub mod logs;
pub mod operator;
pub mod rollout;
pub mod signing;
pub mod stack;
pub mod status;
pub mod top;

use noco_proto::Enumeration;
use serde::Serializer;

/// `#[serde(serialize_with = "text")]`: an enumeration as its text (`online`, `admin`).
pub fn text<E: Enumeration, S: Serializer>(value: &E, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.text())
}
