//! The in-process null broker: a short real run of the generator, in which everything the
//! producers sent arrives, is acknowledged, timed, and read back by the tailing consumer;
//! and the records a client produces, fetched back at their offsets, before and after the
//! memory cap drops the oldest.

use std::sync::atomic::Ordering;

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{FetchRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

use corelog_bench::client::admin::{Admin, Layout};
use corelog_bench::client::batch::{BatchBuilder, Compression};
use corelog_bench::client::records::for_each_record;
use corelog_bench::compare::{compare, Target};
use corelog_bench::null_broker;
use corelog_bench::workload::runner::{run, Driver, RunOptions};
use corelog_bench::workload::scenario::{Acks, Scenario};

fn options(addr: std::net::SocketAddr) -> RunOptions {
    RunOptions {
        target: "null".into(),
        bootstrap: addr.to_string(),
        broker_pid: Some(std::process::id() as i32),
        cpus: Vec::new(),
        driver: Driver::Builtin,
        progress: false,
        command: "cargo test".into(),
    }
}

fn scenario() -> Scenario {
    Scenario::parse(
        r#"
        name = "it"
        partitions = 4
        rate = 2000
        duration_secs = 1
        warmup_secs = 0
        drain_secs = 1
        fetch_max_wait_ms = 20
        message_size = { min = 20, max = 200 }
        keys = "zipf"
        headers = 2
        "#,
    )
    .unwrap()
}

#[test]
fn every_message_sent_is_received_acknowledged_and_consumed() {
    let broker = null_broker::start("127.0.0.1:0", null_broker::DEFAULT_RETAIN_MIB << 20).unwrap();
    let r = run(&scenario(), &options(broker.addr)).unwrap();
    let received = broker.stats.records.load(Ordering::Relaxed);
    // Open loop at 2,000 msg/s for 1 s: the schedule is sent whole, even by a late thread.
    assert_eq!(r.total_sent, 2_000);
    assert_eq!(received, r.total_sent);
    assert_eq!(r.total_acked, r.total_sent);
    assert_eq!(r.total_errors, 0);
    assert_eq!(r.produce_latency.count, r.total_acked);
    assert!(r.produce_latency.p50_us > 0.0 && r.produce_latency.p50_us <= r.produce_latency.max_us);
    // The consumer got every record back, and timed those past the (zero) warm-up.
    assert_eq!(r.total_consumed, r.total_acked);
    assert!(r.e2e_latency.count > 0 && r.e2e_latency.count <= r.total_consumed);
    assert!(r.broker.as_ref().unwrap().peak_rss_bytes > 0);
    // Steal is measured over the whole run (1 s plus the drain), whatever the host.
    let steal = r.host_steal.as_ref().unwrap();
    assert!(steal.stolen.wall_secs >= 1.0, "{steal:?}");
    assert!(steal.stolen.secs >= 0.0, "{steal:?}");
    assert!(steal.worst_second_cores >= steal.stolen.cores, "{steal:?}");
    assert_eq!(
        r.series.iter().map(|t| t.produced_msgs).sum::<u64>(),
        r.total_acked
    );
}

#[test]
fn a_compare_in_rounds_pools_every_round_of_each_target() {
    let brokers: Vec<_> = (0..2)
        .map(|_| null_broker::start("127.0.0.1:0", null_broker::DEFAULT_RETAIN_MIB << 20).unwrap())
        .collect();
    let targets: Vec<Target> = brokers
        .iter()
        .enumerate()
        .map(|(i, b)| format!("n{i}={}", b.addr).parse().unwrap())
        .collect();
    let (runs, failures) = compare(&scenario(), &targets, &options(brokers[0].addr), 2);
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        runs.iter().map(|r| r.target.as_str()).collect::<Vec<_>>(),
        ["n0", "n1"]
    );
    for (r, b) in runs.iter().zip(&brokers) {
        // Two rounds of 2,000 messages in 1 s each, every one received and timed.
        assert_eq!(r.total_sent, 4_000);
        assert_eq!(b.stats.records.load(Ordering::Relaxed), 4_000);
        assert_eq!(r.total_acked, 4_000);
        assert_eq!(r.produce_latency.count, 4_000);
        assert_eq!(r.measured_secs, 2.0);
        assert_eq!(r.produce.msgs as f64 / 2.0, r.produce.msgs_per_sec);
        assert_eq!(
            r.series.iter().map(|t| t.produced_msgs).sum::<u64>(),
            r.total_acked
        );
        assert!(r.series.windows(2).all(|w| w[0].second < w[1].second));
        assert!(r.host_steal.as_ref().unwrap().stolen.wall_secs >= 2.0);
        assert!(
            r.notes
                .iter()
                .any(|n| n.starts_with("pooled over 2 rounds") && n.contains("consume ")),
            "{:?}",
            r.notes
        );
    }
}

#[test]
fn acks_zero_completes_on_write() {
    let broker = null_broker::start("127.0.0.1:0", null_broker::DEFAULT_RETAIN_MIB << 20).unwrap();
    let mut s = scenario();
    s.acks = Acks::None;
    s.consumers = 0;
    s.compression = "lz4".parse().unwrap();
    let r = run(&s, &options(broker.addr)).unwrap();
    assert_eq!(r.total_sent, 2_000);
    assert_eq!(r.total_acked, r.total_sent);
    // acks=0 requests get no response: wait until the broker has read them all.
    for _ in 0..100 {
        if broker.stats.records.load(Ordering::Relaxed) == r.total_sent {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(broker.stats.records.load(Ordering::Relaxed), r.total_sent);
}

const TOPIC: &str = "t";

fn topic() -> TopicName {
    TopicName(StrBytes::from_static_str(TOPIC))
}

/// An admin client on a fresh null broker keeping `retain_bytes`, with topic `t` of 2
/// partitions.
fn client(retain_bytes: usize) -> (null_broker::NullBroker, Admin, Layout) {
    let broker = null_broker::start("127.0.0.1:0", retain_bytes).unwrap();
    let mut admin = Admin::connect(broker.addr).unwrap();
    let (layout, _) = admin.ensure_topics(&[TOPIC.to_owned()], 2).unwrap();
    (broker, admin, layout)
}

/// The records field of one batch whose values are `values`, as 8 bytes each.
fn batch(values: impl IntoIterator<Item = u64>) -> Vec<u8> {
    let mut b = BatchBuilder::default();
    for v in values {
        b.push(0, None, &[&v.to_le_bytes()], &[]);
    }
    let mut records = Vec::new();
    b.finish_into(&mut records, Compression::None).unwrap();
    records
}

/// Produces `records` to partition `p`; returns the base offset the broker assigned.
fn produce(admin: &mut Admin, p: i32, records: Vec<u8>) -> i64 {
    let req = ProduceRequest::default()
        .with_acks(1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(topic())
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(p)
                .with_records(Some(records.into()))])]);
    let resp = admin.call(&req, admin.versions.produce).unwrap();
    let answer = &resp.responses[0].partition_responses[0];
    assert_eq!(answer.error_code, 0);
    answer.base_offset
}

/// (offset, value) of the records one Fetch of partition `p` from `offset` returns.
fn fetch(admin: &mut Admin, p: i32, offset: i64, max_wait_ms: i32) -> Vec<(i64, u64)> {
    let req = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(topic())
            .with_partitions(vec![FetchPartition::default()
                .with_partition(p)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20)])]);
    let resp = admin.call(&req, admin.versions.fetch).unwrap();
    let part = &resp.responses[0].partitions[0];
    assert_eq!(part.error_code, 0);
    let mut got = Vec::new();
    for_each_record(part.records.as_ref().unwrap(), offset, |o, v| {
        got.push((o, u64::from_le_bytes(v.try_into().unwrap())))
    })
    .unwrap();
    got
}

#[test]
fn a_consumer_reads_back_the_produced_records_at_their_offsets() {
    let (broker, mut admin, layout) = client(null_broker::DEFAULT_RETAIN_MIB << 20);
    assert_eq!(produce(&mut admin, 0, batch([1, 2, 3])), 0);
    assert_eq!(produce(&mut admin, 1, batch([10])), 0);
    assert_eq!(produce(&mut admin, 0, batch([4, 5])), 3);
    assert_eq!(admin.list_offsets(&layout, -2).unwrap(), [0, 0]);
    assert_eq!(admin.list_offsets(&layout, -1).unwrap(), [5, 1]);
    let p0: Vec<_> = (0..5).zip(1..=5).collect();
    assert_eq!(fetch(&mut admin, 0, 0, 0), p0);
    assert_eq!(fetch(&mut admin, 0, 4, 0), p0[4..]);
    assert_eq!(fetch(&mut admin, 1, 0, 0), [(0, 10)]);

    // A fetch at the end waits for the next produce: were it not woken, it would come
    // back empty at the end of its long poll.
    let fetches = broker.stats.fetches.load(Ordering::Relaxed);
    let mut tailing = Admin::connect(broker.addr).unwrap();
    let waiting = std::thread::spawn(move || fetch(&mut tailing, 1, 1, 60_000));
    while broker.stats.fetches.load(Ordering::Relaxed) == fetches && !waiting.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert_eq!(produce(&mut admin, 1, batch([11])), 1);
    assert_eq!(waiting.join().unwrap(), [(1, 11)]);
}

#[test]
fn past_the_memory_cap_the_oldest_batches_go_and_a_fetch_below_starts_at_the_oldest_kept() {
    let cap = 64 << 10;
    let (_broker, mut admin, layout) = client(cap);
    let per_batch = 100;
    let mut batch_bytes = 0;
    for i in 0..100 {
        let records = batch(i * per_batch..(i + 1) * per_batch);
        batch_bytes = records.len();
        assert_eq!(produce(&mut admin, 0, records), (i * per_batch) as i64);
    }
    let earliest = admin.list_offsets(&layout, -2).unwrap()[0];
    assert_eq!(admin.list_offsets(&layout, -1).unwrap()[0], 10_000);
    // Whole batches went, and what is kept fits the cap.
    assert!(earliest > 0 && earliest % per_batch as i64 == 0);
    assert!((10_000 - earliest) as usize / per_batch as usize * batch_bytes <= cap);
    // Offset 0 is gone: the fetch answers from the oldest kept batch, values as produced.
    let got = fetch(&mut admin, 0, 0, 0);
    let expected: Vec<_> = (earliest..10_000).map(|o| (o, o as u64)).collect();
    assert_eq!(got, expected);
}
