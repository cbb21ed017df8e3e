//! Log collection: follows the logs of every container this agent manages through the Docker API
//! and appends each line, as a [`pb::LogRecord`], to the [`Spool`].
//!
//! Containers are found by one list at start and then from Docker's event stream (`start`,
//! `die`, `destroy` of containers labelled `io.noco.managed`, of this agent's projects only), so
//! a container an apply replaces is followed from its start and its first line is never missed.
//! If the event stream breaks, the collector lists again and re-subscribes after a short backoff;
//! it never stops by itself.
//!
//! Each container has one follower task: `logs` with `follow`, stdout and stderr, timestamps,
//! `since` its cursor (where the spool says it was read up to). `since` is whole seconds and
//! Docker keeps the lines equal to it, so the lines at or before the cursor are dropped again by
//! time and count (the cursor's `at_time`), and the cursor moves on with every line read. A
//! follower reads an exited container to its end and stops; a stream that ends while the
//! container still runs (Docker's `follow` stops at some log rotations), or that stalls while
//! the container's json-file log grows, is reopened from the cursor.
//!
//! Streams are read straight from the engine's unix socket over HTTP/1.0 (the body is then the
//! stream itself, to the connection's end), and a busy one is read every [`COALESCE`]: one read
//! takes every line gathered since. Through bollard (hyper), each of Docker's frames is a round
//! trip between two tasks and a system call: 14% of a core at 8,500 lines/s against 8% this way
//! (`cost_of_following` below). An engine not on a unix socket is read through bollard.
//!
//! Lines are bytes, never required to be UTF-8. Docker hands a line over 16 KiB as several
//! frames with the same timestamp: they are joined up to the newline. A line is cut at
//! [`MAX_LOG_LINE`] bytes, its `truncated` counting the bytes cut (never buffered beyond the
//! cap). A TTY container's output has no stderr and its lines lose their trailing `\r`. A
//! container whose logging driver cannot be read (`none`, …) gets one `LOG_STREAM_NOCO` record
//! saying so, and is not retried.
//!
//! Followers never wait on the network: they hand records over a bounded channel to one writer
//! task, which appends them to the spool in batches (up to [`BATCH_RECORDS`] records or
//! [`BATCH_WAIT`]) on the blocking pool.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerInspectResponse, EventMessage};
use bollard::query_parameters::{
    EventsOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder, LogsOptionsBuilder,
};
use futures_util::{FutureExt, StreamExt};
use noco_proto::limits::MAX_LOG_LINE;
use noco_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::spool::{Cursor, Spool};
use crate::backoff::{Backoff, random_unit};
use crate::engine::{docker_message, labels, not_found};

/// Records in flight between the followers and the writer. Followers wait when it is full: on
/// the spool's disk, never on the network.
const CHANNEL_RECORDS: usize = 4096;
/// The most records appended to the spool at once.
pub const BATCH_RECORDS: usize = 1000;
/// How long the writer gathers records before appending what it has.
pub const BATCH_WAIT: Duration = Duration::from_millis(20);
/// Docker cuts a line into frames of this many bytes (each with the line's timestamp).
const PARTIAL: u64 = 16 * 1024;
/// The longest timestamp Docker writes: `2006-01-02T15:04:05.000000000+07:00`.
const MAX_STAMP: usize = 35;
/// How long a follower lets a busy stream gather before reading it again.
const COALESCE: Duration = Duration::from_millis(20);
/// The most records a follower gathers before handing them on.
const DRAIN_RECORDS: usize = 256;
/// How long a stream may be silent before the container's log file is checked for a stall.
const STALL_CHECK: Duration = Duration::from_secs(30);
/// A follow that lasted less than this before it ended counts as a failure (backoff).
const SHORT_FOLLOW: Duration = Duration::from_secs(1);

/// Follow every managed container's logs of this agent's projects (`<project_prefix><stack>`)
/// into `spool`, until dropped. Resumes each container from the spool's cursors.
pub async fn run(docker: Docker, spool: Arc<Spool>, project_prefix: String) {
    let endpoint = Endpoint::of(&docker, std::env::var("DOCKER_HOST").ok().as_deref());
    collect(docker, spool, project_prefix, endpoint).await;
}

/// [`run`], reading the streams from `endpoint` (through bollard if `None`).
async fn collect(
    docker: Docker,
    spool: Arc<Spool>,
    project_prefix: String,
    endpoint: Option<Endpoint>,
) {
    let (tx, rx) = mpsc::channel(CHANNEL_RECORDS);
    // The writer ends by itself once every sender (the collector's and its followers') is gone,
    // after appending what it holds.
    tokio::spawn(write_records(rx, spool.clone()));
    let saved = tokio::task::spawn_blocking(move || spool.cursors())
        .await
        .unwrap_or_default();
    let mut collector = Collector {
        endpoint: endpoint.map(Arc::new),
        docker,
        prefix: project_prefix.into(),
        tx,
        saved,
        known: HashMap::new(),
        followers: JoinSet::new(),
        tasks: HashMap::new(),
    };
    collector.run().await;
}

/// What the collector knows of one container.
#[derive(Debug, Default)]
struct Known {
    /// Where its logs were read up to (while a follower runs, the follower holds the newer one).
    cursor: Cursor,
    following: bool,
    /// It started again while its follower was still running: follow once more when it ends.
    again: bool,
    /// Its logs cannot be read; said once.
    unreadable: bool,
    /// Destroyed while its follower was running.
    destroyed: bool,
}

struct Collector {
    docker: Docker,
    endpoint: Option<Arc<Endpoint>>,
    prefix: Arc<str>,
    tx: mpsc::Sender<pb::LogRecord>,
    /// The spool's cursors, until the first list has taken those of the containers that exist.
    saved: HashMap<String, Cursor>,
    known: HashMap<String, Known>,
    followers: JoinSet<Ended>,
    tasks: HashMap<tokio::task::Id, String>,
}

impl Collector {
    async fn run(&mut self) {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            // Subscribe from a second before the list: whatever starts between the list and the
            // subscription is in the stream (a duplicate costs a no-op follow at most).
            let since = unix_nanos_now().div_euclid(1_000_000_000) - 1;
            let filters = HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("label".to_string(), vec![labels::MANAGED.to_string()]),
                (
                    "event".to_string(),
                    vec![
                        "start".to_string(),
                        "die".to_string(),
                        "destroy".to_string(),
                    ],
                ),
            ]);
            let opts = EventsOptionsBuilder::default()
                .since(&since.to_string())
                .filters(&filters)
                .build();
            let mut events = self.docker.events(Some(opts));
            if let Err(e) = self.list().await {
                tracing::warn!("logs: listing containers: {}", docker_message(&e));
                self.pause(backoff.next_delay(random_unit())).await;
                continue;
            }
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            backoff.reset();
                            self.on_event(event);
                        }
                        Some(Err(e)) => {
                            tracing::warn!("logs: Docker events: {}; listing again", docker_message(&e));
                            break;
                        }
                        None => {
                            tracing::warn!("logs: Docker's event stream ended; listing again");
                            break;
                        }
                    },
                    Some(done) = self.followers.join_next_with_id() => self.on_ended(done),
                }
            }
            self.pause(backoff.next_delay(random_unit())).await;
        }
    }

    /// Wait, still taking note of followers that end.
    async fn pause(&mut self, delay: Duration) {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => return,
                Some(done) = self.followers.join_next_with_id() => self.on_ended(done),
            }
        }
    }

    /// Follow every managed container of ours that is not followed yet (exited ones are read
    /// to their end from their cursor).
    async fn list(&mut self) -> Result<(), bollard::errors::Error> {
        let filters = HashMap::from([("label".to_string(), vec![labels::MANAGED.to_string()])]);
        let opts = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let list = self.docker.list_containers(Some(opts)).await?;
        for c in list {
            let (Some(id), Some(labels)) = (c.id, c.labels) else {
                continue;
            };
            if stack_of(&labels, &self.prefix).is_some() {
                self.want(id, false);
            }
        }
        // The cursors of containers that no longer exist are of no use.
        self.saved = HashMap::new();
        Ok(())
    }

    fn on_event(&mut self, event: EventMessage) {
        let Some(actor) = event.actor else { return };
        let Some(id) = actor.id else { return };
        match event.action.as_deref() {
            Some("start") => {
                let attributes = actor.attributes.unwrap_or_default();
                if stack_of(&attributes, &self.prefix).is_some() {
                    self.want(id, true);
                }
            }
            Some("destroy") => match self.known.get_mut(&id) {
                Some(known) if known.following => known.destroyed = true,
                Some(_) => {
                    self.known.remove(&id);
                }
                None => {}
            },
            // A container that dies ends its follow stream; its follower sees to the rest.
            _ => {}
        }
    }

    /// Follow `id` unless it is followed already (after a `start` event: then once more after).
    fn want(&mut self, id: String, started: bool) {
        let saved = &mut self.saved;
        let known = self.known.entry(id.clone()).or_insert_with(|| Known {
            cursor: saved.remove(&id).unwrap_or_default(),
            ..Known::default()
        });
        if known.unreadable {
            return;
        }
        if known.following {
            known.again |= started;
            return;
        }
        known.following = true;
        let cursor = known.cursor;
        self.spawn(id, cursor);
    }

    fn spawn(&mut self, id: String, cursor: Cursor) {
        let follower = follow(
            self.docker.clone(),
            self.endpoint.clone(),
            id.clone(),
            self.prefix.clone(),
            cursor,
            self.tx.clone(),
        );
        let handle = self.followers.spawn(follower);
        self.tasks.insert(handle.id(), id);
    }

    fn on_ended(&mut self, done: Result<(tokio::task::Id, Ended), tokio::task::JoinError>) {
        let (task, ended) = match done {
            Ok((task, ended)) => (task, Some(ended)),
            Err(e) => (e.id(), None),
        };
        let Some(id) = self.tasks.remove(&task) else {
            return;
        };
        let Some(known) = self.known.get_mut(&id) else {
            return;
        };
        known.following = false;
        let Some(ended) = ended else {
            // A follower that panicked: not restarted, so that it cannot loop.
            tracing::error!(
                "logs: the follower of container {id} failed; its logs are no longer read"
            );
            known.unreadable = true;
            return;
        };
        known.cursor = ended.cursor;
        match ended.why {
            Why::Stopped if known.destroyed => {
                self.known.remove(&id);
            }
            Why::Stopped => {
                if std::mem::take(&mut known.again) {
                    let cursor = known.cursor;
                    known.following = true;
                    self.spawn(id, cursor);
                }
            }
            Why::Gone => {
                self.known.remove(&id);
            }
            Why::Unreadable => known.unreadable = true,
            Why::Closed => {}
        }
    }
}

/// Why a follower ended, and where it had read up to.
#[derive(Debug)]
struct Ended {
    cursor: Cursor,
    why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Why {
    /// The container is not running and its logs were read to their end.
    Stopped,
    /// The container no longer exists.
    Gone,
    /// Its logging driver cannot be read (said in a record).
    Unreadable,
    /// The writer is gone: the collector is stopping.
    Closed,
}

/// One container as its follower needs it.
struct Container {
    target: Target,
    tty: bool,
    running: bool,
    driver: String,
    /// The json-file driver's file, to notice a stalled follow.
    log_path: Option<PathBuf>,
}

impl Container {
    fn from_inspect(info: ContainerInspectResponse, prefix: &str) -> Option<Container> {
        let id = info.id?;
        let config = info.config?;
        let labels = config.labels?;
        let target = Target::new(
            &labels,
            prefix,
            info.name.as_deref().unwrap_or_default(),
            id,
        )?;
        Some(Container {
            target,
            tty: config.tty.unwrap_or(false),
            running: info.state.and_then(|s| s.running).unwrap_or(false),
            driver: info
                .host_config
                .and_then(|h| h.log_config)
                .and_then(|l| l.typ)
                .unwrap_or_default(),
            log_path: info.log_path.filter(|p| !p.is_empty()).map(PathBuf::from),
        })
    }
}

/// Follow one container until it stops (read to its end), is removed, cannot be read, or the
/// writer is gone.
async fn follow(
    docker: Docker,
    endpoint: Option<Arc<Endpoint>>,
    id: String,
    prefix: Arc<str>,
    mut cursor: Cursor,
    tx: mpsc::Sender<pb::LogRecord>,
) -> Ended {
    let ended = |cursor, why| Ended { cursor, why };
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
    loop {
        let info = match docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => info,
            Err(e) if not_found(&e) => return ended(cursor, Why::Gone),
            Err(e) => {
                tracing::debug!("logs: inspecting {id}: {}", docker_message(&e));
                tokio::time::sleep(backoff.next_delay(random_unit())).await;
                continue;
            }
        };
        let Some(container) = Container::from_inspect(info, &prefix) else {
            return ended(cursor, Why::Gone);
        };
        if container.driver == "none" {
            let why = unreadable(&container, &mut cursor, &tx, "it is not kept").await;
            return ended(cursor, why);
        }
        let opened = Instant::now();
        match read(&docker, endpoint.as_deref(), &container, &mut cursor, &tx).await {
            Read::End => {}
            Read::Stalled => tracing::debug!("logs: {id}: follow stalled; reopening"),
            Read::Unreadable(message) => {
                let why = unreadable(&container, &mut cursor, &tx, &message).await;
                return ended(cursor, why);
            }
            Read::Closed => return ended(cursor, Why::Closed),
            Read::Failed(e) => {
                if not_found(&e) {
                    return ended(cursor, Why::Gone);
                }
                tracing::debug!("logs: {id}: {}", docker_message(&e));
            }
        }
        if !container.running {
            // It was not running when opened: read to its end.
            return ended(cursor, Why::Stopped);
        }
        // It was running: look again (a stopped one is read once more, to its end; a running
        // one is followed again from the cursor).
        if opened.elapsed() < SHORT_FOLLOW {
            tokio::time::sleep(backoff.next_delay(random_unit())).await;
        } else {
            backoff.reset();
        }
    }
}

/// Say once that a container's logs cannot be read: a container that has a cursor was told
/// about already (its only records are this one), by this agent run or an earlier one.
async fn unreadable(
    container: &Container,
    cursor: &mut Cursor,
    tx: &mpsc::Sender<pb::LogRecord>,
    why: &str,
) -> Why {
    if *cursor != Cursor::default() {
        return Why::Unreadable;
    }
    let line = format!(
        "noco: the logs of container {} cannot be read ({why}): logging driver {:?}",
        container.target.container, container.driver
    );
    let time = unix_nanos_now();
    let record = container
        .target
        .record(time, pb::LogStream::Noco, line.into_bytes(), 0);
    match tx.send(record).await {
        Ok(()) => {
            *cursor = Cursor {
                time_unix_nanos: time,
                at_time: 1,
            };
            Why::Unreadable
        }
        Err(_) => Why::Closed,
    }
}

enum Read {
    /// The stream ended.
    End,
    /// The stream was silent while the container's log file changed.
    Stalled,
    Unreadable(String),
    /// The writer is gone.
    Closed,
    Failed(bollard::errors::Error),
}

/// Read one `logs` stream from the cursor to its end (or a stall).
async fn read(
    docker: &Docker,
    endpoint: Option<&Endpoint>,
    container: &Container,
    cursor: &mut Cursor,
    tx: &mpsc::Sender<pb::LogRecord>,
) -> Read {
    let since = cursor
        .time_unix_nanos
        .div_euclid(1_000_000_000)
        .clamp(0, i64::from(i32::MAX));
    let id = &container.target.container_id;
    let mut source = match endpoint {
        Some(endpoint) => match RawLogs::open(endpoint, id, since, container.tty).await {
            Ok(raw) => Source::Raw(raw),
            Err(e) => return Read::from_error(e),
        },
        None => {
            let opts = LogsOptionsBuilder::default()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .since(i32::try_from(since).unwrap_or(i32::MAX))
                .build();
            Source::Api(Box::pin(docker.logs(id, Some(opts))))
        }
    };
    let mut lines = Lines::new(container.tty, *cursor);
    let mut stall = StallWatch::new(container.log_path.clone());
    let mut records = Vec::new();
    // One timer for the stall check, re-armed every period (not one per read).
    let check = tokio::time::sleep(STALL_CHECK);
    tokio::pin!(check);
    let mut active = false;
    let result = loop {
        let chunk = tokio::select! {
            biased;
            chunk = source.next(&mut lines, &container.target, &mut records) => chunk,
            () = &mut check => {
                if std::mem::take(&mut active) {
                    stall.data();
                } else if stall.silent() {
                    break Read::Stalled;
                }
                check.as_mut().reset(tokio::time::Instant::now() + STALL_CHECK);
                continue;
            }
        };
        if send(tx, &mut records).await.is_err() {
            return Read::Closed;
        }
        *cursor = lines.cursor;
        match chunk {
            Chunk::Data { more } => {
                active = true;
                // Let a busy stream gather: one read per COALESCE, not one per line.
                if !more {
                    tokio::time::sleep(COALESCE).await;
                }
            }
            Chunk::End => break Read::End,
            Chunk::Failed(e) => break Read::from_error(e),
        }
    };
    // A stopped container's last line may have no newline: it is complete. (A running one's
    // unfinished line is read again from the cursor.)
    if !container.running && matches!(result, Read::End) {
        lines.finish(&container.target, &mut records);
        if send(tx, &mut records).await.is_err() {
            return Read::Closed;
        }
        *cursor = lines.cursor;
    }
    result
}

impl Read {
    fn from_error(e: bollard::errors::Error) -> Read {
        match &e {
            bollard::errors::Error::DockerResponseServerError { message, .. }
                if message.contains("does not support reading") =>
            {
                Read::Unreadable(message.clone())
            }
            _ => Read::Failed(e),
        }
    }
}

/// What one read of a stream gave.
enum Chunk {
    /// Some of the stream (`more`: the read filled its buffer, more is likely waiting).
    Data {
        more: bool,
    },
    End,
    Failed(bollard::errors::Error),
}

/// Where the engine's API is reached directly: its unix socket, and the API version the client
/// negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    socket: PathBuf,
    version: String,
}

impl Endpoint {
    /// As the client connects (DOCKER_HOST naming a unix socket, else the default socket);
    /// `None` when the engine is reached otherwise (then bollard reads the streams).
    fn of(docker: &Docker, docker_host: Option<&str>) -> Option<Endpoint> {
        let socket = match docker_host {
            None | Some("") => "/var/run/docker.sock",
            Some(host) => host.strip_prefix("unix://")?,
        };
        let v = docker.client_version();
        Some(Endpoint {
            socket: PathBuf::from(socket),
            version: format!("{}.{}", v.major_version, v.minor_version),
        })
    }
}

/// A `logs` stream.
enum Source<'a> {
    /// Read straight from the engine's socket.
    Raw(RawLogs),
    /// Through bollard (an engine not on a unix socket).
    Api(futures_util::stream::BoxStream<'a, Result<LogOutput, bollard::errors::Error>>),
}

impl Source<'_> {
    /// Wait for more of the stream and hand it to `lines` (cancel-safe: nothing is lost if
    /// dropped while waiting).
    async fn next(
        &mut self,
        lines: &mut Lines,
        target: &Target,
        out: &mut Vec<pb::LogRecord>,
    ) -> Chunk {
        match self {
            Source::Raw(raw) => raw.next(lines, target, out).await,
            Source::Api(stream) => {
                let mut next = stream.next().await;
                // Take every frame already there (up to a bound).
                loop {
                    match next {
                        None => return Chunk::End,
                        Some(Err(e)) => return Chunk::Failed(e),
                        Some(Ok(LogOutput::StdOut { message })) => {
                            lines.push(Kind::Out, &message, target, out);
                        }
                        Some(Ok(LogOutput::StdErr { message })) => {
                            lines.push(Kind::Err, &message, target, out);
                        }
                        Some(Ok(LogOutput::Console { message })) => {
                            lines.push_raw(&message, target, out);
                        }
                        Some(Ok(LogOutput::StdIn { .. })) => {}
                    }
                    if out.len() >= DRAIN_RECORDS {
                        return Chunk::Data { more: true };
                    }
                    match stream.next().now_or_never() {
                        Some(more) => next = more,
                        // bollard hands frames over from its connection task one by one, so
                        // waiting here would not gather more: read again at once.
                        None => return Chunk::Data { more: true },
                    }
                }
            }
        }
    }
}

/// Bytes read at once from a log stream.
const READ_SPACE: usize = 32 * 1024;
/// The largest frame accepted (Docker's are at most 16 KiB and a timestamp).
const MAX_FRAME: usize = 1024 * 1024;
/// The longest response head accepted.
const MAX_HEAD: usize = 16 * 1024;
/// How long the engine may take to answer a `logs` request.
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// A `logs` stream read from the engine's unix socket over HTTP/1.0, so that the body is the
/// stream itself (no chunked encoding) and ends with the connection. One read takes all the
/// stream has gathered: with a busy container, many lines per system call.
struct RawLogs {
    stream: tokio::net::UnixStream,
    buf: Vec<u8>,
    tty: bool,
    /// The response's first bytes, read with its head, are not handed on yet.
    pending: bool,
}

impl RawLogs {
    async fn open(
        endpoint: &Endpoint,
        id: &str,
        since: i64,
        tty: bool,
    ) -> Result<RawLogs, bollard::errors::Error> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let protocol = |message: &str| bollard::errors::Error::IOError {
            err: std::io::Error::new(std::io::ErrorKind::InvalidData, message.to_string()),
        };
        let timed_out = || bollard::errors::Error::IOError {
            err: std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the engine did not answer a logs request",
            ),
        };
        let mut stream = tokio::net::UnixStream::connect(&endpoint.socket).await?;
        let request = format!(
            "GET /v{}/containers/{id}/logs?follow=1&stdout=1&stderr=1&timestamps=1&since={since} \
             HTTP/1.0\r\nHost: docker\r\n\r\n",
            endpoint.version
        );
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::with_capacity(READ_SPACE);
        let head = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > MAX_HEAD {
                return Err(protocol("the engine's answer has no end of head"));
            }
            buf.reserve(READ_SPACE);
            let n = tokio::time::timeout(HEAD_TIMEOUT, stream.read_buf(&mut buf))
                .await
                .map_err(|_| timed_out())??;
            if n == 0 {
                return Err(protocol("the engine closed the connection"));
            }
        };
        let status = std::str::from_utf8(&buf[..head])
            .ok()
            .and_then(|h| h.split(' ').nth(1))
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| protocol("the engine's answer has no status"))?;
        if status != 200 {
            // Docker's error, as JSON, to the end of the connection.
            while buf.len() < head + 64 * 1024 {
                buf.reserve(READ_SPACE);
                match tokio::time::timeout(HEAD_TIMEOUT, stream.read_buf(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {}
                    _ => break,
                }
            }
            let body = &buf[head..];
            let message = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("message")?.as_str().map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
            return Err(bollard::errors::Error::DockerResponseServerError {
                status_code: status,
                message,
            });
        }
        buf.drain(..head);
        Ok(RawLogs {
            stream,
            buf,
            tty,
            pending: true,
        })
    }

    async fn next(
        &mut self,
        lines: &mut Lines,
        target: &Target,
        out: &mut Vec<pb::LogRecord>,
    ) -> Chunk {
        use tokio::io::AsyncReadExt;
        let mut more = false;
        if !std::mem::take(&mut self.pending) || self.buf.is_empty() {
            if self.buf.capacity() - self.buf.len() < READ_SPACE / 2 {
                self.buf.reserve(READ_SPACE);
            }
            let space = self.buf.capacity() - self.buf.len();
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) => return Chunk::End,
                Ok(n) => more = n == space,
                Err(e) => return Chunk::Failed(e.into()),
            }
        }
        if self.tty {
            lines.push_raw(&self.buf, target, out);
            self.buf.clear();
        } else {
            let at = match demux(&self.buf, lines, target, out) {
                Ok(at) => at,
                Err(e) => return Chunk::Failed(e),
            };
            self.buf.drain(..at);
        }
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_SPACE {
            self.buf = Vec::new();
        }
        Chunk::Data { more }
    }
}

async fn send(
    tx: &mpsc::Sender<pb::LogRecord>,
    records: &mut Vec<pb::LogRecord>,
) -> Result<(), mpsc::error::SendError<pb::LogRecord>> {
    for record in records.drain(..) {
        tx.send(record).await?;
    }
    Ok(())
}

/// Hand the complete frames at the start of `buf` to `lines` (Docker's multiplexed stream: an
/// 8-byte header — the stream, three zero bytes, the payload's length big-endian — then the
/// payload); returns how many bytes were taken.
fn demux(
    buf: &[u8],
    lines: &mut Lines,
    target: &Target,
    out: &mut Vec<pb::LogRecord>,
) -> Result<usize, bollard::errors::Error> {
    let mut at = 0;
    while let Some(header) = buf.get(at..at + 8) {
        let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
        if size > MAX_FRAME {
            return Err(bollard::errors::Error::IOError {
                err: std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("a log frame of {size} bytes"),
                ),
            });
        }
        let Some(payload) = buf.get(at + 8..at + 8 + size) else {
            break;
        };
        match header[0] {
            1 => lines.push(Kind::Out, payload, target, out),
            2 => lines.push(Kind::Err, payload, target, out),
            // The engine's own error, in the stream.
            3 => {
                return Err(bollard::errors::Error::IOError {
                    err: std::io::Error::other(String::from_utf8_lossy(payload).trim().to_string()),
                });
            }
            _ => {}
        }
        at += 8 + size;
    }
    Ok(at)
}

/// Notices a follow stream that stopped delivering while the container's json-file log kept
/// changing (Docker's follow can lose the file at a rotation).
struct StallWatch {
    path: Option<PathBuf>,
    /// The file's length and modification time when the stream was last found silent.
    last: Option<(u64, SystemTime)>,
}

impl StallWatch {
    fn new(path: Option<PathBuf>) -> Self {
        StallWatch { path, last: None }
    }

    fn data(&mut self) {
        self.last = None;
    }

    /// The stream has been silent for a while: is the file changing all the same?
    fn silent(&mut self) -> bool {
        let Some(path) = &self.path else { return false };
        let Ok(meta) = std::fs::metadata(path) else {
            return false;
        };
        let now = (meta.len(), meta.modified().unwrap_or(UNIX_EPOCH));
        let stalled = self.last.is_some_and(|last| last != now);
        self.last = Some(now);
        stalled
    }
}

/// What every record of a container carries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    stack: String,
    service: String,
    number: u32,
    container: String,
    container_id: String,
}

impl Target {
    /// From a container's labels, if it is one of this agent's (`None` otherwise).
    fn new(
        labels: &HashMap<String, String>,
        prefix: &str,
        name: &str,
        id: String,
    ) -> Option<Target> {
        let stack = stack_of(labels, prefix)?;
        Some(Target {
            stack: stack.to_string(),
            service: labels.get(labels::SERVICE).cloned().unwrap_or_default(),
            number: labels
                .get(labels::NUMBER)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0),
            container: name.trim_start_matches('/').to_string(),
            container_id: id,
        })
    }

    fn record(
        &self,
        time_unix_nanos: i64,
        stream: pb::LogStream,
        line: Vec<u8>,
        truncated: u64,
    ) -> pb::LogRecord {
        pb::LogRecord {
            time_unix_nanos,
            stack: self.stack.clone(),
            service: self.service.clone(),
            number: self.number,
            container: self.container.clone(),
            container_id: self.container_id.clone(),
            stream: stream as i32,
            line,
            truncated,
            ..Default::default()
        }
    }
}

/// The stack of a managed container of this agent: its compose project without the prefix.
pub(crate) fn stack_of<'a>(labels: &'a HashMap<String, String>, prefix: &str) -> Option<&'a str> {
    labels.get(labels::MANAGED)?;
    let stack = labels.get(labels::PROJECT)?.strip_prefix(prefix)?;
    (!stack.is_empty()).then_some(stack)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Out,
    Err,
}

/// Turns one `logs` stream into lines: timestamps read, Docker's pieces of a long line joined,
/// lines cut at [`MAX_LOG_LINE`], the lines at or before the cursor the stream was opened at
/// dropped, and the cursor moved past every line kept.
///
/// A stream comes as frames ([`Lines::push`]: each a line or a piece of one, timestamped) or,
/// from a TTY, as raw bytes ([`Lines::push_raw`], cut anywhere): `<timestamp> <line>\n`, a line
/// over 16 KiB carrying its timestamp again at every 16 KiB.
struct Lines {
    tty: bool,
    out: Pending,
    err: Pending,
    skip: Skip,
    cursor: Cursor,
    raw: Raw,
}

/// The line a stream is in the middle of.
struct Pending {
    open: bool,
    /// Whether the line is past the cursor (decided at its first piece).
    keep: bool,
    time: i64,
    /// Its timestamp as Docker wrote it (repeated at every 16 KiB of a TTY's line).
    stamp: [u8; MAX_STAMP],
    stamp_len: usize,
    /// Bytes of the line so far, kept or cut.
    total: u64,
    last_byte: u8,
    /// The kept bytes, at most MAX_LOG_LINE.
    buf: Vec<u8>,
}

impl Default for Pending {
    fn default() -> Self {
        Pending {
            open: false,
            keep: false,
            time: 0,
            stamp: [0; MAX_STAMP],
            stamp_len: 0,
            total: 0,
            last_byte: 0,
            buf: Vec::new(),
        }
    }
}

impl Pending {
    fn start(&mut self, time: i64, stamp: &[u8], keep: bool) {
        self.open = true;
        self.keep = keep;
        self.time = time;
        let n = stamp.len().min(MAX_STAMP);
        self.stamp[..n].copy_from_slice(&stamp[..n]);
        self.stamp_len = n;
        self.total = 0;
        self.last_byte = 0;
        self.buf.clear();
    }

    fn take(&mut self, bytes: &[u8]) {
        if let Some(&last) = bytes.last() {
            self.last_byte = last;
        }
        if self.keep {
            let room = MAX_LOG_LINE.saturating_sub(self.buf.len());
            self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        self.total += bytes.len() as u64;
    }
}

/// Where a TTY's raw stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// At the start of a line: its timestamp comes.
    LineStart,
    /// In a line.
    Content,
    /// At a 16 KiB piece of a long line: the line's timestamp (and a space) may come again.
    Boundary,
}

/// The state of a TTY's raw stream between reads.
struct Raw {
    phase: Phase,
    /// The bytes of a timestamp not complete yet.
    probe: [u8; MAX_STAMP + 1],
    probe_len: usize,
    /// The line length at which the last 16 KiB boundary was passed.
    boundary_done: u64,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            phase: Phase::LineStart,
            probe: [0; MAX_STAMP + 1],
            probe_len: 0,
            boundary_done: 0,
        }
    }
}

/// Drops the lines a stream opened at a cursor repeats: those before its time, and the first
/// `at_time` ones at it. Once a line is kept, every later one is.
#[derive(Debug, Clone, Copy)]
struct Skip {
    time: i64,
    equal: u32,
    passed: bool,
}

impl Skip {
    fn new(cursor: Cursor) -> Self {
        Skip {
            time: cursor.time_unix_nanos,
            equal: cursor.at_time,
            passed: false,
        }
    }

    fn keep(&mut self, time: i64) -> bool {
        if self.passed {
            return true;
        }
        if time < self.time {
            return false;
        }
        if time == self.time && self.equal > 0 {
            self.equal -= 1;
            return false;
        }
        self.passed = true;
        true
    }
}

impl Lines {
    fn new(tty: bool, cursor: Cursor) -> Self {
        Lines {
            tty,
            out: Pending::default(),
            err: Pending::default(),
            skip: Skip::new(cursor),
            cursor,
            raw: Raw::default(),
        }
    }

    fn pending(&mut self, kind: Kind) -> &mut Pending {
        match kind {
            Kind::Out => &mut self.out,
            Kind::Err => &mut self.err,
        }
    }

    /// Take one frame: `<timestamp> <line>\n`, or a piece of a line (no newline; the next
    /// frame of the stream continues it, with the same timestamp).
    fn push(&mut self, kind: Kind, frame: &[u8], target: &Target, out: &mut Vec<pb::LogRecord>) {
        let mut rest = frame;
        let mut at_frame_start = true;
        while !rest.is_empty() {
            let pending = match kind {
                Kind::Out => &mut self.out,
                Kind::Err => &mut self.err,
            };
            if !pending.open {
                let (time, stamp, body) = match split_stamp(rest) {
                    Some(split) => split,
                    // Not a timestamp after all: keep the whole line, timed now.
                    None => (unix_nanos_now(), &b""[..], rest),
                };
                pending.start(time, stamp, self.skip.keep(time));
                rest = body;
            } else if at_frame_start {
                // The next piece of a long line repeats the line's timestamp. A frame stamped
                // with another time is the next line: the open one ended without its newline
                // (a line of an exact multiple of 16 KiB, whose newline Docker sent as an empty
                // piece or not at all).
                match split_stamp(rest) {
                    Some((time, _, _)) if time != pending.time => {
                        self.emit(kind, target, out);
                        continue;
                    }
                    Some((_, _, body)) => rest = body,
                    None => {}
                }
            }
            at_frame_start = false;
            let newline = rest.iter().position(|&b| b == b'\n');
            let segment = &rest[..newline.unwrap_or(rest.len())];
            rest = match newline {
                Some(i) => &rest[i + 1..],
                None => &[],
            };
            if newline.is_some() && pending.total == 0 && segment.len() <= MAX_LOG_LINE {
                // The whole line in one piece (the usual case): no copy through the buffer.
                pending.open = false;
                if pending.keep {
                    let time = pending.time;
                    out.push(target.record(time, stream(kind), segment.to_vec(), 0));
                    self.advance(time);
                }
                continue;
            }
            pending.take(segment);
            if newline.is_some() {
                self.emit(kind, target, out);
            }
        }
    }

    /// Take a TTY's raw bytes, cut anywhere.
    fn push_raw(&mut self, mut data: &[u8], target: &Target, out: &mut Vec<pb::LogRecord>) {
        while !data.is_empty() {
            data = match self.raw.phase {
                Phase::LineStart => self.raw_stamp(data, target, out),
                Phase::Content => self.raw_content(data, target, out),
                Phase::Boundary => self.raw_boundary(data, target, out),
            };
        }
    }

    /// Gather a line's timestamp (up to the first space); returns the rest.
    fn raw_stamp<'d>(
        &mut self,
        data: &'d [u8],
        target: &Target,
        out: &mut Vec<pb::LogRecord>,
    ) -> &'d [u8] {
        let raw = &mut self.raw;
        let room = raw.probe.len() - raw.probe_len;
        let head = &data[..data.len().min(room)];
        let end = head.iter().position(|&b| b == b' ' || b == b'\n');
        let taken = end.map_or(head.len(), |i| i + 1);
        raw.probe[raw.probe_len..raw.probe_len + taken].copy_from_slice(&head[..taken]);
        raw.probe_len += taken;
        let rest = &data[taken..];
        if end.is_none() && raw.probe_len < raw.probe.len() {
            return rest;
        }
        let probe = raw.probe;
        let probe = &probe[..raw.probe_len];
        raw.probe_len = 0;
        raw.boundary_done = 0;
        raw.phase = Phase::Content;
        match probe
            .strip_suffix(b" ")
            .and_then(|stamp| Some((parse_rfc3339_nanos(stamp)?, stamp)))
        {
            Some((time, stamp)) => {
                let keep = self.skip.keep(time);
                self.out.start(time, stamp, keep);
            }
            None => {
                // Not a timestamp: the bytes are the line's, timed now.
                let time = unix_nanos_now();
                let keep = self.skip.keep(time);
                self.out.start(time, b"", keep);
                let mut probe = probe;
                while !probe.is_empty() {
                    probe = self.raw_content(probe, target, out);
                }
            }
        }
        rest
    }

    /// Take a line's bytes up to its end or its next 16 KiB boundary; returns the rest.
    fn raw_content<'d>(
        &mut self,
        data: &'d [u8],
        target: &Target,
        out: &mut Vec<pb::LogRecord>,
    ) -> &'d [u8] {
        let total = self.out.total;
        if total > 0 && total.is_multiple_of(PARTIAL) && self.raw.boundary_done != total {
            self.raw.phase = Phase::Boundary;
            return data;
        }
        let room = usize::try_from(PARTIAL - total % PARTIAL).unwrap_or(usize::MAX);
        let scan = &data[..data.len().min(room)];
        match scan.iter().position(|&b| b == b'\n') {
            Some(i) => {
                let segment = &scan[..i];
                if total == 0 && segment.len() <= MAX_LOG_LINE {
                    // The whole line at once: no copy through the buffer.
                    self.out.open = false;
                    if self.out.keep {
                        let line = segment.strip_suffix(b"\r").unwrap_or(segment);
                        let time = self.out.time;
                        out.push(target.record(time, pb::LogStream::Stdout, line.to_vec(), 0));
                        self.advance(time);
                    }
                } else {
                    self.out.take(segment);
                    self.emit(Kind::Out, target, out);
                }
                self.raw.phase = Phase::LineStart;
                &data[i + 1..]
            }
            None => {
                self.out.take(scan);
                &data[scan.len()..]
            }
        }
    }

    /// At a 16 KiB boundary: drop the line's timestamp and space if they come again; returns
    /// the rest.
    fn raw_boundary<'d>(
        &mut self,
        data: &'d [u8],
        target: &Target,
        out: &mut Vec<pb::LogRecord>,
    ) -> &'d [u8] {
        let mut expected = [0u8; MAX_STAMP + 1];
        let len = self.out.stamp_len;
        expected[..len].copy_from_slice(&self.out.stamp[..len]);
        expected[len] = b' ';
        let expected = &expected[..=len];
        let seen = self.raw.probe_len;
        let matched = data
            .iter()
            .zip(&expected[seen..])
            .take_while(|(a, b)| a == b)
            .count();
        if len > 0 && seen + matched == expected.len() {
            // The repeated timestamp: not the line's.
            self.raw.probe_len = 0;
            self.raw.boundary_done = self.out.total;
            self.raw.phase = Phase::Content;
            return &data[matched..];
        }
        if len > 0 && matched == data.len() {
            // So far so good: wait for the rest.
            self.raw.probe_len += matched;
            return &[];
        }
        // Not the timestamp: what matched so far is the line's.
        self.raw.probe_len = 0;
        self.raw.boundary_done = self.out.total;
        self.raw.phase = Phase::Content;
        let mut seen_bytes = &expected[..seen];
        while !seen_bytes.is_empty() {
            seen_bytes = self.raw_content(seen_bytes, target, out);
        }
        data
    }

    /// Every line still open is complete (the stream ended and the container is stopped).
    fn finish(&mut self, target: &Target, out: &mut Vec<pb::LogRecord>) {
        if self.tty {
            match self.raw.phase {
                Phase::LineStart if self.raw.probe_len > 0 => {
                    // A last line shorter than a timestamp: end it as if a newline came.
                    self.push_raw(b"\n", target, out);
                }
                Phase::Boundary if self.raw.probe_len > 0 => {
                    let seen = self.raw.probe_len;
                    let stamp = self.out.stamp;
                    self.raw.probe_len = 0;
                    self.raw.boundary_done = self.out.total;
                    self.raw.phase = Phase::Content;
                    let mut bytes = &stamp[..seen.min(MAX_STAMP)];
                    while !bytes.is_empty() {
                        bytes = self.raw_content(bytes, target, out);
                    }
                }
                _ => {}
            }
            self.raw = Raw::default();
        }
        for kind in [Kind::Out, Kind::Err] {
            if self.pending(kind).open {
                self.emit(kind, target, out);
            }
        }
    }

    fn emit(&mut self, kind: Kind, target: &Target, out: &mut Vec<pb::LogRecord>) {
        let tty = self.tty;
        let pending = self.pending(kind);
        pending.open = false;
        if !pending.keep {
            return;
        }
        let mut line = pending.buf.clone();
        let mut truncated = pending.total - line.len() as u64;
        if tty && pending.last_byte == b'\r' {
            if truncated > 0 {
                truncated -= 1;
            } else {
                line.pop();
            }
        }
        // Do not hold a long line's buffer for good.
        if pending.buf.capacity() > PARTIAL as usize {
            pending.buf = Vec::new();
        } else {
            pending.buf.clear();
        }
        let time = pending.time;
        out.push(target.record(time, stream(kind), line, truncated));
        self.advance(time);
    }

    fn advance(&mut self, time: i64) {
        if time > self.cursor.time_unix_nanos {
            self.cursor = Cursor {
                time_unix_nanos: time,
                at_time: 1,
            };
        } else if time == self.cursor.time_unix_nanos {
            self.cursor.at_time = self.cursor.at_time.saturating_add(1);
        }
    }
}

fn stream(kind: Kind) -> pb::LogStream {
    match kind {
        Kind::Out => pb::LogStream::Stdout,
        Kind::Err => pb::LogStream::Stderr,
    }
}

/// Split `<RFC 3339 timestamp> <rest>` into the time (ns since the epoch), the timestamp's
/// text and the rest; `None` if the frame does not start with a timestamp.
fn split_stamp(frame: &[u8]) -> Option<(i64, &[u8], &[u8])> {
    let head = &frame[..frame.len().min(MAX_STAMP + 1)];
    let space = head.iter().position(|&b| b == b' ')?;
    let stamp = &frame[..space];
    let time = parse_rfc3339_nanos(stamp)?;
    Some((time, stamp, &frame[space + 1..]))
}

/// Parse an RFC 3339 timestamp (`2024-05-01T12:34:56.123456789Z`, any number of fraction
/// digits, `Z` or `±hh:mm`) into nanoseconds since the Unix epoch.
pub(crate) fn parse_rfc3339_nanos(s: &[u8]) -> Option<i64> {
    fn number(s: &[u8]) -> Option<i64> {
        if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(s.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0')))
    }
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    if !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    let year = number(&s[0..4])?;
    let month = number(&s[5..7])?;
    let day = number(&s[8..10])?;
    let hour = number(&s[11..13])?;
    let minute = number(&s[14..16])?;
    let second = number(&s[17..19])?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if s[i] == b'.' {
        i += 1;
        let digits = s[i..].iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 {
            return None;
        }
        for (k, &d) in s[i..i + digits].iter().enumerate() {
            if k < 9 {
                nanos = nanos * 10 + i64::from(d - b'0');
            }
        }
        for _ in digits..9 {
            nanos *= 10;
        }
        i += digits;
    }
    let offset = match s.get(i..)? {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let hours = number(&[*h1, *h2])?;
            let minutes = number(&[*m1, *m2])?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' { -offset } else { offset }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - offset;
    seconds.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn unix_nanos_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The one writer: appends what the followers send to the spool, in batches, on the blocking
/// pool; ends when every sender is gone.
async fn write_records(mut rx: mpsc::Receiver<pb::LogRecord>, spool: Arc<Spool>) {
    let mut lost = 0u64;
    let mut last_warning: Option<Instant> = None;
    let mut batch = Vec::new();
    loop {
        if rx.recv_many(&mut batch, BATCH_RECORDS).await == 0 {
            return;
        }
        // Let records gather, then take what is there: the writer wakes once per batch, not
        // once per record.
        if batch.len() < BATCH_RECORDS {
            tokio::time::sleep(BATCH_WAIT).await;
            let room = BATCH_RECORDS - batch.len();
            let _ = rx.recv_many(&mut batch, room).now_or_never();
        }
        let records = std::mem::take(&mut batch);
        let count = records.len() as u64;
        let spool = spool.clone();
        let error = match tokio::task::spawn_blocking(move || spool.append(records)).await {
            Ok(Ok(_)) => continue,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        lost += count;
        if last_warning.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
            tracing::warn!("logs: appending to the spool: {error}; {lost} log lines lost so far");
            last_warning = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        Target {
            stack: "shop".into(),
            service: "web".into(),
            number: 1,
            container: "shop-web-1".into(),
            container_id: "abc".into(),
        }
    }

    const T0: &str = "2024-05-01T12:34:56.123456789Z";

    fn t0() -> i64 {
        1_714_566_896_123_456_789
    }

    fn frame(stamp: &str, body: &[u8]) -> Vec<u8> {
        let mut f = stamp.as_bytes().to_vec();
        f.push(b' ');
        f.extend_from_slice(body);
        f
    }

    fn lines_of(records: &[pb::LogRecord]) -> Vec<(Vec<u8>, u64)> {
        records
            .iter()
            .map(|r| (r.line.clone(), r.truncated))
            .collect()
    }

    #[test]
    fn timestamps_parse_to_unix_nanos() {
        assert_eq!(parse_rfc3339_nanos(T0.as_bytes()), Some(t0()));
        assert_eq!(parse_rfc3339_nanos(b"1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_nanos(b"1970-01-01T00:00:01.5Z"),
            Some(1_500_000_000)
        );
        // An offset east of UTC is earlier in UTC.
        assert_eq!(parse_rfc3339_nanos(b"1970-01-01T02:00:00+02:00"), Some(0));
        assert_eq!(parse_rfc3339_nanos(b"1969-12-31T23:00:00-01:00"), Some(0));
        // More than nine fraction digits: the rest is below a nanosecond.
        assert_eq!(
            parse_rfc3339_nanos(b"1970-01-01T00:00:00.0000000019Z"),
            Some(1)
        );
        assert_eq!(
            parse_rfc3339_nanos(b"2000-02-29T00:00:00Z"),
            Some(951_782_400_000_000_000)
        );
        for bad in [
            &b""[..],
            b"hello world",
            b"2024-05-01T12:34:56",
            b"2024-05-01T12:34:56.Z",
            b"2024-13-01T12:34:56Z",
            b"2024-05-01T12:34:56+0200",
            b"2024-05-01T12:34:56Zjunk",
            b"2024-05-01X12:34:56Z",
        ] {
            assert_eq!(parse_rfc3339_nanos(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn frames_become_lines_with_their_time_and_stream() {
        let mut lines = Lines::new(false, Cursor::default());
        let mut out = Vec::new();
        lines.push(Kind::Out, &frame(T0, b"hello\n"), &target(), &mut out);
        lines.push(Kind::Err, &frame(T0, b"oops \xff\n"), &target(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].line, b"hello");
        assert_eq!(out[0].time_unix_nanos, t0());
        assert_eq!(out[0].stream, pb::LogStream::Stdout as i32);
        assert_eq!(out[0].container, "shop-web-1");
        assert_eq!(out[0].stack, "shop");
        assert_eq!(out[1].line, b"oops \xff");
        assert_eq!(out[1].stream, pb::LogStream::Stderr as i32);
        // Several lines in one frame, and an empty line.
        out.clear();
        let mut f = frame(T0, b"a\n");
        f.extend(frame(T0, b"\n"));
        lines.push(Kind::Out, &f, &target(), &mut out);
        assert_eq!(lines_of(&out), [(b"a".to_vec(), 0), (Vec::new(), 0)]);
    }

    #[test]
    fn a_line_without_a_timestamp_is_kept_whole() {
        let mut lines = Lines::new(false, Cursor::default());
        let mut out = Vec::new();
        lines.push(Kind::Out, b"no stamp here\n", &target(), &mut out);
        assert_eq!(out[0].line, b"no stamp here");
        assert!(out[0].time_unix_nanos > 0);
    }

    #[test]
    fn partial_frames_are_joined() {
        let mut lines = Lines::new(false, Cursor::default());
        let mut out = Vec::new();
        let first = vec![b'a'; PARTIAL as usize];
        let second = vec![b'b'; PARTIAL as usize];
        lines.push(Kind::Out, &frame(T0, &first), &target(), &mut out);
        // Another stream's line in between does not mix in.
        lines.push(Kind::Err, &frame(T0, b"other\n"), &target(), &mut out);
        lines.push(Kind::Out, &frame(T0, &second), &target(), &mut out);
        lines.push(Kind::Out, &frame(T0, b"end\n"), &target(), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].line, b"other");
        let mut want = first.clone();
        want.extend(&second);
        want.extend(b"end");
        assert_eq!(out[1].line, want);
        assert_eq!(out[1].truncated, 0);
        assert_eq!(out[1].time_unix_nanos, t0());
    }

    #[test]
    fn a_line_of_whole_pieces_ends_where_the_next_timestamp_starts() {
        // 1 MiB exactly: 64 pieces of 16 KiB, and no newline piece before the next line.
        let mut lines = Lines::new(false, Cursor::default());
        let mut out = Vec::new();
        let piece = vec![b'x'; PARTIAL as usize];
        for _ in 0..64 {
            lines.push(Kind::Out, &frame(T0, &piece), &target(), &mut out);
        }
        let t1 = "2026-12-01T10:00:01.000000002Z";
        lines.push(Kind::Out, &frame(t1, b"next line\n"), &target(), &mut out);
        assert_eq!(out.len(), 2, "two lines");
        assert_eq!(out[0].line.len(), MAX_LOG_LINE);
        assert_eq!(out[0].truncated + MAX_LOG_LINE as u64, 64 * PARTIAL);
        assert_eq!(out[1].line, b"next line");
    }

    #[test]
    fn long_lines_are_cut_and_say_how_much() {
        let mut lines = Lines::new(false, Cursor::default());
        let mut out = Vec::new();
        let piece = vec![b'x'; PARTIAL as usize];
        for _ in 0..5 {
            lines.push(Kind::Out, &frame(T0, &piece), &target(), &mut out);
            assert!(lines.out.buf.len() <= MAX_LOG_LINE);
        }
        lines.push(Kind::Out, &frame(T0, b"yz\n"), &target(), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line.len(), MAX_LOG_LINE);
        assert_eq!(out[0].truncated, (5 * PARTIAL + 2) - MAX_LOG_LINE as u64);
        // The long line's buffer is not kept.
        assert_eq!(lines.out.buf.capacity(), 0);
    }

    #[test]
    fn a_tty_line_loses_its_carriage_return_and_repeated_stamps() {
        // A TTY's raw stream, as Docker sends it: a long line carries its timestamp again at
        // every 16 KiB piece.
        let long: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        let exact = vec![b'e'; PARTIAL as usize];
        let mut raw = frame(T0, b"hello\r\n");
        let mut long_line = Vec::new();
        for (k, piece) in long.chunks(PARTIAL as usize).enumerate() {
            if k > 0 {
                long_line.extend(T0.as_bytes());
                long_line.push(b' ');
            }
            long_line.extend(piece);
        }
        long_line.extend(b"\r\n");
        raw.extend(frame(T0, &long_line));
        // A line of exactly 16 KiB: its newline comes as the next piece, stamped.
        raw.extend(frame(T0, &exact));
        raw.extend(frame(T0, b"\r\n"));
        // A line without a timestamp, and an empty one.
        raw.extend(b"plain\r\n");
        raw.extend(frame(T0, b"\r\n"));
        let want = [
            b"hello".to_vec(),
            long.clone(),
            exact.clone(),
            b"plain".to_vec(),
            Vec::new(),
        ];
        // However the bytes are cut.
        for cut in [raw.len(), 1, 2, 7, 31, 32, 1000, 16 * 1024 + 13] {
            let mut lines = Lines::new(true, Cursor::default());
            let mut out = Vec::new();
            for piece in raw.chunks(cut) {
                lines.push_raw(piece, &target(), &mut out);
            }
            let got: Vec<Vec<u8>> = out.iter().map(|r| r.line.clone()).collect();
            assert_eq!(got, want, "cut every {cut} bytes");
            assert!(out.iter().all(|r| r.truncated == 0));
            assert_eq!(out[1].time_unix_nanos, t0());
            assert!(out.iter().all(|r| r.stream == pb::LogStream::Stdout as i32));
        }
        // A cut TTY line does not count its `\r` as cut.
        let mut lines = Lines::new(true, Cursor::default());
        let mut out = Vec::new();
        let mut raw = Vec::new();
        for k in 0..5 {
            raw.extend(T0.as_bytes());
            raw.push(b' ');
            if k == 0 {
                // (the first piece's stamp starts the line)
            }
            raw.extend(vec![b'x'; PARTIAL as usize]);
        }
        raw.extend(b"\r\n");
        for piece in raw.chunks(5000) {
            lines.push_raw(piece, &target(), &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].line.len(), MAX_LOG_LINE);
        assert_eq!(out[0].truncated, 5 * PARTIAL - MAX_LOG_LINE as u64);
        // The last line of a stopped TTY container may have no newline.
        let mut lines = Lines::new(true, Cursor::default());
        out.clear();
        lines.push_raw(&frame(T0, b"bye"), &target(), &mut out);
        lines.finish(&target(), &mut out);
        assert_eq!(lines_of(&out), [(b"bye".to_vec(), 0)]);
        // Cut at a 16 KiB boundary in the middle of its repeated timestamp.
        let mut lines = Lines::new(true, Cursor::default());
        out.clear();
        let mut raw = frame(T0, &exact);
        raw.extend(&T0.as_bytes()[..10]);
        lines.push_raw(&raw, &target(), &mut out);
        lines.finish(&target(), &mut out);
        let mut want = exact.clone();
        want.extend(&T0.as_bytes()[..10]);
        assert_eq!(lines_of(&out), [(want, 0)]);
    }

    #[test]
    fn frames_from_the_socket_are_demultiplexed() {
        let mut stream = Vec::new();
        for (kind, body) in [(1u8, &b"out\n"[..]), (2, b"err\n"), (0, b"in\n")] {
            let payload = frame(T0, body);
            stream.push(kind);
            stream.extend([0, 0, 0]);
            stream.extend((payload.len() as u32).to_be_bytes());
            stream.extend(payload);
        }
        let mut lines = Lines::new(false, Cursor::default());
        let mut out = Vec::new();
        let mut buf = Vec::new();
        // Byte by byte: frames are only taken whole.
        for &b in &stream {
            buf.push(b);
            let taken = demux(&buf, &mut lines, &target(), &mut out).unwrap();
            buf.drain(..taken);
        }
        assert!(buf.is_empty());
        let mut error = vec![3, 0, 0, 0, 0, 0, 0, 4];
        error.extend(b"boom");
        assert!(demux(&error, &mut lines, &target(), &mut out).is_err());
        assert!(
            demux(
                &[1, 0, 0, 0, 0xff, 0, 0, 0],
                &mut lines,
                &target(),
                &mut out
            )
            .is_err()
        );
        assert_eq!(
            out.iter()
                .map(|r| (r.line.clone(), r.stream))
                .collect::<Vec<_>>(),
            [
                (b"out".to_vec(), pb::LogStream::Stdout as i32),
                (b"err".to_vec(), pb::LogStream::Stderr as i32)
            ]
        );
    }

    #[test]
    fn the_endpoint_is_the_clients_unix_socket() {
        let docker = Docker::connect_with_unix(
            "unix:///var/run/docker.sock",
            120,
            &bollard::ClientVersion {
                major_version: 1,
                minor_version: 41,
            },
        )
        .unwrap();
        let endpoint = |host| Endpoint::of(&docker, host);
        assert_eq!(
            endpoint(None),
            Some(Endpoint {
                socket: "/var/run/docker.sock".into(),
                version: "1.41".into()
            })
        );
        assert_eq!(
            endpoint(Some("unix:///run/user/1000/docker.sock")).map(|e| e.socket),
            Some("/run/user/1000/docker.sock".into())
        );
        assert_eq!(endpoint(Some("tcp://10.0.0.1:2375")), None);
    }

    #[test]
    fn lines_at_or_before_the_cursor_are_dropped() {
        let t = t0();
        let stamp = |ns: i64| {
            let frac = ns.rem_euclid(1_000_000_000);
            assert_eq!(ns - frac, t - t.rem_euclid(1_000_000_000));
            format!("2024-05-01T12:34:56.{frac:09}Z")
        };
        // Read up to two lines at t: the stream (since = t's second) repeats them.
        let mut lines = Lines::new(
            false,
            Cursor {
                time_unix_nanos: t,
                at_time: 2,
            },
        );
        let mut out = Vec::new();
        for (ns, body) in [
            (t - 5, "before\n"),
            (t, "first at t\n"),
            (t, "second at t\n"),
            (t, "third at t\n"),
            (t + 1, "after\n"),
            // Out of order once past the cursor: kept.
            (t - 1, "late\n"),
        ] {
            lines.push(
                Kind::Out,
                &frame(&stamp(ns), body.as_bytes()),
                &target(),
                &mut out,
            );
        }
        let got: Vec<_> = out.iter().map(|r| r.line.clone()).collect();
        assert_eq!(
            got,
            [b"third at t".to_vec(), b"after".to_vec(), b"late".to_vec()]
        );
        assert_eq!(
            lines.cursor,
            Cursor {
                time_unix_nanos: t + 1,
                at_time: 1
            }
        );
        // A dropped long line is dropped whole, its pieces too.
        let mut lines = Lines::new(
            false,
            Cursor {
                time_unix_nanos: t,
                at_time: 1,
            },
        );
        out.clear();
        lines.push(Kind::Out, &frame(T0, &[b'a'; 100]), &target(), &mut out);
        lines.push(Kind::Out, &frame(T0, b"rest\n"), &target(), &mut out);
        lines.push(Kind::Out, &frame(T0, b"new\n"), &target(), &mut out);
        assert_eq!(lines_of(&out), [(b"new".to_vec(), 0)]);
        assert_eq!(
            lines.cursor,
            Cursor {
                time_unix_nanos: t,
                at_time: 2
            }
        );
    }

    #[test]
    fn the_unfinished_line_of_a_stopped_container_is_complete() {
        let mut lines = Lines::new(false, Cursor::default());
        let mut out = Vec::new();
        lines.push(Kind::Out, &frame(T0, b"no newline"), &target(), &mut out);
        assert!(out.is_empty());
        lines.finish(&target(), &mut out);
        assert_eq!(lines_of(&out), [(b"no newline".to_vec(), 0)]);
    }

    #[test]
    fn stacks_are_projects_of_ours_without_the_prefix() {
        let labels = |project: &str| {
            HashMap::from([
                (labels::MANAGED.to_string(), "true".to_string()),
                (labels::PROJECT.to_string(), project.to_string()),
                (labels::SERVICE.to_string(), "web".to_string()),
                (labels::NUMBER.to_string(), "2".to_string()),
            ])
        };
        assert_eq!(stack_of(&labels("noco-shop"), "noco-"), Some("shop"));
        assert_eq!(stack_of(&labels("shop"), ""), Some("shop"));
        assert_eq!(stack_of(&labels("other-shop"), "noco-"), None);
        assert_eq!(stack_of(&labels("noco-"), "noco-"), None);
        let mut unmanaged = labels("noco-shop");
        unmanaged.remove(labels::MANAGED);
        assert_eq!(stack_of(&unmanaged, "noco-"), None);
        let t = Target::new(
            &labels("noco-shop"),
            "noco-",
            "/noco-shop-web-2",
            "id".into(),
        );
        assert_eq!(
            t,
            Some(Target {
                stack: "shop".into(),
                service: "web".into(),
                number: 2,
                container: "noco-shop-web-2".into(),
                container_id: "id".into(),
            })
        );
    }
}

/// Against the real engine (ignored by default: `cargo test -p noco-agent --release telemetry::
/// collect -- --ignored --nocapture`). The workload is a small C program built statically with
/// `gcc` into a `FROM scratch` image (no registry needed), or the image `NOCO_LOG_TEST_IMAGE`
/// names, whose entrypoint takes the same arguments.
#[cfg(test)]
mod docker_tests {
    #![allow(clippy::print_stderr)]
    use std::time::Duration;

    use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
    use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};

    use super::*;
    use crate::telemetry::spool::SpoolConfig;

    /// `lines <count, 0: forever> <per second> <length> [pause]`, `long <bytes> [pause]`,
    /// `nonl`, `sleep`. Every fourth line of `lines` goes to stderr.
    const LOGGEN_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <signal.h>
static void term(int s){ (void)s; _exit(0); }
int main(int argc, char **argv) {
  signal(SIGTERM, term);
  setvbuf(stdout, NULL, _IOLBF, 0);
  setvbuf(stderr, NULL, _IOLBF, 0);
  const char *mode = argc > 1 ? argv[1] : "sleep";
  if (!strcmp(mode, "lines")) {
    long count = argc > 2 ? atol(argv[2]) : 10;      /* 0 = forever */
    long rate = argc > 3 ? atol(argv[3]) : 10;       /* lines per second */
    long len = argc > 4 ? atol(argv[4]) : 60;
    char *pad = malloc(len + 1); memset(pad, 'x', len); pad[len] = 0;
    struct timespec ts = {0, rate > 0 ? 1000000000L / rate : 0};
    long batch = rate > 1000 ? rate / 1000 : 1;
    if (rate > 1000) ts.tv_nsec = 1000000;
    for (long i = 0; count == 0 || i < count; i++) {
      FILE *f = (i % 4 == 3) ? stderr : stdout;
      fprintf(f, "line %ld %s\n", i, pad);
      if ((i + 1) % batch == 0 && rate > 0) nanosleep(&ts, NULL);
    }
    if (argc > 5) pause();
    return 0;
  }
  if (!strcmp(mode, "long")) {
    long len = argc > 2 ? atol(argv[2]) : 40000;
    char *buf = malloc(len);
    for (long i = 0; i < len; i++) buf[i] = 'a' + (i % 26);
    printf("first\n");
    fwrite(buf, 1, len, stdout); printf("\n");
    printf("end\n");
    fflush(stdout);
    if (argc > 3) pause();
    return 0;
  }
  if (!strcmp(mode, "nonl")) { printf("no newline at end"); fflush(stdout); return 0; }
  for (;;) pause();
}
"#;

    /// The workload's image, built once per test process.
    fn image() -> String {
        static IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        IMAGE
            .get_or_init(|| {
                if let Ok(image) = std::env::var("NOCO_LOG_TEST_IMAGE") {
                    return image;
                }
                let dir = tempfile::tempdir().unwrap();
                std::fs::write(dir.path().join("gen.c"), LOGGEN_C).unwrap();
                std::fs::write(
                    dir.path().join("Dockerfile"),
                    "FROM scratch\nCOPY gen /gen\nENTRYPOINT [\"/gen\"]\n",
                )
                .unwrap();
                let run = |cmd: &mut std::process::Command| {
                    let out = cmd.current_dir(dir.path()).output().unwrap();
                    assert!(out.status.success(), "{cmd:?}: {out:?}");
                };
                run(std::process::Command::new("gcc")
                    .args(["-O2", "-static", "-o", "gen", "gen.c"]));
                run(std::process::Command::new("docker")
                    .args(["build", "-q", "-t", "noco-loggen:test", "."])
                    .env("DOCKER_BUILDKIT", "0"));
                "noco-loggen:test".to_string()
            })
            .clone()
    }

    const PREFIX: &str = "noco-logcost-";

    #[allow(clippy::too_many_arguments)]
    async fn start(
        docker: &Docker,
        prefix: &str,
        image: &str,
        name: &str,
        cmd: &[&str],
        tty: bool,
        driver: Option<&str>,
        restart_always: bool,
    ) -> String {
        let _ = docker
            .remove_container(
                name,
                Some(RemoveContainerOptionsBuilder::default().force(true).build()),
            )
            .await;
        let labels = HashMap::from([
            (labels::MANAGED.to_string(), "true".to_string()),
            (labels::PROJECT.to_string(), format!("{prefix}t")),
            (labels::SERVICE.to_string(), name.to_string()),
            (labels::NUMBER.to_string(), "1".to_string()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.to_string()),
            cmd: Some(cmd.iter().map(|s| s.to_string()).collect()),
            labels: Some(labels),
            tty: Some(tty),
            host_config: Some(HostConfig {
                log_config: driver.map(|d| HostConfigLogConfig {
                    typ: Some(d.to_string()),
                    config: None,
                }),
                restart_policy: restart_always.then_some(bollard::models::RestartPolicy {
                    name: Some(bollard::models::RestartPolicyNameEnum::ALWAYS),
                    maximum_retry_count: None,
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let opts = CreateContainerOptionsBuilder::default().name(name).build();
        let id = docker.create_container(Some(opts), body).await.unwrap().id;
        docker.start_container(&id, None).await.unwrap();
        id
    }

    fn all_records(spool: &Arc<Spool>) -> Vec<pb::LogRecord> {
        let mut reader = spool.reader(0, 0);
        let mut out = Vec::new();
        loop {
            let batch = reader.next_batch(1 << 20).unwrap();
            if batch.is_empty() {
                return out;
            }
            out.extend(batch);
        }
    }

    async fn wait_for(
        spool: &Arc<Spool>,
        what: impl Fn(&[pb::LogRecord]) -> bool,
    ) -> Vec<pb::LogRecord> {
        for _ in 0..300 {
            let records = all_records(spool);
            if what(&records) {
                return records;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let records = all_records(spool);
        panic!("not there after 30 s: {} records", records.len());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Docker and gcc with a static libc"]
    async fn follows_real_containers() {
        follows(true).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "needs Docker and gcc with a static libc"]
    async fn follows_real_containers_through_bollard() {
        follows(false).await;
    }

    fn spawn_collector(
        docker: &Docker,
        spool: &Arc<Spool>,
        prefix: &str,
        raw: bool,
    ) -> tokio::task::JoinHandle<()> {
        let endpoint = raw.then(|| Endpoint::of(docker, None)).flatten();
        assert_eq!(endpoint.is_some(), raw);
        tokio::spawn(collect(
            docker.clone(),
            spool.clone(),
            prefix.to_string(),
            endpoint,
        ))
    }

    /// Read straight from the socket (`raw`) or through bollard.
    async fn follows(raw: bool) {
        let (prefix, n) = if raw {
            ("noco-logtest-", "lt")
        } else {
            ("noco-logapi-", "lb")
        };
        let image = image();
        let docker = crate::engine::docker::connect().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cfg = SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 64 << 20,
        };
        let spool = Spool::open(cfg.clone()).unwrap();
        // One before the collector starts, the others after.
        let early = start(
            &docker,
            prefix,
            &image,
            &format!("{n}-early"),
            &["lines", "200", "2000", "60"],
            false,
            None,
            false,
        )
        .await;
        let collector = spawn_collector(&docker, &spool, prefix, raw);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let long = start(
            &docker,
            prefix,
            &image,
            &format!("{n}-long"),
            &["long", "100000"],
            false,
            None,
            false,
        )
        .await;
        let tty = start(
            &docker,
            prefix,
            &image,
            &format!("{n}-tty"),
            &["long", "40000"],
            true,
            None,
            false,
        )
        .await;
        let none = start(
            &docker,
            prefix,
            &image,
            &format!("{n}-none"),
            &["sleep"],
            false,
            Some("none"),
            false,
        )
        .await;
        let nonl = start(
            &docker,
            prefix,
            &image,
            &format!("{n}-nonl"),
            &["nonl"],
            false,
            None,
            false,
        )
        .await;
        let of = |records: &[pb::LogRecord], id: &str| -> Vec<pb::LogRecord> {
            records
                .iter()
                .filter(|r| r.container_id == id)
                .cloned()
                .collect()
        };
        let records = wait_for(&spool, |r| {
            of(r, &early).len() == 200
                && of(r, &long).len() == 3
                && of(r, &tty).len() == 3
                && of(r, &none).len() == 1
                && of(r, &nonl).len() == 1
        })
        .await;
        let early_lines = of(&records, &early);
        let mut numbers: Vec<u32> = early_lines
            .iter()
            .map(|r| {
                let text = String::from_utf8_lossy(&r.line);
                text.split(' ').nth(1).unwrap().parse().unwrap()
            })
            .collect();
        numbers.sort();
        assert_eq!(numbers, (0..200).collect::<Vec<_>>());
        let third = early_lines.iter().find(|r| r.line.starts_with(b"line 3 "));
        assert_eq!(third.unwrap().stream, pb::LogStream::Stderr as i32);
        assert_eq!(early_lines[0].stack, "t");
        assert_eq!(early_lines[0].container, format!("{n}-early"));
        let long_lines = of(&records, &long);
        assert_eq!(long_lines[1].line.len(), MAX_LOG_LINE);
        assert_eq!(long_lines[1].truncated, 100_000 - MAX_LOG_LINE as u64);
        assert_eq!(long_lines[2].line, b"end");
        let tty_lines = of(&records, &tty);
        assert_eq!(tty_lines[0].line, b"first");
        let want: Vec<u8> = (0..40_000u32).map(|i| b'a' + (i % 26) as u8).collect();
        assert_eq!(tty_lines[1].line, want);
        assert_eq!(tty_lines[1].truncated, 0);
        let none_line = &of(&records, &none)[0];
        assert_eq!(none_line.stream, pb::LogStream::Noco as i32);
        eprintln!("{}", String::from_utf8_lossy(&none_line.line));
        assert_eq!(of(&records, &nonl)[0].line, b"no newline at end");

        // A restarted collector repeats nothing; a restarted container adds its new lines.
        collector.abort();
        let _ = collector.await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(spool);
        let spool = Spool::open(cfg).unwrap();
        let collector = spawn_collector(&docker, &spool, prefix, raw);
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(all_records(&spool).len(), records.len());
        docker.start_container(&early, None).await.unwrap();
        let after = wait_for(&spool, |r| of(r, &early).len() >= 400).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after_all = all_records(&spool);
        assert_eq!(after_all.len(), after.len());
        assert_eq!(of(&after_all, &early).len(), 400);
        assert_eq!(of(&after_all, &none).len(), 1);

        // A container that keeps restarting: every line of every run.
        let name = &format!("{n}-restarts");
        let looping = start(
            &docker,
            prefix,
            &image,
            name,
            &["lines", "5", "1000", "10"],
            false,
            None,
            true,
        )
        .await;
        tokio::time::sleep(Duration::from_secs(6)).await;
        docker.stop_container(&looping, None).await.unwrap();
        let opts = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .build();
        let want: Vec<String> = docker
            .logs(&looping, Some(opts))
            .map(|l| {
                String::from_utf8_lossy(&l.unwrap().into_bytes())
                    .trim_end()
                    .to_string()
            })
            .collect()
            .await;
        let got = |records: &[pb::LogRecord]| -> Vec<String> {
            of(records, &looping)
                .iter()
                .map(|r| format!("{} {}", r.time_unix_nanos, String::from_utf8_lossy(&r.line)))
                .collect()
        };
        eprintln!("{} lines", want.len());
        let _ = tokio::time::timeout(
            Duration::from_secs(10),
            wait_for(&spool, |r| of(r, &looping).len() >= want.len()),
        )
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let got = got(&all_records(&spool));
        assert_eq!(got.len(), want.len(), "want {want:#?}\ngot {got:#?}");

        collector.abort();
        for id in [early, long, tty, none, nonl, looping] {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
        }
    }

    /// CPU time of this process so far.
    fn cpu_time() -> Duration {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        Duration::from_millis(ticks * 10)
    }

    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_ascii_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    }

    /// What following costs: CPU at `NOCO_LOG_TEST_RATE` lines a second (10 000) over ten
    /// containers, and the memory of following twenty idle ones.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "measurement: needs Docker and gcc with a static libc"]
    async fn cost_of_following() {
        let image = image();
        let rate: u64 = std::env::var("NOCO_LOG_TEST_RATE")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(10_000);
        let docker = crate::engine::docker::connect().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(SpoolConfig {
            dir: dir.path().to_path_buf(),
            max_bytes: 512 << 20,
        })
        .unwrap();
        let rss_before = rss_kib();
        let collector = tokio::spawn(run(docker.clone(), spool.clone(), PREFIX.to_string()));
        let mut ids = Vec::new();
        for i in 0..20 {
            let name = format!("lt-idle-{i}");
            ids.push(
                start(
                    &docker,
                    PREFIX,
                    &image,
                    &name,
                    &["lines", "10", "100", "60", "pause"],
                    false,
                    None,
                    false,
                )
                .await,
            );
        }
        wait_for(&spool, |r| r.len() >= 200).await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let rss_idle = rss_kib();
        let per = (rate / 10).to_string();
        for i in 0..10 {
            let name = format!("lt-busy-{i}");
            ids.push(
                start(
                    &docker,
                    PREFIX,
                    &image,
                    &name,
                    &["lines", "0", &per, "100"],
                    false,
                    None,
                    false,
                )
                .await,
            );
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        let (cpu0, seq0, at) = (cpu_time(), spool.next_seq(), Instant::now());
        tokio::time::sleep(Duration::from_secs(20)).await;
        let (cpu1, seq1, elapsed) = (cpu_time(), spool.next_seq(), at.elapsed());
        let rss_busy = rss_kib();
        let lines = (seq1 - seq0) as f64 / elapsed.as_secs_f64();
        let cpu = (cpu1 - cpu0).as_secs_f64() / elapsed.as_secs_f64() * 100.0;
        eprintln!(
            "{lines:.0} lines/s: {cpu:.1}% of a core (collector and spool); RSS {rss_before} KiB \
             before, {rss_idle} KiB following 20 idle containers, {rss_busy} KiB busy"
        );
        collector.abort();
        for id in ids {
            let _ = docker
                .remove_container(
                    &id,
                    Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                )
                .await;
        }
    }
}
