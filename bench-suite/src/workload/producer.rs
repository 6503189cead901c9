//! The open-loop producer: one pinned thread, a few connections, many partitions.
//!
//! At a target rate, message i of this thread is *intended* to be sent at t0 + i/rate, and
//! its latency is measured from that instant, not from when the thread got round to it. A
//! stall (a slow broker, a full in-flight window, our own scheduling) therefore shows up in
//! the latency of every message that should have gone out during it: this is the
//! coordinated-omission correction, done exactly per message instead of by back-filling
//! (HdrHistogram's `record_correct`). At max rate there is no schedule; latency is then
//! measured from message creation and throughput is what the broker sustains.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use kafka_protocol::messages::ProduceRequest;

use super::keys::{key_hash, message_size, KeyGen, Rng};
use super::runner::WorkerCtx;
use super::scenario::Acks;
use super::stats::{Reporter, Role};
use crate::client::batch::BatchBuilder;
use crate::client::conn::{poll, Conn};
use crate::client::produce::ProduceFrame;
use crate::client::wire::decode_response;
use crate::clock::{now_ns, wall_ms};

/// The path from this thread to one partition over one connection. Usually one per
/// partition; with more connections than partitions a partition gets several lanes.
struct Lane {
    topic: usize,
    partition: i32,
    conn: usize,
    batch: BatchBuilder,
    /// Intended send times of this lane's messages not yet acknowledged, oldest first (the
    /// open batch's at the back). A ring that stops growing once warmed up.
    stamps: VecDeque<u64>,
    /// When the open batch got its first record (linger starts there).
    opened_ns: u64,
    /// Value bytes in the open batch.
    bytes: u64,
}

struct InFlight {
    correlation: i32,
    /// (lane, records) of each batch in the request.
    batches: Vec<(u32, u32)>,
    bytes: u64,
}

struct ProducerConn {
    conn: Conn,
    inflight: VecDeque<InFlight>,
    /// Lanes of this connection with an open batch.
    open: Vec<u32>,
    /// Recycled `InFlight::batches` vectors.
    spare: Vec<Vec<(u32, u32)>>,
}

/// Runs a producer thread to the end of the run and its drain.
pub fn run(ctx: WorkerCtx) -> Result<()> {
    let mut p = Producer::new(&ctx)?;
    p.run()
}

struct Producer<'a> {
    ctx: &'a WorkerCtx,
    conns: Vec<ProducerConn>,
    lanes: Vec<Lane>,
    /// Lanes of each of the thread's partitions (for keyed messages).
    lanes_of: Vec<Vec<u32>>,
    sticky: usize,
    rng: Rng,
    keys: KeyGen,
    payload: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    /// Messages generated so far (the schedule index).
    generated: u64,
    /// Value bytes generated but not yet in a request.
    buffered: u64,
    /// Generation is waiting for room (buffer or in-flight window).
    blocked: bool,
    linger_ns: u64,
    interval_ns: Option<f64>,
    reporter: Reporter,
}

impl<'a> Producer<'a> {
    fn new(ctx: &'a WorkerCtx) -> Result<Self> {
        let s = &ctx.scenario;
        let brokers: Vec<i32> = ctx.layout.brokers.keys().copied().collect();
        let per_broker = s.connections_per_producer as usize;
        let mut conns = Vec::new();
        for b in &brokers {
            for _ in 0..per_broker {
                conns.push(ProducerConn {
                    conn: Conn::connect(ctx.layout.brokers[b])?,
                    inflight: VecDeque::with_capacity(s.max_in_flight),
                    open: Vec::new(),
                    spare: Vec::new(),
                });
            }
        }
        // Lane l serves partition l % P over connection l % C (of the partition's leader).
        let owned = &ctx.partitions;
        let lane_count = owned.len().max(per_broker);
        let mut lanes = Vec::with_capacity(lane_count);
        let mut lanes_of = vec![Vec::new(); owned.len()];
        for l in 0..lane_count {
            let info = &ctx.layout.partitions[owned[l % owned.len()]];
            let broker = brokers.iter().position(|b| *b == info.leader).unwrap();
            lanes_of[l % owned.len()].push(l as u32);
            lanes.push(Lane {
                topic: info.topic,
                partition: info.partition,
                conn: broker * per_broker + l % per_broker,
                batch: BatchBuilder::default(),
                stamps: VecDeque::new(),
                opened_ns: 0,
                bytes: 0,
            });
        }
        // Payload filler: lowercase letters from a skewed alphabet, so compression has
        // something to do (about 2:1 like typical text) without being trivial.
        let mut rng = Rng::new(0xC0FFEE ^ ctx.id as u64);
        let (_, max_size) = s.message_size.bounds();
        let payload = (0..max_size + 4096)
            .map(|_| b'a' + (rng.below(16) * rng.below(16) / 10) as u8)
            .collect();
        let headers = (0..s.headers)
            .map(|i| {
                (
                    format!("h{i}").into_bytes(),
                    (i as u64).to_le_bytes().to_vec(),
                )
            })
            .collect();
        Ok(Producer {
            ctx,
            conns,
            lanes,
            lanes_of,
            sticky: 0,
            rng,
            keys: KeyGen::new(s.keys, s.key_space),
            payload,
            headers,
            generated: 0,
            buffered: 0,
            blocked: false,
            linger_ns: (s.linger_ms * 1e6) as u64,
            interval_ns: ctx.rate.map(|r| 1e9 / r),
            reporter: Reporter::new(ctx.tx.clone(), Role::Producer, ctx.t0),
        })
    }

    fn run(&mut self) -> Result<()> {
        let ctx = self.ctx;
        let mut fds = Vec::with_capacity(self.conns.len());
        sleep_until(ctx.t0);
        loop {
            let now = now_ns();
            let generating = self.generated < self.due(ctx.end - 1)
                && !ctx.shared.abort.load(Ordering::Relaxed)
                && (self.interval_ns.is_some() || now < ctx.end);
            if generating {
                self.generate(now)?;
            }
            for c in 0..self.conns.len() {
                self.flush(c, now, !generating)?;
                self.write(c, now)?;
            }
            self.reporter.tick(now);
            if !generating && self.idle() {
                break;
            }
            if now > ctx.drain_deadline {
                let stuck: usize = self.lanes.iter().map(|l| l.stamps.len()).sum();
                self.reporter.errors += stuck as u64;
                eprintln!(
                    "producer {}: {stuck} messages unacknowledged at the drain deadline",
                    ctx.id
                );
                break;
            }
            fds.clear();
            fds.extend(self.conns.iter().map(|c| c.conn.pollfd()));
            poll(&mut fds, self.timeout(now, generating))?;
            let now = now_ns();
            for (c, fd) in fds.iter().enumerate() {
                if fd.revents & (libc::POLLIN | libc::POLLERR | libc::POLLHUP) != 0 {
                    self.read(c, now)?;
                }
            }
        }
        let reporter = std::mem::replace(
            &mut self.reporter,
            Reporter::new(ctx.tx.clone(), Role::Producer, ctx.t0),
        );
        reporter.finish();
        Ok(())
    }

    /// Nothing left to send or to wait for.
    fn idle(&self) -> bool {
        self.conns
            .iter()
            .all(|c| c.inflight.is_empty() && c.open.is_empty() && c.conn.unsent() == 0)
    }

    /// How long poll may sleep: until the next intended send, linger expiry or tick.
    fn timeout(&self, now: u64, generating: bool) -> u64 {
        let mut wake = self.reporter.deadline().min(now + 100_000_000);
        if generating && !self.blocked {
            wake = wake.min(match self.interval_ns {
                Some(iv) => self.ctx.t0 + (self.generated as f64 * iv) as u64,
                None => now,
            });
        }
        for c in &self.conns {
            if c.inflight.len() < self.ctx.scenario.max_in_flight {
                for &l in &c.open {
                    wake = wake.min(self.lanes[l as usize].opened_ns + self.linger_ns);
                }
            }
        }
        wake.saturating_sub(now)
    }

    /// Messages of the schedule due by `t` (unbounded at max rate). The schedule covers
    /// [t0, end): a thread that wakes late near the end still sends everything that was
    /// due before it, late (and measured so), rather than dropping it.
    fn due(&self, t: u64) -> u64 {
        match self.interval_ns {
            Some(iv) => (t.saturating_sub(self.ctx.t0) as f64 / iv) as u64 + 1,
            None => u64::MAX,
        }
    }

    /// Generates the messages that are due (all that fit, at max rate).
    fn generate(&mut self, now: u64) -> Result<()> {
        let s = &self.ctx.scenario;
        let due = self.due(now.min(self.ctx.end - 1));
        let ts_ms = wall_ms();
        self.blocked = false;
        // A bounded burst per pass, so responses are read even when far behind schedule.
        let mut budget = 16_384;
        while self.generated < due && budget > 0 {
            budget -= 1;
            if self.buffered >= s.buffer_bytes as u64 {
                self.blocked = true;
                break;
            }
            let key = self.keys.next_key(&mut self.rng);
            let l = match key {
                None => self.sticky,
                Some(k) => {
                    let h = key_hash(k) as usize;
                    let lanes = &self.lanes_of[h % self.lanes_of.len()];
                    lanes[(h / self.lanes_of.len()) % lanes.len()] as usize
                }
            };
            if self.lanes[l].batch.encoded_len() >= s.batch_size {
                let c = self.lanes[l].conn;
                self.flush(c, now, false)?;
                if self.lanes[l].batch.count() > 0 {
                    self.blocked = true;
                    break;
                }
            }
            let intended = match self.interval_ns {
                Some(iv) => self.ctx.t0 + (self.generated as f64 * iv) as u64,
                None => now,
            };
            let size = message_size(s.message_size, &mut self.rng);
            let stamp = intended.to_le_bytes();
            let offset = self.rng.below(4096) as usize;
            let key_bytes = key.map(|k| self.keys.key_bytes(k));
            let mut headers = [(&[][..], &[][..]); 16];
            let n_headers = self.headers.len().min(headers.len());
            for (slot, (k, v)) in headers.iter_mut().zip(&self.headers) {
                *slot = (k.as_slice(), v.as_slice());
            }
            let lane = &mut self.lanes[l];
            if size >= 8 {
                let filler = &self.payload[offset..offset + size - 8];
                lane.batch
                    .push(ts_ms, key_bytes, &[&stamp, filler], &headers[..n_headers]);
            } else {
                let filler = &self.payload[offset..offset + size];
                lane.batch
                    .push(ts_ms, key_bytes, &[filler], &headers[..n_headers]);
            }
            if lane.batch.count() == 1 {
                lane.opened_ns = now;
                self.conns[lane.conn].open.push(l as u32);
            }
            lane.stamps.push_back(intended);
            lane.bytes += size as u64;
            self.buffered += size as u64;
            self.generated += 1;
            if key.is_none() && lane.batch.encoded_len() >= s.batch_size {
                self.sticky = (self.sticky + 1) % self.lanes.len();
            }
        }
        Ok(())
    }

    /// Sends one Produce request with every ready batch of connection `c`, if the in-flight
    /// window has room. `force` sends open batches regardless of size and linger (drain).
    fn flush(&mut self, c: usize, now: u64, force: bool) -> Result<()> {
        let s = &self.ctx.scenario;
        let pc = &mut self.conns[c];
        if pc.open.is_empty() || pc.inflight.len() >= s.max_in_flight {
            return Ok(());
        }
        let lanes = &mut self.lanes;
        let linger = self.linger_ns;
        let mut batches = pc.spare.pop().unwrap_or_default();
        pc.open.retain(|&l| {
            let lane = &lanes[l as usize];
            let ready =
                force || lane.batch.encoded_len() >= s.batch_size || now >= lane.opened_ns + linger;
            if ready {
                batches.push((l, lane.batch.count() as u32));
            }
            !ready
        });
        if batches.is_empty() {
            pc.spare.push(batches);
            return Ok(());
        }
        // A request holds each topic once, with its partitions under it.
        batches
            .sort_unstable_by_key(|&(l, _)| (lanes[l as usize].topic, lanes[l as usize].partition));
        let correlation = pc.conn.correlation();
        let buf = pc.conn.wbuf();
        let mut frame = ProduceFrame::begin(
            buf,
            self.ctx.versions.produce,
            correlation,
            s.acks.wire(),
            30_000,
        );
        let mut topic = usize::MAX;
        let mut bytes = 0;
        for &(l, count) in &batches {
            let lane = &mut lanes[l as usize];
            if lane.topic != topic {
                topic = lane.topic;
                frame.topic(buf, &self.ctx.layout.topics[topic]);
            }
            frame.partition(buf, lane.partition, &mut lane.batch, s.compression)?;
            bytes += lane.bytes;
            lane.bytes = 0;
            self.reporter.sent += u64::from(count);
            if l as usize == self.sticky {
                self.sticky = (self.sticky + 1) % lanes.len();
            }
        }
        frame.finish(buf);
        self.buffered -= bytes;
        pc.inflight.push_back(InFlight {
            correlation,
            batches,
            bytes,
        });
        Ok(())
    }

    /// Writes pending bytes. With acks=0 there is no response: a request counts as done
    /// (and its latency is taken) once the socket has taken all of it.
    fn write(&mut self, c: usize, now: u64) -> Result<()> {
        let all_sent = self.conns[c].conn.write_some()?;
        if all_sent && self.ctx.scenario.acks == Acks::None {
            while let Some(done) = self.conns[c].inflight.pop_front() {
                self.complete(c, done, now, None);
            }
        }
        Ok(())
    }

    fn read(&mut self, c: usize, now: u64) -> Result<()> {
        self.conns[c].conn.read_some()?;
        while let Some(frame) = self.conns[c].conn.next_frame() {
            self.on_response(c, frame, now)?;
        }
        if self.conns[c].conn.closed {
            bail!("broker closed producer connection {c}");
        }
        Ok(())
    }

    fn on_response(&mut self, c: usize, frame: Bytes, now: u64) -> Result<()> {
        let done = self.conns[c]
            .inflight
            .pop_front()
            .context("a response to no request")?;
        let resp =
            decode_response::<ProduceRequest>(frame, self.ctx.versions.produce, done.correlation)?;
        // Errors are rare: only then gather the failed partitions (and allocate).
        let failed: Vec<(&str, i32, i16)> = resp
            .responses
            .iter()
            .flat_map(|t| {
                t.partition_responses
                    .iter()
                    .filter(|p| p.error_code != 0)
                    .map(move |p| (t.name.as_str(), p.index, p.error_code))
            })
            .collect();
        if let Some((t, p, e)) = failed.first() {
            if self.reporter.errors == 0 {
                eprintln!(
                    "producer {}: produce to {t}/{p} failed: {}",
                    self.ctx.id,
                    crate::client::admin::error_name(*e)
                );
            }
        }
        let failed = (!failed.is_empty()).then_some(failed);
        self.complete(c, done, now, failed.as_deref());
        Ok(())
    }

    /// Takes the latency of every message of a finished request.
    fn complete(
        &mut self,
        c: usize,
        mut done: InFlight,
        now: u64,
        failed: Option<&[(&str, i32, i16)]>,
    ) {
        let mut ok = 0;
        for &(l, count) in &done.batches {
            let lane = &mut self.lanes[l as usize];
            let lane_failed = failed.is_some_and(|f| {
                f.iter().any(|&(t, p, _)| {
                    p == lane.partition && t == self.ctx.layout.topics[lane.topic]
                })
            });
            for _ in 0..count {
                let intended = lane.stamps.pop_front().expect("a stamp per message");
                if !lane_failed {
                    self.reporter.record(now.saturating_sub(intended));
                }
            }
            if lane_failed {
                self.reporter.errors += u64::from(count);
            } else {
                ok += u64::from(count);
            }
        }
        self.reporter.msgs += ok;
        self.reporter.bytes += done.bytes;
        self.ctx.shared.acked.fetch_add(ok, Ordering::Relaxed);
        done.batches.clear();
        self.conns[c].spare.push(done.batches);
    }
}

/// Sleeps until `t` on the monotonic clock.
pub fn sleep_until(t: u64) {
    let now = now_ns();
    if t > now {
        std::thread::sleep(std::time::Duration::from_nanos(t - now));
    }
}
