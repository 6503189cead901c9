//! The results table: one row per figure, one column per target, and for each target after
//! the first its ratio to the first (so `compare` reads across).

use std::fmt::Write;

use super::RunSummary;
use crate::workload::scenario::Scenario;

/// A figure of a run, and whether a larger value is better (for the ratio's reading).
struct Row {
    name: &'static str,
    value: fn(&RunSummary) -> Option<f64>,
    unit: Unit,
}

#[derive(Clone, Copy)]
enum Unit {
    Rate,
    Mb,
    Us,
    Cores,
    Bytes,
    SmallBytes,
    Count,
    Ratio,
}

fn ms(p: f64) -> Option<f64> {
    (p > 0.0).then_some(p)
}

const ROWS: &[Row] = &[
    Row {
        name: "target msg/s",
        value: |r| r.target_rate,
        unit: Unit::Rate,
    },
    Row {
        name: "produce msg/s",
        value: |r| Some(r.produce.msgs_per_sec),
        unit: Unit::Rate,
    },
    Row {
        name: "produce MB/s",
        value: |r| Some(r.produce.mb_per_sec),
        unit: Unit::Mb,
    },
    Row {
        name: "consume msg/s",
        value: |r| Some(r.consume.msgs_per_sec),
        unit: Unit::Rate,
    },
    Row {
        name: "produce p50",
        value: |r| ms(r.produce_latency.p50_us),
        unit: Unit::Us,
    },
    Row {
        name: "produce p90",
        value: |r| ms(r.produce_latency.p90_us),
        unit: Unit::Us,
    },
    Row {
        name: "produce p99",
        value: |r| ms(r.produce_latency.p99_us),
        unit: Unit::Us,
    },
    Row {
        name: "produce p99.9",
        value: |r| ms(r.produce_latency.p999_us),
        unit: Unit::Us,
    },
    Row {
        name: "produce p99.99",
        value: |r| ms(r.produce_latency.p9999_us),
        unit: Unit::Us,
    },
    Row {
        name: "produce max",
        value: |r| ms(r.produce_latency.max_us),
        unit: Unit::Us,
    },
    Row {
        name: "e2e p50",
        value: |r| ms(r.e2e_latency.p50_us),
        unit: Unit::Us,
    },
    Row {
        name: "e2e p90",
        value: |r| ms(r.e2e_latency.p90_us),
        unit: Unit::Us,
    },
    Row {
        name: "e2e p99",
        value: |r| ms(r.e2e_latency.p99_us),
        unit: Unit::Us,
    },
    Row {
        name: "e2e p99.9",
        value: |r| ms(r.e2e_latency.p999_us),
        unit: Unit::Us,
    },
    Row {
        name: "e2e p99.99",
        value: |r| ms(r.e2e_latency.p9999_us),
        unit: Unit::Us,
    },
    Row {
        name: "e2e max",
        value: |r| ms(r.e2e_latency.max_us),
        unit: Unit::Us,
    },
    Row {
        name: "broker CPU (cores)",
        value: |r| r.broker.as_ref().map(|b| b.cpu.cores),
        unit: Unit::Cores,
    },
    Row {
        name: "broker peak RSS",
        value: |r| r.broker.as_ref().map(|b| b.peak_rss_bytes as f64),
        unit: Unit::Bytes,
    },
    Row {
        name: "host CPU steal (cores)",
        value: |r| r.host_steal.as_ref().map(|h| h.stolen.cores),
        unit: Unit::Cores,
    },
    Row {
        name: "host CPU steal, worst second (cores)",
        value: |r| r.host_steal.as_ref().map(|h| h.worst_second_cores),
        unit: Unit::Cores,
    },
    Row {
        name: "broker RSS per new partition",
        value: |r| r.rss_per_new_partition,
        unit: Unit::SmallBytes,
    },
    Row {
        name: "disk write+fdatasync p50",
        value: |r| r.disk_sync.as_ref().map(|d| d.latency.p50_us),
        unit: Unit::Us,
    },
    Row {
        name: "disk write+fdatasync p99",
        value: |r| r.disk_sync.as_ref().map(|d| d.latency.p99_us),
        unit: Unit::Us,
    },
    Row {
        name: "disk probe MB/s",
        value: |r| r.disk_sync.as_ref().map(|d| d.mb_per_sec),
        unit: Unit::Mb,
    },
    Row {
        name: "produce p99 / disk p99",
        value: |r| p99_over_disk(r, r.disk_sync.as_ref()?),
        unit: Unit::Ratio,
    },
    Row {
        name: "disk write+fdatasync p99, a file per partition",
        value: |r| r.disk_sync_per_partition.as_ref().map(|d| d.latency.p99_us),
        unit: Unit::Us,
    },
    Row {
        name: "produce p99 / that",
        value: |r| p99_over_disk(r, r.disk_sync_per_partition.as_ref()?),
        unit: Unit::Ratio,
    },
    Row {
        name: "errors",
        value: |r| Some(r.total_errors as f64),
        unit: Unit::Count,
    },
];

fn p99_over_disk(r: &RunSummary, disk: &crate::disk_probe::DiskSync) -> Option<f64> {
    let disk = disk.latency.p99_us;
    (disk > 0.0).then(|| r.produce_latency.p99_us / disk)
}

fn fmt(v: f64, unit: Unit) -> String {
    match unit {
        Unit::Rate if v >= 1e6 => format!("{:.2}M", v / 1e6),
        Unit::Rate if v >= 1e3 => format!("{:.1}k", v / 1e3),
        Unit::Rate => format!("{v:.0}"),
        Unit::Mb => format!("{v:.1}"),
        Unit::Us if v >= 1000.0 => format!("{:.2} ms", v / 1000.0),
        Unit::Us => format!("{v:.0} us"),
        Unit::Cores => format!("{v:.2}"),
        Unit::Bytes => format!("{:.0} MiB", v / (1 << 20) as f64),
        Unit::SmallBytes => format!("{:.1} KiB", v / 1024.0),
        Unit::Count => format!("{v:.0}"),
        Unit::Ratio => format!("{v:.2}x"),
    }
}

/// A rate in msg/s as the table prints it (`2.23M`, `10.0k`).
pub fn format_rate(msgs_per_sec: f64) -> String {
    fmt(msgs_per_sec, Unit::Rate)
}

/// A latency in microseconds as the table prints it (`412 us`, `2.24 ms`).
pub fn format_us(us: f64) -> String {
    fmt(us, Unit::Us)
}

/// A markdown report: a heading with the scenario, the table, notes, the targets that
/// failed and the command.
pub fn markdown(s: &Scenario, runs: &[RunSummary], failures: &[String], command: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## {}\n\n{}\n", s.name, s.description);
    let rate = match runs.first().and_then(|r| r.target_rate) {
        Some(r) => format!("{r:.0} msg/s open loop"),
        None => s.rate.to_string(),
    };
    let _ = writeln!(
        out,
        "{} topic(s) x {} partitions, {} producer(s) x {} connection(s), {} consumer(s), \
         messages {}, acks={}, batch {} B, linger {} ms, compression {:?}, rate {rate}, \
         {} s ({} s warm-up)\n",
        s.topics,
        s.partitions,
        s.producers,
        s.connections_per_producer,
        s.consumers,
        s.message_size,
        s.acks,
        s.batch_size,
        s.linger_ms,
        s.compression,
        s.duration_secs,
        s.warmup_secs,
    );
    if !s.rdkafka_config.is_empty() {
        let settings: Vec<String> = s
            .rdkafka_config
            .iter()
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect();
        let _ = writeln!(out, "librdkafka settings: {}\n", settings.join(", "));
    }
    if !runs.is_empty() {
        out.push_str(&table(runs));
    }
    for r in runs {
        for n in &r.notes {
            let _ = writeln!(out, "\n- {}: {n}", r.target);
        }
    }
    for f in failures {
        let _ = writeln!(out, "\n- FAILED {f}");
    }
    let _ = writeln!(out, "\nCommand:\n\n    {command}");
    out
}

/// The bare table.
pub fn table(runs: &[RunSummary]) -> String {
    let mut out = String::from("| figure |");
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(out, " {} ({}) |", r.target, r.driver);
        if i > 0 {
            let _ = write!(out, " {} / {} |", r.target, runs[0].target);
        }
    }
    out.push_str("\n|---|");
    for i in 0..runs.len() {
        out.push_str(if i > 0 { "---:|---:|" } else { "---:|" });
    }
    out.push('\n');
    for row in ROWS {
        let values: Vec<Option<f64>> = runs.iter().map(|r| (row.value)(r)).collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let _ = write!(out, "| {} |", row.name);
        for (i, v) in values.iter().enumerate() {
            let _ = write!(
                out,
                " {} |",
                v.map(|v| fmt(v, row.unit)).unwrap_or("-".into())
            );
            if i > 0 {
                let ratio = match (v, values[0]) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                    _ => "-".into(),
                };
                let _ = write!(out, " {ratio} |");
            }
        }
        out.push('\n');
    }
    out
}
