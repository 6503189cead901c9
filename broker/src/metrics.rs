//! Metrics: per-shard counters and histograms kept in plain `Cell`s (only the owning shard
//! writes them, so no atomics), gathered by the metrics shard at scrape time and rendered
//! in Prometheus' text format.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`): 50 µs to 5 s.
pub const LATENCY_BUCKETS: [f64; 16] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0,
];

/// A latency histogram with fixed buckets (plus +Inf), cheap to record into.
#[derive(Default)]
pub struct LatencyHistogram {
    counts: [Cell<u64>; LATENCY_BUCKETS.len() + 1],
    sum_micros: Cell<u64>,
}

impl LatencyHistogram {
    pub fn record(&self, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        add(&self.counts[bucket], 1);
        add(&self.sum_micros, elapsed.as_micros() as u64);
    }

    fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: std::array::from_fn(|i| self.counts[i].get()),
            sum_micros: self.sum_micros.get(),
        }
    }
}

fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

/// One shard's counters.
#[derive(Default)]
pub struct ShardMetrics {
    /// Requests by API key.
    requests: RefCell<BTreeMap<i16, u64>>,
    /// Error codes in responses (top-level and per partition) by API key and code.
    errors: RefCell<BTreeMap<(i16, i16), u64>>,
    pub produce_latency: LatencyHistogram,
    pub fetch_latency: LatencyHistogram,
    pub fsync_latency: LatencyHistogram,
    /// Fetched record bytes sent from the page cache without a user-space copy, and those
    /// copied through a buffer.
    pub zero_copy_bytes: Cell<u64>,
    pub copied_bytes: Cell<u64>,
    /// Calls this shard sent to other shards over the mesh.
    pub cross_shard_calls: Cell<u64>,
}

impl ShardMetrics {
    pub fn count_request(&self, api_key: i16) {
        *self.requests.borrow_mut().entry(api_key).or_default() += 1;
    }

    /// Counts one error code of a response; 0 (no error) is ignored.
    pub fn count_error(&self, api_key: i16, code: i16) {
        if code != 0 {
            *self.errors.borrow_mut().entry((api_key, code)).or_default() += 1;
        }
    }

    pub fn count(&self, counter: &Cell<u64>, n: u64) {
        add(counter, n);
    }

    pub fn snapshot(&self, shard: usize, connections: usize) -> ShardSnapshot {
        ShardSnapshot {
            shard,
            connections,
            requests: self.requests.borrow().clone(),
            errors: self.errors.borrow().clone(),
            produce_latency: self.produce_latency.snapshot(),
            fetch_latency: self.fetch_latency.snapshot(),
            fsync_latency: self.fsync_latency.snapshot(),
            zero_copy_bytes: self.zero_copy_bytes.get(),
            copied_bytes: self.copied_bytes.get(),
            cross_shard_calls: self.cross_shard_calls.get(),
            partitions: Vec::new(),
            committed: Vec::new(),
        }
    }
}

/// Per-partition traffic, kept by the partition itself.
#[derive(Default)]
pub struct PartitionCounters {
    pub bytes_in: Cell<u64>,
    pub records_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub records_out: Cell<u64>,
}

#[derive(Clone, Debug)]
pub struct HistogramSnapshot {
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum_micros: u64,
}

#[derive(Clone, Debug)]
pub struct PartitionSnapshot {
    pub topic: String,
    pub partition: i32,
    pub log_size_bytes: u64,
    pub log_start_offset: i64,
    pub high_watermark: i64,
    pub bytes_in: u64,
    pub records_in: u64,
    pub bytes_out: u64,
    pub records_out: u64,
}

/// What one shard reports at a scrape; plain data, sent to the metrics shard.
#[derive(Clone, Debug)]
pub struct ShardSnapshot {
    pub shard: usize,
    pub connections: usize,
    requests: BTreeMap<i16, u64>,
    errors: BTreeMap<(i16, i16), u64>,
    produce_latency: HistogramSnapshot,
    fetch_latency: HistogramSnapshot,
    fsync_latency: HistogramSnapshot,
    zero_copy_bytes: u64,
    copied_bytes: u64,
    cross_shard_calls: u64,
    pub partitions: Vec<PartitionSnapshot>,
    /// Committed offsets of the groups this shard coordinates: (group, topic, partition, offset).
    pub committed: Vec<(String, String, i32, i64)>,
}

/// Renders every shard's snapshot as Prometheus text (format 0.0.4).
pub fn render(shards: &[ShardSnapshot]) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let api_name = |key: i16| {
        kafka_protocol::messages::ApiKey::try_from(key)
            .map(|api| format!("{api:?}"))
            .unwrap_or_else(|_| key.to_string())
    };
    family(
        &mut out,
        "corelog_requests_total",
        "counter",
        "Requests served, by shard and API.",
    );
    for s in shards {
        for (api, n) in &s.requests {
            let _ = writeln!(
                out,
                "corelog_requests_total{{shard=\"{}\",api=\"{}\"}} {n}",
                s.shard,
                api_name(*api)
            );
        }
    }
    family(
        &mut out,
        "corelog_request_errors_total",
        "counter",
        "Kafka error codes in responses (request and partition level), by shard, API and code.",
    );
    for s in shards {
        for ((api, code), n) in &s.errors {
            let name = kafka_protocol::error::ResponseError::try_from_code(*code)
                .map(|e| format!("{e:?}"))
                .unwrap_or_else(|| code.to_string());
            let _ = writeln!(
                out,
                "corelog_request_errors_total{{shard=\"{}\",api=\"{}\",code=\"{code}\",error=\"{name}\"}} {n}",
                s.shard,
                api_name(*api)
            );
        }
    }
    for (name, help, pick) in [
        (
            "corelog_produce_latency_seconds",
            "Produce request latency, receipt to response.",
            (|s: &ShardSnapshot| &s.produce_latency) as fn(&ShardSnapshot) -> &HistogramSnapshot,
        ),
        (
            "corelog_fetch_latency_seconds",
            "Fetch request latency, including long-poll waits.",
            |s| &s.fetch_latency,
        ),
        (
            "corelog_fsync_latency_seconds",
            "fdatasync latency of partition logs.",
            |s| &s.fsync_latency,
        ),
    ] {
        family(&mut out, name, "histogram", help);
        for s in shards {
            histogram(&mut out, name, s.shard, pick(s));
        }
    }
    for (name, help, pick) in [
        (
            "corelog_fetch_zero_copy_bytes_total",
            "Fetched record bytes sent without a user-space copy.",
            (|s: &ShardSnapshot| s.zero_copy_bytes) as fn(&ShardSnapshot) -> u64,
        ),
        (
            "corelog_fetch_copied_bytes_total",
            "Fetched record bytes copied through a user-space buffer.",
            |s| s.copied_bytes,
        ),
        (
            "corelog_cross_shard_calls_total",
            "Calls sent to other shards over the mesh.",
            |s| s.cross_shard_calls,
        ),
    ] {
        family(&mut out, name, "counter", help);
        for s in shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.shard, pick(s));
        }
    }
    family(
        &mut out,
        "corelog_connections",
        "gauge",
        "Open client connections.",
    );
    for s in shards {
        let _ = writeln!(
            out,
            "corelog_connections{{shard=\"{}\"}} {}",
            s.shard, s.connections
        );
    }
    partition_metrics(&mut out, shards);
    consumer_lag(&mut out, shards);
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, shard: usize, h: &HistogramSnapshot) {
    let mut cumulative = 0;
    for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += h.counts[i];
        let _ = writeln!(
            out,
            "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {cumulative}"
        );
    }
    cumulative += h.counts[LATENCY_BUCKETS.len()];
    let _ = writeln!(
        out,
        "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        out,
        "{name}_sum{{shard=\"{shard}\"}} {}",
        h.sum_micros as f64 / 1e6
    );
    let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {cumulative}");
}

fn partition_metrics(out: &mut String, shards: &[ShardSnapshot]) {
    type Pick = fn(&PartitionSnapshot) -> String;
    let metrics: [(&str, &str, &str, Pick); 7] = [
        (
            "corelog_partition_bytes_in_total",
            "counter",
            "Record bytes appended.",
            |p| p.bytes_in.to_string(),
        ),
        (
            "corelog_partition_records_in_total",
            "counter",
            "Records appended.",
            |p| p.records_in.to_string(),
        ),
        (
            "corelog_partition_bytes_out_total",
            "counter",
            "Record bytes fetched.",
            |p| p.bytes_out.to_string(),
        ),
        (
            "corelog_partition_records_out_total",
            "counter",
            "Records fetched (offsets covered by fetched batches).",
            |p| p.records_out.to_string(),
        ),
        (
            "corelog_partition_log_size_bytes",
            "gauge",
            "Size of the partition's segments on disk.",
            |p| p.log_size_bytes.to_string(),
        ),
        (
            "corelog_partition_log_start_offset",
            "gauge",
            "First offset still stored.",
            |p| p.log_start_offset.to_string(),
        ),
        (
            "corelog_partition_high_watermark",
            "gauge",
            "Offset after the last readable record.",
            |p| p.high_watermark.to_string(),
        ),
    ];
    for (name, kind, help, pick) in metrics {
        family(out, name, kind, help);
        for s in shards {
            for p in &s.partitions {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{}\",partition=\"{}\"}} {}",
                    p.topic,
                    p.partition,
                    pick(p)
                );
            }
        }
    }
}

/// Lag of each committed group offset: the partition's high watermark minus the offset.
fn consumer_lag(out: &mut String, shards: &[ShardSnapshot]) {
    let high_watermarks: BTreeMap<(&str, i32), i64> = shards
        .iter()
        .flat_map(|s| &s.partitions)
        .map(|p| ((p.topic.as_str(), p.partition), p.high_watermark))
        .collect();
    family(
        out,
        "corelog_consumer_group_lag",
        "gauge",
        "High watermark minus the group's committed offset.",
    );
    for (group, topic, partition, offset) in shards.iter().flat_map(|s| &s.committed) {
        if let Some(hw) = high_watermarks.get(&(topic.as_str(), *partition)) {
            let _ = writeln!(
                out,
                "corelog_consumer_group_lag{{group=\"{group}\",topic=\"{topic}\",partition=\"{partition}\"}} {}",
                (hw - offset).max(0)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = ShardMetrics::default();
        metrics.produce_latency.record(Duration::from_micros(30));
        metrics.produce_latency.record(Duration::from_millis(3));
        metrics.produce_latency.record(Duration::from_secs(10));
        let text = render(&[metrics.snapshot(0, 1)]);
        assert!(
            text.contains("corelog_produce_latency_seconds_bucket{shard=\"0\",le=\"0.00005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("corelog_produce_latency_seconds_bucket{shard=\"0\",le=\"0.005\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("corelog_produce_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("corelog_produce_latency_seconds_count{shard=\"0\"} 3"),
            "{text}"
        );
    }

    #[test]
    fn requests_and_error_codes_are_counted() {
        let metrics = ShardMetrics::default();
        metrics.count_request(0);
        for code in [0, 2, 2] {
            metrics.count_error(0, code);
        }
        let text = render(&[metrics.snapshot(1, 0)]);
        assert!(
            text.contains("corelog_requests_total{shard=\"1\",api=\"Produce\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("code=\"2\",error=\"CorruptMessage\"} 2"),
            "{text}"
        );
    }
}
