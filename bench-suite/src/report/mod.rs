//! What a run produced: percentiles, throughput, the per-second series and broker usage,
//! rendered as a table, JSON and SVG plots.
pub mod proc_stats;
pub mod svg;
pub mod table;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::scenario::Scenario;

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub p9999_us: f64,
    pub max_us: f64,
    /// (percentile, latency in us) from 0 to 99.999 on a log scale, then 100 (max): the
    /// percentile spectrum that is plotted.
    pub spectrum: Vec<(f64, f64)>,
}

impl Percentiles {
    /// The figures of a histogram of nanosecond latencies.
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Percentiles::default();
        }
        let us = |ns: u64| ns as f64 / 1_000.0;
        let at = |q: f64| us(h.value_at_quantile(q));
        // 0 .. 99.999%: q = 1 - 10^-x for x in [0, 5], 20 points per decade.
        let mut spectrum: Vec<(f64, f64)> = (0..=100)
            .map(|i| {
                let q = 1.0 - 10f64.powf(-(i as f64) / 20.0);
                (q * 100.0, at(q))
            })
            .collect();
        spectrum.push((100.0, us(h.max())));
        Percentiles {
            count: h.len(),
            mean_us: h.mean() / 1_000.0,
            p50_us: at(0.5),
            p90_us: at(0.9),
            p99_us: at(0.99),
            p999_us: at(0.999),
            p9999_us: at(0.9999),
            max_us: us(h.max()),
            spectrum,
        }
    }
}

/// Messages and bytes over the measured window.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct Throughput {
    pub msgs: u64,
    pub bytes: u64,
    pub msgs_per_sec: f64,
    pub mb_per_sec: f64,
}

/// One second of the run.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct TickPoint {
    pub second: u64,
    pub produced_msgs: u64,
    pub produced_bytes: u64,
    pub consumed_msgs: u64,
    pub produce_p99_us: f64,
    pub e2e_p99_us: f64,
    pub errors: u64,
}

/// CPU seconds over a stretch of wall-clock seconds.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct CpuTime {
    pub secs: f64,
    pub wall_secs: f64,
    /// CPU seconds per wall second (1.0 = one core busy).
    pub cores: f64,
}

impl CpuTime {
    pub fn new(secs: f64, wall_secs: f64) -> Self {
        CpuTime {
            secs,
            wall_secs,
            cores: secs / wall_secs.max(f64::EPSILON),
        }
    }

    /// Two stretches as one.
    pub fn add(&mut self, other: &CpuTime) {
        *self = CpuTime::new(self.secs + other.secs, self.wall_secs + other.wall_secs);
    }
}

/// Broker resource use over the run (from /proc).
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct BrokerUsage {
    pub pid: i32,
    pub cpu: CpuTime,
    pub peak_rss_bytes: u64,
}

/// CPU time the hypervisor stole from this machine during the run (all CPUs). A stolen
/// 100 ms is a 100 ms stall of whichever of broker and generator was on that vCPU, so
/// latency tails of runs with steal say more about the host than about the broker.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct HostSteal {
    pub stolen: CpuTime,
    /// Stolen CPU seconds per wall second over the worst second of the run.
    pub worst_second_cores: f64,
}

/// Everything a run measured. Latencies and throughput cover the seconds after warm-up;
/// the series covers the whole run.
#[derive(Clone, Debug, Serialize)]
pub struct RunSummary {
    pub target: String,
    pub bootstrap: String,
    pub driver: String,
    pub scenario: Scenario,
    /// The open-loop rate (msg/s) the run aimed at, if any.
    pub target_rate: Option<f64>,
    /// The max rate the probe reached, for `NN%` rates.
    pub probe_rate: Option<f64>,
    pub measured_secs: f64,
    pub produce: Throughput,
    pub consume: Throughput,
    pub produce_latency: Percentiles,
    pub e2e_latency: Percentiles,
    /// The histograms behind the two percentile sets (nanoseconds), to pool rounds.
    #[serde(skip)]
    pub produce_histogram: Histogram<u64>,
    #[serde(skip)]
    pub e2e_histogram: Histogram<u64>,
    /// Whole-run totals, warm-up and drain included.
    pub total_sent: u64,
    pub total_acked: u64,
    pub total_consumed: u64,
    pub total_errors: u64,
    pub series: Vec<TickPoint>,
    pub broker: Option<BrokerUsage>,
    /// None where /proc/stat has no steal column.
    pub host_steal: Option<HostSteal>,
    /// Growth of the broker's RSS while the run's topics were created, per partition:
    /// the memory an idle partition costs. Only for runs creating many partitions.
    pub rss_per_new_partition: Option<f64>,
    /// The disk's own write + fdatasync latency at the same byte rate, for acks=all runs
    /// given the broker's data directory.
    pub disk_sync: Option<crate::disk_probe::DiskSync>,
    /// The same over one file per partition written at once, as a broker keeping a file
    /// per partition syncs them.
    pub disk_sync_per_partition: Option<crate::disk_probe::DiskSync>,
    pub notes: Vec<String>,
    pub command: String,
}

/// The files a report writes into `dir`, named after `stem`: markdown (with the failed
/// targets), JSON of every figure, and the two plots.
pub fn write_files(
    dir: &Path,
    stem: &str,
    scenario: &Scenario,
    runs: &[RunSummary],
    failures: &[String],
    command: &str,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let json = dir.join(format!("{stem}.json"));
    let md = dir.join(format!("{stem}.md"));
    let latency = dir.join(format!("{stem}-latency.svg"));
    let throughput = dir.join(format!("{stem}-throughput.svg"));
    std::fs::write(&json, serde_json::to_string_pretty(runs)?)?;
    std::fs::write(&md, table::markdown(scenario, runs, failures, command))?;
    std::fs::write(&latency, svg::latency_spectrum(runs))?;
    std::fs::write(&throughput, svg::throughput(runs))?;
    Ok(vec![md, json, latency, throughput])
}

/// A UTC timestamp for result directories, `YYYYMMDD-HHMMSS`.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}-{:02}{:02}{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::stats::new_histogram;

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = new_histogram();
        for ms in 1..=1000u64 {
            h.record(ms * 1_000_000).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 1000);
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.002;
        assert!(close(p.p50_us, 500_000.0), "{}", p.p50_us);
        assert!(close(p.p99_us, 990_000.0), "{}", p.p99_us);
        assert!(close(p.p999_us, 999_000.0), "{}", p.p999_us);
        assert!(close(p.max_us, 1_000_000.0));
        assert_eq!(p.spectrum.first().unwrap().0, 0.0);
        assert_eq!(p.spectrum.last().unwrap(), &(100.0, p.max_us));
        assert!(p.spectrum.windows(2).all(|w| w[0].1 <= w[1].1), "monotonic");
        assert_eq!(Percentiles::of(&new_histogram()), Percentiles::default());
    }

    /// The producer measures from intended send times. For a stall this gives the same
    /// distribution HdrHistogram's `record_correct` back-fills, where measuring from the
    /// actual send hides the stall in a single sample (coordinated omission).
    #[test]
    fn intended_start_times_correct_coordinated_omission() {
        let interval = 1_000_000u64; // 1,000 msg/s
        let service = 100_000u64; // each request takes 100 us
        let stall = 500_000_000u64; // the broker stops for 500 ms once
        let mut intended_h = new_histogram();
        let mut naive_h = new_histogram();
        let mut corrected_h = new_histogram();
        let mut free_at = 0u64; // when the (closed-loop) sender can send again
        for i in 0..10_000u64 {
            let intended = i * interval;
            let start = intended.max(free_at);
            let took = if i == 5_000 { stall } else { service };
            let done = start + took;
            free_at = done;
            intended_h.record(done - intended).unwrap();
            naive_h.record(done - start).unwrap();
            corrected_h.record_correct(done - start, interval).unwrap();
        }
        let (intended, naive, corrected) = (
            Percentiles::of(&intended_h),
            Percentiles::of(&naive_h),
            Percentiles::of(&corrected_h),
        );
        // The stall delays ~500 sends: 5% of them. Naively, one sample in 10,000.
        assert!(naive.p99_us < 101.0, "naive p99 {}", naive.p99_us);
        assert!(
            intended.p99_us > 400_000.0,
            "intended p99 {}",
            intended.p99_us
        );
        let close = |a: f64, b: f64| (a - b).abs() / b < 0.05;
        for (a, b) in [
            (intended.p99_us, corrected.p99_us),
            (intended.p999_us, corrected.p999_us),
            (intended.max_us, corrected.max_us),
        ] {
            assert!(close(a, b), "intended {a} vs record_correct {b}");
        }
        assert!(intended.count >= 10_000 && corrected.count > 10_000);
    }

    #[test]
    fn timestamps_look_like_dates() {
        let t = timestamp();
        assert_eq!(t.len(), 15);
        assert!(t.starts_with("20"));
        assert_eq!(&t[8..9], "-");
    }
}
