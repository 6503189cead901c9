//! The driver of one run: sets up topics, starts pinned producer and consumer threads at a
//! common start time, prints a progress line each second from their reports, drains, and
//! turns the reports into a `RunSummary`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use super::scenario::{GroupProtocol, Rate, Scenario};
use super::stats::{new_histogram, Interval, Role, TICK_NS};
use crate::client::admin::{Admin, Layout, Versions};
use crate::client::group::{self, GroupMember};
use crate::clock::now_ns;
use crate::report::{
    proc_stats, BrokerUsage, CpuTime, HostSteal, Percentiles, RunSummary, Throughput, TickPoint,
};

/// Partitions a run must create for the broker's RSS growth to be reported per partition:
/// below this, allocator noise outweighs what one partition costs.
const MIN_PARTITIONS_FOR_RSS: u64 = 1000;

/// How long built-in group consumers may take to join and settle before a run.
const GROUP_SETTLE_TIMEOUT_MS: u64 = 30_000;

/// Which client drives the load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Driver {
    /// The built-in pipelined client.
    Builtin,
    /// librdkafka, to cross-check the built-in client (needs the `rdkafka` feature).
    Rdkafka,
}

/// How to run, beyond the scenario.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Name of the target in reports.
    pub target: String,
    pub bootstrap: String,
    pub broker_pid: Option<i32>,
    /// Cores generator threads are pinned to (round robin); empty: every core.
    pub cpus: Vec<usize>,
    pub driver: Driver,
    /// Print the progress line each second.
    pub progress: bool,
    /// The command line, for the report.
    pub command: String,
}

/// A consumer's place in a consumer group, taken before the run starts.
pub enum Membership {
    /// A built-in consumer's KIP-848 membership (the worker's `partitions` are its
    /// assignment).
    Builtin(GroupMember),
    /// A subscribed librdkafka consumer, paused on its assignment.
    #[cfg(feature = "rdkafka")]
    Rdkafka(rdkafka::consumer::BaseConsumer),
}

/// State the driver and its workers share.
#[derive(Default)]
pub struct Shared {
    /// Stop everything now (a worker failed).
    pub abort: AtomicBool,
    /// Consumers have caught up (or gave up): stop fetching.
    pub stop_consumers: AtomicBool,
    pub acked: AtomicU64,
    pub consumed: AtomicU64,
}

/// What a worker thread needs.
pub struct WorkerCtx {
    pub id: usize,
    pub scenario: Arc<Scenario>,
    pub layout: Arc<Layout>,
    pub versions: Versions,
    pub bootstrap: String,
    /// Indices into `layout.partitions` this worker produces to or consumes from.
    pub partitions: Vec<usize>,
    /// Where consumers start, per layout partition (the log end before producing starts).
    pub start_offsets: Arc<Vec<i64>>,
    /// Consume-only runs: the end of the filled data, per layout partition, where consumers
    /// rewind to `start_offsets`.
    pub replay_end: Option<Arc<Vec<i64>>>,
    /// This producer's share of the target rate (msg/s); `None` at max rate.
    pub rate: Option<f64>,
    /// A consumer's group membership, joined and settled before t0.
    pub group: Option<Membership>,
    pub t0: u64,
    pub end: u64,
    pub drain_deadline: u64,
    pub tx: Sender<Interval>,
    pub shared: Arc<Shared>,
}

/// Runs a scenario; a `NN%` rate first runs a max-rate probe of `probe_secs`.
pub fn run(scenario: &Scenario, opts: &RunOptions) -> Result<RunSummary> {
    scenario.validate()?;
    if scenario.prefill_secs > 0 {
        return consume_only(scenario, opts);
    }
    match scenario.rate {
        Rate::FractionOfMax(f) => {
            let mut probe = scenario.clone();
            probe.rate = Rate::Max;
            probe.duration_secs = scenario.probe_secs.max(2);
            probe.warmup_secs = 1;
            if opts.progress {
                eprintln!("probing the max rate for {} s", probe.duration_secs);
            }
            let max = run_once(&probe, opts, None, None)?.produce.msgs_per_sec;
            if max <= 0.0 {
                bail!("the max-rate probe produced nothing");
            }
            // The probe leaves gigabytes of dirty page cache on a local broker; measuring
            // while the kernel writes them back would charge that writeback to the
            // broker's latency at the fixed rate.
            if opts.progress {
                eprintln!("waiting for the probe's writes to reach the disk (sync)");
            }
            // SAFETY: sync(2) takes no arguments and cannot fail.
            unsafe { libc::sync() };
            let mut fixed = scenario.clone();
            fixed.rate = Rate::Fixed(max * f);
            if opts.progress {
                eprintln!(
                    "probe reached {max:.0} msg/s; running at {:.0} msg/s",
                    max * f
                );
            }
            let mut summary = run_once(&fixed, opts, Some(max), None)?;
            summary.scenario = scenario.clone();
            Ok(summary)
        }
        _ => run_once(scenario, opts, None, None),
    }
}

/// Fills the topics at max rate for `prefill_secs`, then measures the consumers alone
/// reading that data (from the page cache) for `duration_secs`.
fn consume_only(s: &Scenario, opts: &RunOptions) -> Result<RunSummary> {
    let mut admin = Admin::connect(resolve(&opts.bootstrap)?)?;
    let (layout, _) = admin.ensure_topics(&s.topic_names(), s.partitions as i32)?;
    let from = admin.list_offsets(&layout, -1)?;
    drop(admin);
    let mut fill = s.clone();
    fill.prefill_secs = 0;
    fill.consumers = 0;
    fill.rate = Rate::Max;
    fill.duration_secs = s.prefill_secs;
    fill.warmup_secs = 0;
    if opts.progress {
        eprintln!("filling the topics at max rate for {} s", s.prefill_secs);
    }
    let filled = run_once(&fill, opts, None, None)?;
    let mut read = s.clone();
    read.producers = 0;
    if opts.progress {
        eprintln!(
            "reading {} messages, from the start again at the end",
            filled.total_acked
        );
    }
    let mut summary = run_once(&read, opts, None, Some(from))?;
    summary.scenario = s.clone();
    summary.notes.push(format!(
        "consume-only: the consumers re-read {} messages that producers first wrote at {:.0} msg/s (max rate, {} s)",
        filled.total_acked, filled.produce.msgs_per_sec, s.prefill_secs
    ));
    Ok(summary)
}

fn resolve(bootstrap: &str) -> Result<SocketAddr> {
    bootstrap
        .to_socket_addrs()
        .with_context(|| format!("resolving {bootstrap}"))?
        .next()
        .with_context(|| format!("{bootstrap} has no address"))
}

/// One run; `replay_from` makes it a consume-only read of the data between those offsets
/// and the current ends.
fn run_once(
    s: &Scenario,
    opts: &RunOptions,
    probe_rate: Option<f64>,
    replay_from: Option<Vec<i64>>,
) -> Result<RunSummary> {
    let mut admin = Admin::connect(resolve(&opts.bootstrap)?)?;
    let rss_before = opts.broker_pid.map(proc_stats::rss_bytes).transpose()?;
    let (layout, created) = admin.ensure_topics(&s.topic_names(), s.partitions as i32)?;
    let new_partitions = created as u64 * u64::from(s.partitions);
    let rss_per_new_partition = match (opts.broker_pid, rss_before) {
        (Some(pid), Some(before)) if new_partitions >= MIN_PARTITIONS_FOR_RSS => {
            let after = proc_stats::rss_bytes(pid)?;
            Some((after as f64 - before as f64) / new_partitions as f64)
        }
        _ => None,
    };
    let layout = Arc::new(layout);
    let ends = if s.consumers > 0 {
        admin.list_offsets(&layout, -1)?
    } else {
        vec![0; layout.partitions.len()]
    };
    let (start_offsets, replay_end) = match replay_from {
        Some(from) => (Arc::new(from), Some(Arc::new(ends))),
        None => (Arc::new(ends), None),
    };
    let versions = admin.versions;
    drop(admin);
    // Group members join before the clock starts, so the time the group takes to settle
    // is not counted against the consumers.
    let members: Vec<Membership> = match (s.group_protocol, opts.driver) {
        _ if s.consumers == 0 => Vec::new(),
        (GroupProtocol::None, _) => Vec::new(),
        (GroupProtocol::Classic, Driver::Builtin) => {
            bail!("the builtin consumers speak the KIP-848 group protocol (`consumer`) only")
        }
        (GroupProtocol::Consumer, Driver::Builtin) => group::join_settled(
            resolve(&opts.bootstrap)?,
            &s.consumer_group,
            &layout,
            s.consumers as usize,
            GROUP_SETTLE_TIMEOUT_MS,
        )?
        .into_iter()
        .map(Membership::Builtin)
        .collect(),
        #[cfg(feature = "rdkafka")]
        (_, Driver::Rdkafka) => crate::rdkafka_driver::join_group(
            &opts.bootstrap,
            s,
            s.consumers as usize,
            GROUP_SETTLE_TIMEOUT_MS,
        )?
        .into_iter()
        .map(Membership::Rdkafka)
        .collect(),
        #[cfg(not(feature = "rdkafka"))]
        (_, Driver::Rdkafka) => bail!("built without the `rdkafka` feature"),
    };
    let mut members = members.into_iter();

    let scenario = Arc::new(s.clone());
    let shared = Arc::new(Shared::default());
    let (tx, rx) = channel();
    let target_rate = match s.rate {
        Rate::Fixed(r) => Some(r),
        _ => None,
    };
    let n = layout.partitions.len();
    let share = |i: usize, of: usize| -> Vec<usize> {
        if n >= of {
            (i..n).step_by(of).collect()
        } else {
            (0..n).collect()
        }
    };
    let cores: Vec<core_affinity::CoreId> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .filter(|c| opts.cpus.is_empty() || opts.cpus.contains(&c.id))
        .collect();
    // Workers connect before t0; start 200 ms (plus 1 ms per 10 connections) from now.
    let conns = (s.producers * s.connections_per_producer) as u64;
    let t0 = now_ns() + 200_000_000 + conns * 100_000;
    let end = t0 + s.duration_secs * TICK_NS;
    let drain_deadline = end + s.drain_secs.max(1) * TICK_NS;
    let ctx = |id: usize, partitions: Vec<usize>, rate: Option<f64>, group| WorkerCtx {
        id,
        scenario: scenario.clone(),
        layout: layout.clone(),
        versions,
        bootstrap: opts.bootstrap.clone(),
        partitions,
        start_offsets: start_offsets.clone(),
        replay_end: replay_end.clone(),
        rate,
        group,
        t0,
        end,
        drain_deadline,
        tx: tx.clone(),
        shared: shared.clone(),
    };

    let cpu_before = opts.broker_pid.map(proc_stats::cpu_secs).transpose()?;
    let mut handles: Vec<JoinHandle<Result<()>>> = Vec::new();
    let workers = s.consumers as usize + s.producers as usize;
    for i in 0..workers {
        let core = (!cores.is_empty()).then(|| cores[i % cores.len()]);
        let (name, body): (String, Box<dyn FnOnce() -> Result<()> + Send>) =
            if i < s.consumers as usize {
                let c = match members.next() {
                    Some(Membership::Builtin(m)) => {
                        let owned = m.owned.iter().copied().collect();
                        ctx(i, owned, None, Some(Membership::Builtin(m)))
                    }
                    #[cfg(feature = "rdkafka")]
                    Some(other) => ctx(i, Vec::new(), None, Some(other)),
                    None => ctx(i, share(i, s.consumers as usize), None, None),
                };
                (format!("consumer-{i}"), consumer_body(opts.driver, c)?)
            } else {
                let p = i - s.consumers as usize;
                let rate = target_rate.map(|r| r / f64::from(s.producers));
                let c = ctx(p, share(p, s.producers as usize), rate, None);
                (format!("producer-{p}"), producer_body(opts.driver, c)?)
            };
        let shared = shared.clone();
        handles.push(
            std::thread::Builder::new()
                .name(name.clone())
                .spawn(move || {
                    if let Some(core) = core {
                        core_affinity::set_for_current(core);
                    }
                    let result = body().with_context(|| name);
                    if result.is_err() {
                        shared.abort.store(true, Ordering::Relaxed);
                        shared.stop_consumers.store(true, Ordering::Relaxed);
                    }
                    result
                })?,
        );
    }
    drop(tx);

    let mut steal = StealMeter::start();
    let mut agg = Aggregate::new(s, workers);
    let mut producers_left = s.producers as usize;
    let mut consumers_stopped_at = None;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(iv) => {
                if iv.last && iv.role == Role::Producer {
                    producers_left -= 1;
                }
                if let Some(line) = agg.add(iv) {
                    if opts.progress {
                        eprintln!("{line}");
                    }
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        // Consumers stop once they have everything the producers got acknowledged, or when
        // the drain time is up; consume-only runs stop at the end of the duration.
        if producers_left == 0 && consumers_stopped_at.is_none() {
            let caught_up = replay_end.is_none()
                && shared.consumed.load(Ordering::Relaxed) >= shared.acked.load(Ordering::Relaxed);
            let deadline = if replay_end.is_some() {
                end
            } else {
                drain_deadline
            };
            if s.consumers == 0 || caught_up || now_ns() > deadline {
                shared.stop_consumers.store(true, Ordering::Relaxed);
                consumers_stopped_at = Some(now_ns());
            }
        }
        if shared.abort.load(Ordering::Relaxed) {
            shared.stop_consumers.store(true, Ordering::Relaxed);
        }
        steal.sample();
    }
    let elapsed = (now_ns().saturating_sub(t0)) as f64 / 1e9;
    let broker = match (opts.broker_pid, cpu_before) {
        (Some(pid), Some(before)) => {
            let cpu = proc_stats::cpu_secs(pid)? - before;
            Some(BrokerUsage {
                pid,
                cpu: CpuTime::new(cpu, elapsed),
                peak_rss_bytes: proc_stats::peak_rss_bytes(pid)?,
            })
        }
        _ => None,
    };
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("a worker panicked"))??;
    }
    let mut summary = agg.summary(s, opts, target_rate, probe_rate, broker);
    summary.host_steal = steal.finish();
    summary.rss_per_new_partition = rss_per_new_partition;
    summary.total_acked = shared.acked.load(Ordering::Relaxed);
    summary.total_consumed = shared.consumed.load(Ordering::Relaxed);
    // A short count means the consumers fell behind (the null broker serves records back
    // too, so that includes none at all).
    if s.consumers > 0 && summary.total_consumed < summary.total_acked {
        summary.notes.push(format!(
            "consumers received {} of {} acknowledged messages before the drain deadline",
            summary.total_consumed, summary.total_acked
        ));
    }
    Ok(summary)
}

fn producer_body(driver: Driver, ctx: WorkerCtx) -> Result<Box<dyn FnOnce() -> Result<()> + Send>> {
    match driver {
        Driver::Builtin => Ok(Box::new(move || super::producer::run(ctx))),
        #[cfg(feature = "rdkafka")]
        Driver::Rdkafka => Ok(Box::new(move || crate::rdkafka_driver::produce(ctx))),
        #[cfg(not(feature = "rdkafka"))]
        Driver::Rdkafka => bail!("built without the `rdkafka` feature"),
    }
}

fn consumer_body(driver: Driver, ctx: WorkerCtx) -> Result<Box<dyn FnOnce() -> Result<()> + Send>> {
    match driver {
        Driver::Builtin => Ok(Box::new(move || super::consumer::run(ctx))),
        #[cfg(feature = "rdkafka")]
        Driver::Rdkafka => Ok(Box::new(move || crate::rdkafka_driver::consume(ctx))),
        #[cfg(not(feature = "rdkafka"))]
        Driver::Rdkafka => bail!("built without the `rdkafka` feature"),
    }
}

/// Per-tick sums of the workers' reports.
struct TickAgg {
    reports: usize,
    sent: u64,
    produced: u64,
    produced_bytes: u64,
    consumed: u64,
    consumed_bytes: u64,
    errors: u64,
    produce: Histogram<u64>,
    e2e: Histogram<u64>,
}

/// Host CPU steal over a run, and its worst second (sampled about once a second).
struct StealMeter {
    start: Option<(f64, Instant)>,
    last: Option<(f64, Instant)>,
    worst_second_cores: f64,
}

impl StealMeter {
    fn start() -> Self {
        let now = proc_stats::steal_secs().ok().map(|s| (s, Instant::now()));
        StealMeter {
            start: now,
            last: now,
            worst_second_cores: 0.0,
        }
    }

    fn sample(&mut self) {
        let Some((before, at)) = self.last else {
            return;
        };
        if at.elapsed() < Duration::from_secs(1) {
            return;
        }
        if let Ok(now) = proc_stats::steal_secs() {
            let cores = (now - before) / at.elapsed().as_secs_f64();
            self.worst_second_cores = self.worst_second_cores.max(cores);
            self.last = Some((now, Instant::now()));
        }
    }

    fn finish(self) -> Option<HostSteal> {
        let (before, at) = self.start?;
        let secs = proc_stats::steal_secs().ok()? - before;
        let stolen = CpuTime::new(secs, at.elapsed().as_secs_f64());
        Some(HostSteal {
            worst_second_cores: self.worst_second_cores.max(stolen.cores),
            stolen,
        })
    }
}

/// Merges reports into ticks, and ticks into the summary.
struct Aggregate {
    workers: usize,
    warmup: u64,
    duration: u64,
    ticks: Vec<TickAgg>,
    printed: usize,
}

impl Aggregate {
    fn new(s: &Scenario, workers: usize) -> Self {
        Aggregate {
            workers,
            warmup: s.warmup_secs,
            duration: s.duration_secs,
            ticks: Vec::new(),
            printed: 0,
        }
    }

    /// Adds a report; returns the progress line of a tick every worker has reported.
    fn add(&mut self, iv: Interval) -> Option<String> {
        let t = iv.tick as usize;
        while self.ticks.len() <= t {
            self.ticks.push(TickAgg {
                reports: 0,
                sent: 0,
                produced: 0,
                produced_bytes: 0,
                consumed: 0,
                consumed_bytes: 0,
                errors: 0,
                produce: new_histogram(),
                e2e: new_histogram(),
            });
        }
        let tick = &mut self.ticks[t];
        tick.reports += 1;
        tick.errors += iv.errors;
        match iv.role {
            Role::Producer => {
                tick.sent += iv.sent;
                tick.produced += iv.msgs;
                tick.produced_bytes += iv.bytes;
                tick.produce
                    .add(&iv.latency)
                    .expect("same histogram bounds");
            }
            Role::Consumer => {
                tick.consumed += iv.msgs;
                tick.consumed_bytes += iv.bytes;
                tick.e2e.add(&iv.latency).expect("same histogram bounds");
            }
        }
        if t == self.printed && tick.reports >= self.workers && t < self.duration as usize {
            self.printed += 1;
            let p99 = |h: &Histogram<u64>| {
                if h.is_empty() {
                    "-".to_string()
                } else {
                    format!("{:.2} ms", h.value_at_quantile(0.99) as f64 / 1e6)
                }
            };
            // p99 "so far": over every tick since warm-up (or this one while warming up).
            let from = if t as u64 >= self.warmup {
                self.warmup as usize
            } else {
                t
            };
            let mut produce = new_histogram();
            let mut e2e = new_histogram();
            for tk in &self.ticks[from..=t] {
                produce.add(&tk.produce).expect("same bounds");
                e2e.add(&tk.e2e).expect("same bounds");
            }
            let tick = &self.ticks[t];
            return Some(format!(
                "[{:>3}s{}] produce {:>9.0} msg/s {:>7.1} MB/s p99 {:>9} | consume {:>9.0} msg/s e2e p99 {:>9} | errors {}",
                t + 1,
                if (t as u64) < self.warmup { " warm-up" } else { "" },
                tick.produced as f64,
                tick.produced_bytes as f64 / 1e6,
                p99(&produce),
                tick.consumed as f64,
                p99(&e2e),
                tick.errors,
            ));
        }
        None
    }

    fn summary(
        &self,
        s: &Scenario,
        opts: &RunOptions,
        target_rate: Option<f64>,
        probe_rate: Option<f64>,
        broker: Option<BrokerUsage>,
    ) -> RunSummary {
        // Latency: every message after warm-up, including those acknowledged during drain.
        // Throughput: the whole seconds between warm-up and the end.
        let mut produce = new_histogram();
        let mut e2e = new_histogram();
        let (mut produced, mut produced_bytes, mut consumed, mut consumed_bytes) = (0, 0, 0, 0);
        let mut total_sent = 0;
        let mut total_errors = 0;
        for (t, tick) in self.ticks.iter().enumerate() {
            let t = t as u64;
            total_sent += tick.sent;
            total_errors += tick.errors;
            if t < self.warmup {
                continue;
            }
            produce.add(&tick.produce).expect("same bounds");
            e2e.add(&tick.e2e).expect("same bounds");
            if t < self.duration {
                produced += tick.produced;
                produced_bytes += tick.produced_bytes;
                consumed += tick.consumed;
                consumed_bytes += tick.consumed_bytes;
            }
        }
        let secs = (self.duration - self.warmup) as f64;
        let tp = |msgs: u64, bytes: u64| Throughput {
            msgs,
            bytes,
            msgs_per_sec: msgs as f64 / secs,
            mb_per_sec: bytes as f64 / secs / 1e6,
        };
        let produce_tp = tp(produced, produced_bytes);
        let mut notes = Vec::new();
        if let Some(r) = target_rate {
            if produce_tp.msgs_per_sec < 0.95 * r {
                notes.push(format!(
                    "acknowledged {:.0} msg/s of the {r:.0} targeted: the target outran the \
                     broker (or the generator), so latencies include the growing backlog",
                    produce_tp.msgs_per_sec
                ));
            }
        } else if s.producers > 0 {
            notes.push("max rate: latency is measured from message creation (closed loop); use a fixed rate for latency".into());
        }
        RunSummary {
            target: opts.target.clone(),
            bootstrap: opts.bootstrap.clone(),
            driver: format!("{:?}", opts.driver).to_lowercase(),
            scenario: s.clone(),
            target_rate,
            probe_rate,
            measured_secs: secs,
            produce: produce_tp,
            consume: tp(consumed, consumed_bytes),
            produce_latency: Percentiles::of(&produce),
            e2e_latency: Percentiles::of(&e2e),
            produce_histogram: produce,
            e2e_histogram: e2e,
            total_sent,
            total_acked: 0,
            total_consumed: 0,
            total_errors,
            series: self
                .ticks
                .iter()
                .enumerate()
                .map(|(t, tick)| TickPoint {
                    second: t as u64 + 1,
                    produced_msgs: tick.produced,
                    produced_bytes: tick.produced_bytes,
                    consumed_msgs: tick.consumed,
                    produce_p99_us: tick.produce.value_at_quantile(0.99) as f64 / 1e3,
                    e2e_p99_us: tick.e2e.value_at_quantile(0.99) as f64 / 1e3,
                    errors: tick.errors,
                })
                .collect(),
            broker,
            host_steal: None,
            rss_per_new_partition: None,
            disk_sync: None,
            disk_sync_per_partition: None,
            notes,
            command: opts.command.clone(),
        }
    }
}
