//! What noco-server exports to OpenTelemetry and Prometheus (the setup itself, one for server and
//! agent, is `noco_proto::otel`): `metrics.rs` the instruments (fleet, hosts, containers, server
//! internals), read by both OTLP and `/metrics`; `prom.rs` the Prometheus scrape endpoint
//! (`--metrics-listen`); `logs.rs` container log records as OTLP log records; `pb.rs` and `send.rs` encode and send
//! the OTLP requests noco builds itself (bulk metrics, container logs); `traces.rs` the
//! trace context a host's desired state carries to its agent, per stack.

pub mod logs;
pub mod metrics;
mod pb;
pub mod prom;
mod send;
pub mod traces;
