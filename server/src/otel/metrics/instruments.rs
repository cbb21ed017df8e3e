//! The server's observable instruments on the SDK (fleet and internals: a few series per host
//! and stack), each with its callback over the store snapshot ([`super::fleet`]) and the
//! collection's view ([`super::view`]); the per-host and per-container series are
//! [`super::bulk`]'s. One table per group, in the
//! order ARCHITECTURE.md "Telemetry export" lists them; Prometheus names in the comments.

use std::sync::Arc;

use noco_proto::Enumeration;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{AsyncInstrument, Meter};

use super::Sources;
use super::fleet::BACKUP_STATES;
use super::view::{STACK_HOST_STATES, View};

pub(super) fn register(meter: &Meter, s: &Arc<Sources>) {
    fleet(meter, s);
    internals(meter, s);
}

/// A callback over the collection's view.
fn on<T>(
    s: &Arc<Sources>,
    f: impl Fn(&View, &dyn AsyncInstrument<T>) + Send + Sync + 'static,
) -> impl Fn(&dyn AsyncInstrument<T>) + Send + Sync + 'static {
    let s = s.clone();
    move |o| f(&s.view(), o)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn kv(key: &'static str, value: &'static str) -> KeyValue {
    KeyValue::new(key, value)
}

/// Hosts, stacks, rollouts, refused states, backups.
fn fleet(meter: &Meter, s: &Arc<Sources>) {
    // noco_hosts{state}
    meter
        .i64_observable_up_down_counter("noco.hosts")
        .with_unit("{host}")
        .with_description("Hosts by state: online (a live session), offline, revoked")
        .with_callback(on(s, |v, o| {
            let total = v.fleet.hosts.len() as u64;
            o.observe(i(v.hosts_online), &[kv("state", "online")]);
            o.observe(i(total - v.hosts_online), &[kv("state", "offline")]);
            o.observe(i(v.fleet.revoked), &[kv("state", "revoked")]);
        }))
        .build();
    // noco_host_online{host,host_id}
    meter
        .u64_observable_gauge("noco.host.online")
        .with_description("1 while the host has a live session, else 0 (hosts not revoked)")
        .with_callback(on(s, |v, o| {
            for (h, online) in v.fleet.hosts.iter().zip(&v.online) {
                o.observe(u64::from(*online), &h.labels);
            }
        }))
        .build();
    // noco_host_info{host,host_id,agent_version,docker_version,os,arch}
    meter
        .u64_observable_gauge("noco.host.info")
        .with_description("1 per host that is not revoked, with its facts as labels")
        .with_callback(on(s, |v, o| {
            for h in &v.fleet.hosts {
                o.observe(1, &h.info);
            }
        }))
        .build();
    // noco_host_state_refused{host,host_id}
    meter
        .u64_observable_gauge("noco.host.state.refused")
        .with_description(
            "1 while the host's agent reports refusing its desired state (bad signature, expired, older generation), else 0",
        )
        .with_callback(on(s, |v, o| {
            for (h, refused) in v.fleet.hosts.iter().zip(&v.refused) {
                o.observe(u64::from(*refused), &h.labels);
            }
        }))
        .build();
    // noco_hosts_refusing
    meter
        .i64_observable_up_down_counter("noco.hosts.refusing")
        .with_unit("{host}")
        .with_description("Online hosts whose agent reports refusing its desired state")
        .with_callback(on(s, |v, o| {
            o.observe(v.refused.iter().filter(|r| **r).count() as i64, &[]);
        }))
        .build();
    // noco_stacks
    meter
        .i64_observable_up_down_counter("noco.stacks")
        .with_unit("{stack}")
        .with_description("Stacks in the catalog")
        .with_callback(on(s, |v, o| {
            o.observe(v.fleet.stacks.len() as i64, &[]);
        }))
        .build();
    // noco_stack_hosts{stack,state}
    meter
        .i64_observable_up_down_counter("noco.stack.hosts")
        .with_unit("{host}")
        .with_description(
            "Hosts a stack's selector chooses, by how the stack is there: healthy (converged, every service ready), unhealthy, failed (apply failed or refused by the host's policy), pending (not reported yet), offline",
        )
        .with_callback(on(s, |v, o| {
            for (stack, counts) in v.fleet.stacks.iter().zip(&v.stack_hosts) {
                for (state, n) in STACK_HOST_STATES.iter().zip(counts) {
                    o.observe(i(*n), &[stack.label.clone(), kv("state", state)]);
                }
            }
        }))
        .build();
    // noco_rollouts{stack,phase}
    meter
        .i64_observable_up_down_counter("noco.rollouts")
        .with_unit("{rollout}")
        .with_description("Each stack's latest rollout, by phase (sum by phase: how many stacks' latest rollout is in it)")
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(1, &[stack.label.clone(), kv("phase", r.phase.text())]);
                }
            }
        }))
        .build();
    // noco_rollout_phase{stack}
    meter
        .i64_observable_gauge("noco.rollout.phase")
        .with_description(
            "The phase of each stack's latest rollout as its protocol number: 1 running, 2 paused, 3 succeeded, 4 failed, 5 rolling_back, 6 rolled_back, 7 rollback_failed, 8 aborted",
        )
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(r.phase as i64, std::slice::from_ref(&stack.label));
                }
            }
        }))
        .build();
    // noco_rollout_step{stack}, noco_rollout_steps{stack}
    meter
        .u64_observable_gauge("noco.rollout.step")
        .with_description(
            "The step of each stack's latest rollout in flight (or its last), 1-based",
        )
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(u64::from(r.step), std::slice::from_ref(&stack.label));
                }
            }
        }))
        .build();
    meter
        .u64_observable_gauge("noco.rollout.steps")
        .with_description("How many steps each stack's latest rollout has")
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(u64::from(r.steps), std::slice::from_ref(&stack.label));
                }
            }
        }))
        .build();
    // noco_rollout_start_time_seconds{stack}
    meter
        .f64_observable_gauge("noco.rollout.start_time")
        .with_unit("s")
        .with_description("When each stack's latest rollout started (Unix time)")
        .with_callback(on(s, |v, o| {
            for stack in &v.fleet.stacks {
                if let Some(r) = &stack.rollout {
                    o.observe(
                        r.started_ms as f64 / 1000.0,
                        std::slice::from_ref(&stack.label),
                    );
                }
            }
        }))
        .build();
    // noco_backups{stack,state}
    meter
        .i64_observable_up_down_counter("noco.backups")
        .with_unit("{backup}")
        .with_description("Backups in the catalog by stack and state (running, pending_upload, complete, failed, missed)")
        .with_callback(on(s, |v, o| {
            for b in &v.fleet.backups {
                for (state, n) in BACKUP_STATES.iter().zip(&b.counts) {
                    o.observe(i(*n), &[b.label.clone(), kv("state", state.text())]);
                }
            }
        }))
        .build();
    // noco_backup_last_complete_time_seconds{stack}
    meter
        .f64_observable_gauge("noco.backup.last_complete.time")
        .with_unit("s")
        .with_description(
            "When the stack's newest complete backup finished (Unix time); absent before its first",
        )
        .with_callback(on(s, |v, o| {
            for b in &v.fleet.backups {
                if let Some(ms) = b.last_complete_ms {
                    o.observe(ms as f64 / 1000.0, std::slice::from_ref(&b.label));
                }
            }
        }))
        .build();
    // noco_backup_jobs{state}
    meter
        .i64_observable_up_down_counter("noco.backup.jobs")
        .with_unit("{job}")
        .with_description("Backup, restore and verify jobs not finished: pending (ordered, not started) or running")
        .with_callback(on(s, |v, o| {
            o.observe(i(v.fleet.jobs_pending), &[kv("state", "pending")]);
            o.observe(i(v.fleet.jobs_running), &[kv("state", "running")]);
        }))
        .build();
    // noco_backup_orders_pending
    meter
        .i64_observable_up_down_counter("noco.backup.orders.pending")
        .with_unit("{order}")
        .with_description("Signed orders kept for hosts that have not started them (offline hosts get them when they connect)")
        .with_callback(on(s, |v, o| o.observe(i(v.fleet.orders), &[])))
        .build();
}

/// Sessions, the store's size, what the log hub and the backup machinery hold.
fn internals(meter: &Meter, s: &Arc<Sources>) {
    // noco_sessions{kind}
    meter
        .i64_observable_up_down_counter("noco.sessions")
        .with_unit("{session}")
        .with_description("Live agent sessions and telemetry streams (one of each per online host)")
        .with_callback(on(s, |v, o| {
            o.observe(i(v.sessions), &[kv("kind", "agent")]);
            o.observe(i(v.telemetry_streams), &[kv("kind", "telemetry")]);
        }))
        .build();
    // noco_store_size_bytes
    meter
        .i64_observable_up_down_counter("noco.store.size")
        .with_unit("By")
        .with_description("The database's size on disk (sled: its files)")
        .with_callback(on(s, |v, o| {
            if let Some(bytes) = v.fleet.store_bytes {
                o.observe(i(bytes), &[]);
            }
        }))
        .build();
    // noco_logs_held_bytes, noco_logs_limit_bytes, noco_logs_records, noco_logs_followers
    meter
        .i64_observable_up_down_counter("noco.logs.held")
        .with_unit("By")
        .with_description("Log records the server holds in memory, as its caps account them")
        .with_callback(on(s, |v, o| o.observe(i(v.logs.bytes), &[])))
        .build();
    meter
        .i64_observable_up_down_counter("noco.logs.records")
        .with_unit("{record}")
        .with_description("Log records (lines and markers) the server holds in memory")
        .with_callback(on(s, |v, o| o.observe(v.logs.records as i64, &[])))
        .build();
    let core = s.core.clone();
    meter
        .i64_observable_up_down_counter("noco.logs.limit")
        .with_unit("By")
        .with_description("The cap on log records held in memory (--log-bytes-total)")
        .with_callback(move |o| o.observe(i(core.logs.caps().bytes_total), &[]))
        .build();
    let core = s.core.clone();
    meter
        .i64_observable_up_down_counter("noco.logs.followers")
        .with_unit("{reader}")
        .with_description("Readers following the logs (`nococtl logs -f`)")
        .with_callback(move |o| o.observe(core.logs.followers() as i64, &[]))
        .build();
    // noco_backup_uploads_active
    let core = s.core.clone();
    meter
        .i64_observable_up_down_counter("noco.backup.uploads.active")
        .with_unit("{upload}")
        .with_description("Backup archives being uploaded to the server now")
        .with_callback(move |o| o.observe(core.backups.uploads_active() as i64, &[]))
        .build();
}
