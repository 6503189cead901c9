//! The tailing consumer: manually assigned partitions (or those a KIP-848 group assigns,
//! see [`crate::client::group`]), one Fetch in flight per broker
//! connection (the next fetch needs the offsets this one returns), long polls so a record is
//! handed over as soon as the broker has it. End-to-end latency is receipt time minus the
//! intended send time the producer wrote into the first 8 bytes of the value.
//!
//! With `fetch_sessions` each connection keeps a KIP-227 session, as the Java client and
//! kafka-python do: after the first (full) fetch, requests carry only the partitions whose
//! offset moved and responses only the partitions with news. A broker that does not keep
//! the session (id 0 in the answer, or a session error) gets full fetches again.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::FetchResponse;
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::runner::{Membership, WorkerCtx};
use super::stats::{Reporter, Role};
use crate::client::conn::{poll, Conn};
use crate::client::records::for_each_record;
use crate::client::wire::{decode_response, put_request};
use crate::clock::now_ns;

/// Kafka's session errors: the client starts a new session with a full fetch.
const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;

struct ConsumerConn {
    conn: Conn,
    /// Every partition of this connection with its current fetch offset: sent whole
    /// without a session (built once, no per-fetch Vecs), else the source of the changes.
    request: FetchRequest,
    /// (topic index in `request`, partition) -> index in that topic's partitions.
    slots: HashMap<(usize, i32), usize>,
    /// Layout partition index of each `request` partition, [topic][slot].
    layout_index: Vec<Vec<usize>>,
    /// The broker's view of the session: its id (0: none), the epoch of the next fetch
    /// (0: a full one, which also closes the session `session_id` names), and the fetch
    /// offsets it holds, [topic][slot].
    session_id: i32,
    session_epoch: i32,
    session_offsets: Vec<Vec<i64>>,
    in_flight: Option<i32>,
}

impl ConsumerConn {
    /// Appends the next Fetch to the connection's write buffer.
    fn put_fetch(&mut self, use_sessions: bool, version: i16) -> Result<()> {
        let correlation = self.conn.correlation();
        if !use_sessions || self.session_epoch == 0 {
            // Full fetch: epoch 0 asks for a new session, -1 (the default) for none.
            if use_sessions {
                self.request.session_id = self.session_id;
                self.request.session_epoch = 0;
            }
            put_request(self.conn.wbuf(), &self.request, version, correlation)?;
            for (topic, offsets) in self.request.topics.iter().zip(&mut self.session_offsets) {
                for (p, offset) in topic.partitions.iter().zip(offsets) {
                    *offset = p.fetch_offset;
                }
            }
        } else {
            let mut changes = FetchRequest::default()
                .with_replica_id(self.request.replica_id)
                .with_max_wait_ms(self.request.max_wait_ms)
                .with_min_bytes(self.request.min_bytes)
                .with_max_bytes(self.request.max_bytes)
                .with_session_id(self.session_id)
                .with_session_epoch(self.session_epoch);
            for (topic, offsets) in self.request.topics.iter().zip(&mut self.session_offsets) {
                let mut moved = Vec::new();
                for (p, offset) in topic.partitions.iter().zip(offsets) {
                    if p.fetch_offset != *offset {
                        *offset = p.fetch_offset;
                        moved.push(p.clone());
                    }
                }
                if !moved.is_empty() {
                    changes.topics.push(
                        FetchTopic::default()
                            .with_topic(topic.topic.clone())
                            .with_partitions(moved),
                    );
                }
            }
            put_request(self.conn.wbuf(), &changes, version, correlation)?;
        }
        self.in_flight = Some(correlation);
        Ok(())
    }

    /// Follows the session through a response; false when the response carries no
    /// partition data (a session error, after which the next fetch is full).
    fn track_session(&mut self, use_sessions: bool, resp: &FetchResponse) -> bool {
        if !use_sessions {
            return true;
        }
        if matches!(
            resp.error_code,
            FETCH_SESSION_ID_NOT_FOUND | INVALID_FETCH_SESSION_EPOCH
        ) {
            self.session_epoch = 0;
            return false;
        }
        if resp.error_code == 0 {
            if self.session_epoch == 0 {
                self.session_id = resp.session_id;
                self.session_epoch = i32::from(resp.session_id != 0);
            } else {
                self.session_epoch = self.session_epoch.checked_add(1).unwrap_or(1);
            }
        }
        true
    }
}

/// Connections to the leaders of `partitions` (layout indices), each fetching from
/// `offset(partition)`.
fn connect(
    ctx: &WorkerCtx,
    partitions: &[usize],
    offset: impl Fn(usize) -> i64,
) -> Result<Vec<ConsumerConn>> {
    let s = &ctx.scenario;
    let mut conns = Vec::new();
    for (&broker, &addr) in &ctx.layout.brokers {
        let mut request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(s.fetch_max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(s.fetch_max_bytes);
        let mut slots = HashMap::new();
        let mut layout_index: Vec<Vec<usize>> = Vec::new();
        for &pi in partitions {
            let info = &ctx.layout.partitions[pi];
            if info.leader != broker {
                continue;
            }
            let name = &ctx.layout.topics[info.topic];
            let ti = match request.topics.iter().position(|t| t.topic.as_str() == name) {
                Some(ti) => ti,
                None => {
                    request.topics.push(
                        FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_string(name.clone()))),
                    );
                    layout_index.push(Vec::new());
                    request.topics.len() - 1
                }
            };
            let parts = &mut request.topics[ti].partitions;
            slots.insert((ti, info.partition), parts.len());
            layout_index[ti].push(pi);
            parts.push(
                FetchPartition::default()
                    .with_partition(info.partition)
                    .with_fetch_offset(offset(pi))
                    .with_partition_max_bytes(s.partition_max_bytes),
            );
        }
        if !slots.is_empty() {
            let session_offsets = layout_index.iter().map(|t| vec![-1; t.len()]).collect();
            conns.push(ConsumerConn {
                conn: Conn::connect(addr)?,
                request,
                slots,
                layout_index,
                session_id: 0,
                session_epoch: 0,
                session_offsets,
                in_flight: None,
            });
        }
    }
    Ok(conns)
}

/// The next offset to fetch of every partition the connections read, by layout index.
fn positions(conns: &[ConsumerConn]) -> Vec<(usize, i64)> {
    conns
        .iter()
        .flat_map(|c| {
            c.request
                .topics
                .iter()
                .zip(&c.layout_index)
                .flat_map(|(t, idx)| idx.iter().zip(&t.partitions))
                .map(|(&pi, p)| (pi, p.fetch_offset))
        })
        .collect()
}

/// Runs a consumer thread until the driver says the run has drained.
pub fn run(mut ctx: WorkerCtx) -> Result<()> {
    let s = ctx.scenario.clone();
    let mut group = match ctx.group.take() {
        Some(Membership::Builtin(m)) => Some(m),
        _ => None,
    };
    let mut conns = connect(&ctx, &ctx.partitions, |pi| ctx.start_offsets[pi])?;
    let mut next_heartbeat = group
        .as_ref()
        .map_or(u64::MAX, |g| now_ns() + g.interval_ms * 1_000_000);

    let mut reporter = Reporter::new(ctx.tx.clone(), Role::Consumer, ctx.t0);
    let mut fds = Vec::with_capacity(conns.len());
    while !ctx.shared.stop_consumers.load(Ordering::Relaxed) {
        if let Some(member) = group.as_mut().filter(|_| now_ns() >= next_heartbeat) {
            let held = positions(&conns);
            if s.commit_offsets {
                member.commit(&ctx.layout, &held)?;
            }
            if member.heartbeat(&ctx.layout)? {
                // A new assignment: stop fetching what was taken away (in-flight fetches
                // go with their connections) and keep the positions of what stays;
                // partitions new to this member start where the run's reading starts.
                let wanted: Vec<usize> = member.owned.iter().copied().collect();
                let offset = |pi| {
                    held.iter()
                        .find(|(p, _)| *p == pi)
                        .map_or(ctx.start_offsets[pi], |&(_, o)| o)
                };
                conns = connect(&ctx, &wanted, offset)?;
                // Acknowledge at once: others may be waiting for what this member released.
                next_heartbeat = now_ns();
            } else {
                next_heartbeat = now_ns() + member.interval_ms * 1_000_000;
            }
        }
        for c in conns.iter_mut() {
            if c.in_flight.is_none() {
                c.put_fetch(s.fetch_sessions, ctx.versions.fetch)?;
            }
            c.conn.write_some()?;
        }
        let now = now_ns();
        reporter.tick(now);
        fds.clear();
        fds.extend(conns.iter().map(|c| c.conn.pollfd()));
        // Wake at least every 50 ms to notice the stop flag, and in time to heartbeat.
        let timeout = reporter
            .deadline()
            .min(next_heartbeat)
            .saturating_sub(now)
            .min(50_000_000);
        poll(&mut fds, timeout)?;
        let now = now_ns();
        for (c, fd) in conns.iter_mut().zip(&fds) {
            if fd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) == 0 {
                continue;
            }
            c.conn.read_some()?;
            while let Some(frame) = c.conn.next_frame() {
                let got = on_response(&ctx, c, frame, now, &mut reporter)?;
                ctx.shared.consumed.fetch_add(got, Ordering::Relaxed);
            }
            if c.conn.closed {
                bail!("broker closed a consumer connection");
            }
        }
    }
    reporter.finish();
    if let Some(mut member) = group {
        if s.commit_offsets {
            member.commit(&ctx.layout, &positions(&conns))?;
        }
        member.leave(&ctx.layout)?;
    }
    Ok(())
}

/// Counts the records of one Fetch response, takes their end-to-end latency and advances the
/// offsets. Returns the number of records.
fn on_response(
    ctx: &WorkerCtx,
    c: &mut ConsumerConn,
    frame: Bytes,
    now: u64,
    reporter: &mut Reporter,
) -> Result<u64> {
    let correlation = c.in_flight.take().unwrap_or(-1);
    let resp = decode_response::<FetchRequest>(frame, ctx.versions.fetch, correlation)?;
    if !c.track_session(ctx.scenario.fetch_sessions, &resp) {
        return Ok(0);
    }
    if resp.error_code != 0 {
        reporter.errors += 1;
        return Ok(0);
    }
    // Re-read data carries old send stamps: no end-to-end latency then.
    let replay = ctx.replay_end.as_deref();
    let mut total = 0;
    for t in &resp.responses {
        let Some(ti) = c.request.topics.iter().position(|r| r.topic == t.topic) else {
            continue;
        };
        for p in &t.partitions {
            let Some(&slot) = c.slots.get(&(ti, p.partition_index)) else {
                continue;
            };
            if p.error_code != 0 {
                reporter.errors += 1;
                continue;
            }
            let Some(records) = &p.records else { continue };
            let fetch = &mut c.request.topics[ti].partitions[slot];
            let mut bytes = 0;
            let walked = for_each_record(records, fetch.fetch_offset, |_, value| {
                bytes += value.len() as u64;
                if value.len() >= 8 && replay.is_none() {
                    let sent = u64::from_le_bytes(value[..8].try_into().unwrap());
                    reporter.record(now.saturating_sub(sent));
                }
            })?;
            fetch.fetch_offset = walked.next_offset;
            if let Some(ends) = replay {
                let pi = c.layout_index[ti][slot];
                if fetch.fetch_offset >= ends[pi] {
                    fetch.fetch_offset = ctx.start_offsets[pi];
                }
            }
            reporter.msgs += walked.records;
            reporter.bytes += bytes;
            total += walked.records;
        }
    }
    Ok(total)
}
