//! Every size limit of noco, in one place, each derived from the ones it must hold. The server
//! refuses at `stack apply` (and on relabel and rollout start) anything a host could never
//! receive, because every receiver's cap below is computed from what it must carry:
//!
//! ```text
//! compose file + shipped files + variables + framing  = one revision
//! revisions of every stack assigned to a host          ≤ one host's desired state
//! a host's desired state + signature envelope          = one session message
//! one revision + request framing                       = one control request
//! ```

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// The largest compose file (bytes).
pub const MAX_COMPOSE_FILE: usize = MIB;
/// How many files may ship with a revision.
pub const MAX_SHIPPED_FILES: usize = 256;
/// The total size of the files shipped with a revision.
pub const MAX_SHIPPED_BYTES: usize = 8 * MIB;
/// The total size of a revision's variables (names and values).
pub const MAX_ENV_BYTES: usize = 256 * KIB;
/// Paths, modes, the revision id and protobuf framing of a revision at its largest.
const REVISION_FRAMING: usize = MAX_SHIPPED_FILES * 300 + 16 * KIB;
/// The largest stack revision, encoded: compose file, variables, shipped files and framing.
pub const MAX_REVISION: usize =
    MAX_COMPOSE_FILE + MAX_SHIPPED_BYTES + MAX_ENV_BYTES + REVISION_FRAMING;
/// The largest desired state of one host (every stack assigned to it), encoded and signed. The
/// server never issues a bigger one: applying, relabelling or rolling out what would exceed it
/// is refused, naming the host and the sizes.
pub const MAX_HOST_STATE: usize = 3 * MAX_REVISION;
/// Signature, key id and framing around a host's state.
const STATE_ENVELOPE: usize = 4 * KIB;
/// The largest message on an agent session, both ways: a signed host state at its largest.
pub const MAX_SESSION_MESSAGE: usize = MAX_HOST_STATE + STATE_ENVELOPE;
/// The largest control request: a revision at its largest, with the request's other fields.
pub const MAX_CONTROL_REQUEST: usize = MAX_REVISION + 64 * KIB;
/// The largest control response (status of a large fleet, audit pages).
pub const MAX_CONTROL_RESPONSE: usize = 64 * MIB;
/// The longest log line kept: longer ones are cut here and say how many bytes were cut. Docker
/// hands lines over 16 KiB as partial frames; the agent joins them up to this.
pub const MAX_LOG_LINE: usize = 64 * KIB;
/// The most bytes of log records in one batch on the telemetry stream (a batch holds at least
/// one record, so it is never smaller than one record at its largest).
pub const MAX_LOG_BATCH: usize = 256 * KIB;
/// Containers in one metrics sample: a host with more reports the first this many.
pub const MAX_SAMPLE_CONTAINERS: usize = 1000;
/// The largest message on a telemetry stream, both ways: a log batch and its last record at
/// their largest, or a metrics sample of its most containers (about 200 bytes each).
pub const MAX_TELEMETRY_MESSAGE: usize =
    MAX_LOG_BATCH + MAX_LOG_LINE + MAX_SAMPLE_CONTAINERS * 512 + 64 * KIB;
/// HTTP/2 flow-control windows, both ways: how much of one stream (and of all streams of a
/// connection) may be in flight before the receiver acknowledges it. They bound what a slow
/// receiver buffers, and a log stream's throughput per round trip.
pub const HTTP2_STREAM_WINDOW: u32 = MIB as u32;
pub const HTTP2_CONNECTION_WINDOW: u32 = 2 * MIB as u32;
/// The largest enrollment, login or renewal message (a CSR and facts).
pub const MAX_ENROLL_MESSAGE: usize = 64 * KIB;
/// The data in one message of a backup upload or download: agents send at most this much per
/// message, and the server streams downloads in pieces of it.
pub const MAX_BACKUP_CHUNK: usize = MIB;
/// The largest backup manifest (JSON, in the upload trailer and a backup's record).
pub const MAX_BACKUP_MANIFEST: usize = 4 * MIB;
/// The largest message of the Backups service and of a backup download (a chunk, or a header,
/// trailer or report with a backup's record and manifest), with framing.
pub const MAX_BACKUP_MESSAGE: usize = MAX_BACKUP_CHUNK + MAX_BACKUP_MANIFEST + 64 * KIB;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_limit_holds_what_it_must_carry() {
        const {
            assert!(MAX_REVISION >= MAX_COMPOSE_FILE + MAX_SHIPPED_BYTES + MAX_ENV_BYTES);
            assert!(MAX_HOST_STATE >= MAX_REVISION);
            assert!(MAX_SESSION_MESSAGE > MAX_HOST_STATE);
            assert!(MAX_CONTROL_REQUEST > MAX_REVISION);
            assert!(MAX_CONTROL_RESPONSE >= MAX_CONTROL_REQUEST);
            assert!(MAX_TELEMETRY_MESSAGE > MAX_LOG_BATCH + MAX_LOG_LINE);
            assert!(MAX_CONTROL_RESPONSE > MAX_TELEMETRY_MESSAGE);
            assert!(MAX_BACKUP_MESSAGE > MAX_BACKUP_CHUNK + MAX_BACKUP_MANIFEST);
            assert!(MAX_CONTROL_RESPONSE > MAX_BACKUP_MESSAGE);
        }
    }
}
