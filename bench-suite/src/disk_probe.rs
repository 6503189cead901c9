//! The disk's own durable-write latency, the floor an acks=all broker is measured against:
//! a loop of `write` + `fdatasync` on a file in the broker's data directory (so the same
//! filesystem and device), at the byte rate the broker sustained.
//!
//! Each iteration writes what arrived at that rate since the previous one started, as an
//! ideal group commit would: the write sizes follow the load, as the broker's do, and a
//! slow sync makes the next write larger rather than letting the rate drop.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::report::Percentiles;
use crate::workload::stats::new_histogram;

/// Largest single write: bounds the buffer should a sync stall for long.
const MAX_WRITE: usize = 64 << 20;

/// What the probe measured.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DiskSync {
    /// Files written and synced at once, each by its own thread at an equal share of the
    /// rate.
    pub files: usize,
    /// The byte rate the writes followed.
    pub target_mb_per_sec: f64,
    pub mb_per_sec: f64,
    pub syncs: u64,
    pub mean_write_bytes: f64,
    /// Latency of each `write` + `fdatasync`.
    pub latency: Percentiles,
}

/// Runs the loop for `duration` at `bytes_per_sec` in all (at least `min_write` bytes a
/// write), over `files` scratch files in `dir` written at once, deleted afterwards. One
/// file is the disk's own floor; one per partition is what a broker keeping a file per
/// partition must sync.
pub fn fdatasync_loop(
    dir: &Path,
    bytes_per_sec: f64,
    min_write: usize,
    duration: Duration,
    files: usize,
) -> Result<DiskSync> {
    let files = files.max(1);
    let per_file = bytes_per_sec / files as f64;
    let min_write = min_write.clamp(1, MAX_WRITE);
    // Non-zero bytes: a filesystem could store zeros sparsely.
    let buf = vec![0x5a_u8; MAX_WRITE];
    let results: Vec<Result<(Histogram<u64>, u64)>> = std::thread::scope(|scope| {
        let writers: Vec<_> = (0..files)
            .map(|i| {
                let path = dir.join(format!(".corelog-bench-fdatasync-probe-{i}"));
                let buf = &buf;
                scope.spawn(move || probe_file(&path, buf, per_file, min_write, duration))
            })
            .collect();
        writers
            .into_iter()
            .map(|w| w.join().expect("a disk probe thread panicked"))
            .collect()
    });
    let mut latency = new_histogram();
    let mut bytes = 0;
    for result in results {
        let (hist, written) = result?;
        latency
            .add(&hist)
            .context("merging disk probe histograms")?;
        bytes += written;
    }
    let syncs = latency.len();
    Ok(DiskSync {
        files,
        target_mb_per_sec: bytes_per_sec / 1e6,
        mb_per_sec: bytes as f64 / duration.as_secs_f64() / 1e6,
        syncs,
        mean_write_bytes: bytes as f64 / syncs.max(1) as f64,
        latency: Percentiles::of(&latency),
    })
}

/// One file's loop: the latency of each write + sync, and the bytes written.
fn probe_file(
    path: &Path,
    buf: &[u8],
    bytes_per_sec: f64,
    min_write: usize,
    duration: Duration,
) -> Result<(Histogram<u64>, u64)> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let result = run_loop(&file, buf, bytes_per_sec, min_write, duration);
    drop(file);
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    result
}

fn run_loop(
    mut file: &File,
    buf: &[u8],
    bytes_per_sec: f64,
    min_write: usize,
    duration: Duration,
) -> Result<(Histogram<u64>, u64)> {
    let mut hist = new_histogram();
    let mut bytes = 0u64;
    let begin = Instant::now();
    let mut previous = begin;
    while begin.elapsed() < duration {
        let mut start = Instant::now();
        let mut due = (start - previous).as_secs_f64() * bytes_per_sec;
        if due < min_write as f64 {
            // Faster than the load: wait for a message's worth, as a broker would.
            std::thread::sleep(Duration::from_secs_f64(
                (min_write as f64 - due) / bytes_per_sec,
            ));
            start = Instant::now();
            due = (start - previous).as_secs_f64() * bytes_per_sec;
        }
        let len = (due as usize).clamp(min_write, MAX_WRITE);
        previous = start;
        file.write_all(&buf[..len])?;
        file.sync_data()?;
        hist.saturating_record(start.elapsed().as_nanos() as u64);
        bytes += len as u64;
    }
    Ok((hist, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_at_the_rate_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        for files in [1, 4] {
            let probe =
                fdatasync_loop(dir.path(), 2e6, 1000, Duration::from_millis(300), files).unwrap();
            assert_eq!(probe.files, files);
            assert!(probe.syncs >= files as u64 && probe.latency.count == probe.syncs);
            assert!(probe.mean_write_bytes >= 1000.0);
            // Never above the rate asked for, however fast the disk (each file's first
            // write is a minimum-size one).
            let first_writes = files as f64 * 1000.0 / 0.3 / 1e6;
            assert!(probe.mb_per_sec < 2.0 * 1.1 + first_writes, "{probe:?}");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        }
    }
}
