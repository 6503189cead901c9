//! The same workload driven through librdkafka, to cross-check the built-in client: if both
//! report similar figures against one broker, neither client is the bottleneck. Same
//! schedule (intended send times, stamped into the value), same reports; librdkafka does its
//! own batching, pipelining and (for keyless messages) partition stickiness.

use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::clock::now_ns;
use crate::workload::keys::{key_hash, message_size, KeyGen, Rng};
use crate::workload::producer::sleep_until;
use crate::workload::runner::{Membership, WorkerCtx};
use crate::workload::scenario::{Acks, GroupProtocol, Scenario};
use crate::workload::stats::{Reporter, Role};

/// Delivery callbacks run inside `poll` on the producer's own thread; the mutex is never
/// contended, it only satisfies librdkafka's `Sync` bound on contexts.
struct Delivery<'a> {
    reporter: Mutex<Reporter>,
    ctx: &'a WorkerCtx,
}

impl ClientContext for Delivery<'_> {}

impl ProducerContext for Delivery<'_> {
    /// The message's intended send time.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, intended: usize) {
        let now = now_ns();
        let mut r = self.reporter.lock().unwrap();
        match result {
            Ok(msg) => {
                r.record(now.saturating_sub(intended as u64));
                r.msgs += 1;
                r.bytes += msg.payload_len() as u64;
                self.ctx.shared.acked.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => r.errors += 1,
        }
    }
}

fn base_config(ctx: &WorkerCtx) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &ctx.bootstrap)
        .set("client.id", "corelog-bench-rdkafka")
        .set("api.version.request", "true");
    c
}

/// The scenario's own librdkafka settings, over the driver's.
fn with_scenario_settings<'c>(config: &'c mut ClientConfig, s: &Scenario) -> &'c ClientConfig {
    for (key, value) in &s.rdkafka_config {
        config.set(key, value);
    }
    config
}

/// A producer thread through librdkafka.
pub fn produce(ctx: WorkerCtx) -> Result<()> {
    let s = &ctx.scenario;
    let acks = match s.acks {
        Acks::None => "0",
        Acks::Leader => "1",
        Acks::All => "all",
    };
    let mut config = base_config(&ctx);
    config
        .set("acks", acks)
        .set("enable.idempotence", "false")
        .set("linger.ms", s.linger_ms.to_string())
        .set("batch.size", s.batch_size.to_string())
        .set(
            "compression.type",
            format!("{:?}", s.compression).to_lowercase(),
        )
        .set(
            "max.in.flight.requests.per.connection",
            s.max_in_flight.to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            (s.buffer_bytes / 1024).max(1).to_string(),
        )
        .set("queue.buffering.max.messages", "10000000");
    let producer: BaseProducer<Delivery> = with_scenario_settings(&mut config, s)
        .create_with_context(Delivery {
            reporter: Mutex::new(Reporter::new(ctx.tx.clone(), Role::Producer, ctx.t0)),
            ctx: &ctx,
        })
        .context("creating the librdkafka producer")?;
    let parts = &ctx.partitions;
    let mut rng = Rng::new(0xC0FFEE ^ ctx.id as u64);
    let mut keys = KeyGen::new(s.keys, s.key_space);
    let (_, max_size) = s.message_size.bounds();
    let payload: Vec<u8> = (0..max_size + 4096)
        .map(|_| b'a' + (rng.below(16) * rng.below(16) / 10) as u8)
        .collect();
    let mut value = Vec::with_capacity(max_size);
    let interval = ctx.rate.map(|r| 1e9 / r);
    // Keyless messages stay on one partition for about a batch, like the built-in client.
    let per_batch = (s.batch_size / max_size.max(1)).max(1) as u64;
    let header_keys: Vec<String> = (0..s.headers).map(|i| format!("h{i}")).collect();
    // As in the built-in producer, the whole schedule of [t0, end) is sent, late if need be.
    let due_by = |t: u64| {
        interval.map_or(u64::MAX, |iv| {
            (t.min(ctx.end - 1).saturating_sub(ctx.t0) as f64 / iv) as u64 + 1
        })
    };
    let mut generated = 0u64;
    sleep_until(ctx.t0);
    loop {
        let now = now_ns();
        let finished = match interval {
            Some(_) => generated >= due_by(ctx.end),
            None => now >= ctx.end,
        };
        if finished || ctx.shared.abort.load(Ordering::Relaxed) {
            break;
        }
        let due = due_by(now);
        let mut budget = 16_384;
        while generated < due && budget > 0 {
            budget -= 1;
            let intended = interval.map_or(now, |iv| ctx.t0 + (generated as f64 * iv) as u64);
            let size = message_size(s.message_size, &mut rng);
            let offset = rng.below(4096) as usize;
            value.clear();
            value.extend_from_slice(&intended.to_le_bytes()[..size.min(8)]);
            value.extend_from_slice(&payload[offset..offset + size.saturating_sub(8)]);
            let key = keys.next_key(&mut rng);
            let p = match key {
                Some(k) => parts[key_hash(k) as usize % parts.len()],
                None => parts[(generated / per_batch) as usize % parts.len()],
            };
            let info = &ctx.layout.partitions[p];
            let mut record =
                BaseRecord::with_opaque_to(&ctx.layout.topics[info.topic], intended as usize)
                    .partition(info.partition)
                    .payload(&value[..]);
            if !header_keys.is_empty() {
                // librdkafka copies headers into a list of its own per message.
                let mut headers = OwnedHeaders::new_with_capacity(header_keys.len());
                for (i, k) in header_keys.iter().enumerate() {
                    headers = headers.insert(Header {
                        key: k,
                        value: Some(&(i as u64).to_le_bytes()),
                    });
                }
                record = record.headers(headers);
            }
            if let Some(k) = key {
                record = record.key(keys.key_bytes(k));
            }
            match producer.send(record) {
                Ok(()) => {
                    generated += 1;
                    producer.context().reporter.lock().unwrap().sent += 1;
                }
                // librdkafka's queue is full: the schedule keeps running, so the wait shows
                // up as latency of the messages sent late.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
        producer.context().reporter.lock().unwrap().tick(now_ns());
        let next = interval.map_or(now, |iv| ctx.t0 + (generated as f64 * iv) as u64);
        if next > now_ns() {
            // Delivery callbacks run while waiting.
            producer.poll(Duration::from_nanos(next - now_ns()).min(Duration::from_millis(1)));
        }
    }
    while producer.in_flight_count() > 0 && now_ns() < ctx.drain_deadline {
        producer.poll(Duration::from_millis(10));
        producer.context().reporter.lock().unwrap().tick(now_ns());
    }
    let stuck = producer.in_flight_count();
    let mut reporter = producer.context().reporter.lock().unwrap();
    reporter.errors += stuck.max(0) as u64;
    let last = std::mem::replace(
        &mut *reporter,
        Reporter::new(ctx.tx.clone(), Role::Producer, ctx.t0),
    );
    last.finish();
    Ok(())
}

/// Creates `n` consumers in the scenario's group (librdkafka's defaults, `group.protocol`
/// as the scenario says, reading a new group's partitions from the earliest offset) and
/// polls them until every partition is assigned. Each is then paused until its thread
/// resumes it at the start of the run, so the time a group takes to form (the classic
/// protocol's initial rebalance delay: 3 s on Kafka and corelog) is not measured.
pub fn join_group(
    bootstrap: &str,
    s: &Scenario,
    n: usize,
    timeout_ms: u64,
) -> Result<Vec<BaseConsumer>> {
    let protocol = match s.group_protocol {
        GroupProtocol::None => bail!("no group protocol"),
        GroupProtocol::Classic => "classic",
        GroupProtocol::Consumer => "consumer",
    };
    let topics = s.topic_names();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut consumers = Vec::new();
    for _ in 0..n {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", bootstrap)
            .set("client.id", "corelog-bench-rdkafka")
            .set("group.id", &s.consumer_group)
            .set("group.protocol", protocol)
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", s.commit_offsets.to_string());
        let c: BaseConsumer = with_scenario_settings(&mut config, s)
            .create()
            .context("creating a librdkafka group consumer")?;
        c.subscribe(&topics)?;
        consumers.push(c);
    }
    let total = s.topics as usize * s.partitions as usize;
    let deadline = now_ns() + timeout_ms * 1_000_000;
    let mut paused = vec![false; n];
    loop {
        let mut assigned = 0;
        for (c, paused) in consumers.iter().zip(&mut paused) {
            if !*paused {
                // Nothing is fetched before the group assigns partitions, and an assigned
                // consumer is paused before it is polled again, so this returns no message.
                if let Some(m) = c.poll(Duration::from_millis(20)) {
                    m?;
                    bail!("a consumer got a message while the group was forming");
                }
                let mine = c.assignment()?;
                if mine.count() > 0 {
                    c.pause(&mine)?;
                    *paused = true;
                }
            }
            assigned += c.assignment()?.count();
        }
        if assigned == total {
            return Ok(consumers);
        }
        if now_ns() > deadline {
            bail!("the librdkafka group consumers were assigned {assigned} of {total} partitions within {timeout_ms} ms");
        }
    }
}

/// A consumer thread through librdkafka: a paused group member from [`join_group`], or
/// manually assigned without commits. Consume-only runs seek back to the start of the
/// filled data whenever a partition reaches its end.
pub fn consume(mut ctx: WorkerCtx) -> Result<()> {
    let s = ctx.scenario.clone();
    let consumer = match ctx.group.take() {
        Some(Membership::Rdkafka(c)) => {
            c.resume(&c.assignment()?)?;
            c
        }
        _ => {
            let mut config = base_config(&ctx);
            config
                .set("group.id", "corelog-bench-rdkafka")
                .set("enable.auto.commit", "false")
                .set("fetch.wait.max.ms", s.fetch_max_wait_ms.to_string())
                .set("fetch.min.bytes", "1");
            let consumer: BaseConsumer = with_scenario_settings(&mut config, &s)
                .create()
                .context("creating the librdkafka consumer")?;
            let mut tpl = TopicPartitionList::new();
            for &p in &ctx.partitions {
                let info = &ctx.layout.partitions[p];
                tpl.add_partition_offset(
                    &ctx.layout.topics[info.topic],
                    info.partition,
                    Offset::Offset(ctx.start_offsets[p]),
                )?;
            }
            consumer.assign(&tpl)?;
            consumer
        }
    };
    let replay = ctx.replay_end.as_deref();
    let mut reporter = Reporter::new(ctx.tx.clone(), Role::Consumer, ctx.t0);
    while !ctx.shared.stop_consumers.load(Ordering::Relaxed) {
        if let Some(m) = consumer.poll(Duration::from_millis(50)) {
            let now = now_ns();
            match m {
                Ok(m) => {
                    let value = m.payload().unwrap_or_default();
                    if value.len() >= 8 && replay.is_none() {
                        let sent = u64::from_le_bytes(value[..8].try_into().unwrap());
                        reporter.record(now.saturating_sub(sent));
                    }
                    reporter.msgs += 1;
                    reporter.bytes += value.len() as u64;
                    ctx.shared.consumed.fetch_add(1, Ordering::Relaxed);
                    if let Some(ends) = replay {
                        // The layout lists each topic's partitions in order.
                        let ti = ctx.layout.topics.iter().position(|t| t == m.topic());
                        let pi = ti.map(|ti| ti * s.partitions as usize + m.partition() as usize);
                        if let Some(pi) = pi.filter(|&pi| m.offset() + 1 >= ends[pi]) {
                            consumer.seek(
                                m.topic(),
                                m.partition(),
                                Offset::Offset(ctx.start_offsets[pi]),
                                Duration::from_secs(5),
                            )?;
                        }
                    }
                }
                Err(_) => reporter.errors += 1,
            }
        }
        reporter.tick(now_ns());
    }
    reporter.finish();
    Ok(())
}
