//! A short real run of the generator against the in-process null broker: everything the
//! producers sent arrives, is acknowledged, and is timed; the consumer loop runs.

use std::sync::atomic::Ordering;

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
fn every_message_sent_is_received_and_acknowledged() {
    let broker = null_broker::start("127.0.0.1:0").unwrap();
    let r = run(&scenario(), &options(broker.addr)).unwrap();
    let received = broker.stats.records.load(Ordering::Relaxed);
    // Open loop at 2,000 msg/s for 1 s: the schedule is sent whole, even by a late thread.
    assert_eq!(r.total_sent, 2_000);
    assert_eq!(received, r.total_sent);
    assert_eq!(r.total_acked, r.total_sent);
    assert_eq!(r.total_errors, 0);
    assert_eq!(r.produce_latency.count, r.total_acked);
    assert!(r.produce_latency.p50_us > 0.0 && r.produce_latency.p50_us <= r.produce_latency.max_us);
    // The consumer fetched (long polls of 20 ms) and, from a broker that stores nothing, got nothing.
    assert!(broker.stats.fetches.load(Ordering::Relaxed) >= 10);
    assert_eq!(r.total_consumed, 0);
    assert!(r.broker.as_ref().unwrap().peak_rss_bytes > 0);
    assert_eq!(
        r.series.iter().map(|t| t.produced_msgs).sum::<u64>(),
        r.total_acked
    );
}

#[test]
fn acks_zero_completes_on_write() {
    let broker = null_broker::start("127.0.0.1:0").unwrap();
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
