//! The tailing consumer: manually assigned partitions, one Fetch in flight per broker
//! connection (the next fetch needs the offsets this one returns), long polls so a record is
//! handed over as soon as the broker has it. End-to-end latency is receipt time minus the
//! intended send time the producer wrote into the first 8 bytes of the value.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use anyhow::{bail, Result};
use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::runner::WorkerCtx;
use super::stats::{Reporter, Role};
use crate::client::conn::{poll, Conn};
use crate::client::records::for_each_record;
use crate::client::wire::{decode_response, put_request};
use crate::clock::now_ns;

struct ConsumerConn {
    conn: Conn,
    /// The request re-sent each time with updated offsets (built once, no per-fetch Vecs).
    request: FetchRequest,
    /// (topic index in `request`, partition) -> index in that topic's partitions.
    slots: HashMap<(usize, i32), usize>,
    in_flight: Option<i32>,
}

/// Runs a consumer thread until the driver says the run has drained.
pub fn run(ctx: WorkerCtx) -> Result<()> {
    let s = &ctx.scenario;
    let mut conns = Vec::new();
    for (&broker, &addr) in &ctx.layout.brokers {
        let mut request = FetchRequest::default()
            .with_replica_id((-1).into())
            .with_max_wait_ms(s.fetch_max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(s.fetch_max_bytes);
        let mut slots = HashMap::new();
        for &pi in &ctx.partitions {
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
                    request.topics.len() - 1
                }
            };
            let parts = &mut request.topics[ti].partitions;
            slots.insert((ti, info.partition), parts.len());
            parts.push(
                FetchPartition::default()
                    .with_partition(info.partition)
                    .with_fetch_offset(ctx.start_offsets[pi])
                    .with_partition_max_bytes(s.partition_max_bytes),
            );
        }
        if !slots.is_empty() {
            conns.push(ConsumerConn {
                conn: Conn::connect(addr)?,
                request,
                slots,
                in_flight: None,
            });
        }
    }

    let mut reporter = Reporter::new(ctx.tx.clone(), Role::Consumer, ctx.t0);
    let mut fds = Vec::with_capacity(conns.len());
    while !ctx.shared.stop_consumers.load(Ordering::Relaxed) {
        for c in conns.iter_mut() {
            if c.in_flight.is_none() {
                let correlation = c.conn.correlation();
                put_request(c.conn.wbuf(), &c.request, ctx.versions.fetch, correlation)?;
                c.in_flight = Some(correlation);
            }
            c.conn.write_some()?;
        }
        let now = now_ns();
        reporter.tick(now);
        fds.clear();
        fds.extend(conns.iter().map(|c| c.conn.pollfd()));
        // Wake at least every 50 ms to notice the stop flag.
        let timeout = reporter.deadline().saturating_sub(now).min(50_000_000);
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
    if resp.error_code != 0 {
        reporter.errors += 1;
        return Ok(0);
    }
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
                if value.len() >= 8 {
                    let sent = u64::from_le_bytes(value[..8].try_into().unwrap());
                    reporter.record(now.saturating_sub(sent));
                }
            })?;
            fetch.fetch_offset = walked.next_offset;
            reporter.msgs += walked.records;
            reporter.bytes += bytes;
            total += walked.records;
        }
    }
    Ok(total)
}
