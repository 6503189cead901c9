//! Side by side: one scenario against several targets in turn (never at once: they would
//! share this machine's cores), then one table with each target's ratio to the first.

use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::report::table::{format_rate, format_us};
use crate::report::{Percentiles, RunSummary, Throughput};
use crate::workload::runner::{run, RunOptions};
use crate::workload::scenario::Scenario;

/// `name=host:port` or `name=host:port@pid` (the pid adds broker CPU and memory figures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub bootstrap: String,
    pub pid: Option<i32>,
}

impl FromStr for Target {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (name, rest) = s
            .split_once('=')
            .context("a target is name=host:port[@pid]")?;
        let (bootstrap, pid) = match rest.split_once('@') {
            Some((b, p)) => (b, Some(p.parse().context("target pid")?)),
            None => (rest, None),
        };
        if name.is_empty() || bootstrap.is_empty() {
            bail!("a target is name=host:port[@pid]");
        }
        Ok(Target {
            name: name.into(),
            bootstrap: bootstrap.into(),
            pid,
        })
    }
}

/// Runs `scenario` against each target `rounds` times, the order reversed every other
/// round, and pools each target's rounds. Whichever target runs first is often favoured
/// here (the page cache and disk writeback carry over from one run to the next), so a
/// single pass gives ratios that depend on the order. A target that fails is reported (as
/// `name: error`), skipped in later rounds, and the others still run, so one broken peer
/// hides no one's figures.
pub fn compare(
    scenario: &Scenario,
    targets: &[Target],
    base: &RunOptions,
    rounds: u32,
) -> (Vec<RunSummary>, Vec<String>) {
    let mut per_target: Vec<Vec<RunSummary>> = vec![Vec::new(); targets.len()];
    let mut failures = Vec::new();
    let mut failed = vec![false; targets.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..targets.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            if failed[i] {
                continue;
            }
            let t = &targets[i];
            if base.progress {
                eprintln!(
                    "== {} ({}), round {} of {rounds} ==",
                    t.name,
                    t.bootstrap,
                    round + 1
                );
            }
            let opts = RunOptions {
                target: t.name.clone(),
                bootstrap: t.bootstrap.clone(),
                broker_pid: t.pid,
                ..base.clone()
            };
            match run(scenario, &opts) {
                Ok(r) => per_target[i].push(r),
                Err(e) => {
                    eprintln!("Error: target {}: {e:#}", t.name);
                    failures.push(format!("{}: {e:#}", t.name));
                    failed[i] = true;
                }
            }
        }
    }
    let runs = per_target
        .into_iter()
        .zip(failed)
        .filter(|(_, failed)| !failed)
        .filter_map(|(runs, _)| pool(runs))
        .collect();
    (runs, failures)
}

/// One target's rounds as one run: counts and seconds add up, latency histograms merge,
/// the series runs on from round to round, and a note gives each round's figures so the
/// spread is visible.
fn pool(rounds: Vec<RunSummary>) -> Option<RunSummary> {
    let mut rounds = rounds.into_iter();
    let mut pooled = rounds.next()?;
    let mut produce_rates = vec![pooled.produce.msgs_per_sec];
    let mut produce_p99s = vec![pooled.produce_latency.p99_us];
    let mut consume_rates = vec![pooled.consume.msgs_per_sec];
    let mut target_rates: Vec<f64> = pooled.target_rate.into_iter().collect();
    let mut probe_rates: Vec<f64> = pooled.probe_rate.into_iter().collect();
    for r in rounds {
        produce_rates.push(r.produce.msgs_per_sec);
        produce_p99s.push(r.produce_latency.p99_us);
        consume_rates.push(r.consume.msgs_per_sec);
        target_rates.extend(r.target_rate);
        probe_rates.extend(r.probe_rate);
        pooled.measured_secs += r.measured_secs;
        add_throughput(&mut pooled.produce, &r.produce);
        add_throughput(&mut pooled.consume, &r.consume);
        pooled
            .produce_histogram
            .add(&r.produce_histogram)
            .expect("same histogram bounds");
        pooled
            .e2e_histogram
            .add(&r.e2e_histogram)
            .expect("same histogram bounds");
        pooled.total_sent += r.total_sent;
        pooled.total_acked += r.total_acked;
        pooled.total_consumed += r.total_consumed;
        pooled.total_errors += r.total_errors;
        let offset = pooled.series.len() as u64;
        pooled.series.extend(r.series.into_iter().map(|mut p| {
            p.second += offset;
            p
        }));
        pooled.broker = pool_option(pooled.broker.take(), r.broker, |a, b| {
            a.cpu.add(&b.cpu);
            a.peak_rss_bytes = a.peak_rss_bytes.max(b.peak_rss_bytes);
        });
        pooled.host_steal = pool_option(pooled.host_steal.take(), r.host_steal, |a, b| {
            a.stolen.add(&b.stolen);
            a.worst_second_cores = a.worst_second_cores.max(b.worst_second_cores);
        });
        pooled.rss_per_new_partition = pooled.rss_per_new_partition.or(r.rss_per_new_partition);
        for note in r.notes {
            if !pooled.notes.contains(&note) {
                pooled.notes.push(note);
            }
        }
    }
    if produce_rates.len() < 2 {
        return Some(pooled);
    }
    let secs = pooled.measured_secs.max(f64::EPSILON);
    for tp in [&mut pooled.produce, &mut pooled.consume] {
        tp.msgs_per_sec = tp.msgs as f64 / secs;
        tp.mb_per_sec = tp.bytes as f64 / secs / 1e6;
    }
    pooled.produce_latency = Percentiles::of(&pooled.produce_histogram);
    pooled.e2e_latency = Percentiles::of(&pooled.e2e_histogram);
    let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
    pooled.target_rate = mean(&target_rates);
    pooled.probe_rate = mean(&probe_rates);
    let list = |v: &[f64], format: fn(f64) -> String| {
        v.iter().map(|&x| format(x)).collect::<Vec<_>>().join(", ")
    };
    let mut per_round = Vec::new();
    if pooled.produce.msgs > 0 {
        per_round.push(format!(
            "produce {} msg/s",
            list(&produce_rates, format_rate)
        ));
        per_round.push(format!("produce p99 {}", list(&produce_p99s, format_us)));
    }
    if pooled.consume.msgs > 0 {
        per_round.push(format!(
            "consume {} msg/s",
            list(&consume_rates, format_rate)
        ));
    }
    pooled.notes.push(format!(
        "pooled over {} rounds (order reversed every other round); per round: {}",
        produce_rates.len(),
        per_round.join(", ")
    ));
    Some(pooled)
}

fn pool_option<T>(a: Option<T>, b: Option<T>, add: fn(&mut T, T)) -> Option<T> {
    match (a, b) {
        (Some(mut a), Some(b)) => {
            add(&mut a, b);
            Some(a)
        }
        (a, b) => a.or(b),
    }
}

fn add_throughput(into: &mut Throughput, other: &Throughput) {
    into.msgs += other.msgs;
    into.bytes += other.bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            "corelog=127.0.0.1:9092@42".parse::<Target>().unwrap(),
            Target {
                name: "corelog".into(),
                bootstrap: "127.0.0.1:9092".into(),
                pid: Some(42)
            }
        );
        assert_eq!("null=localhost:9999".parse::<Target>().unwrap().pid, None);
        assert!("127.0.0.1:9092".parse::<Target>().is_err());
        assert!("x=h:1@notapid".parse::<Target>().is_err());
    }
}
