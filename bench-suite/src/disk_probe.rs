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
use serde::Serialize;

use crate::report::Percentiles;
use crate::workload::stats::new_histogram;

/// Largest single write: bounds the buffer should a sync stall for long.
const MAX_WRITE: usize = 64 << 20;

/// What the probe measured.
#[derive(Clone, Debug, Default, Serialize, PartialEq)]
pub struct DiskSync {
    /// The byte rate the writes followed.
    pub target_mb_per_sec: f64,
    pub mb_per_sec: f64,
    pub syncs: u64,
    pub mean_write_bytes: f64,
    /// Latency of each `write` + `fdatasync`.
    pub latency: Percentiles,
}

/// Runs the loop for `duration` at `bytes_per_sec` (at least `min_write` bytes a write)
/// on a scratch file in `dir`, deleted afterwards.
pub fn fdatasync_loop(
    dir: &Path,
    bytes_per_sec: f64,
    min_write: usize,
    duration: Duration,
) -> Result<DiskSync> {
    let path = dir.join(".corelog-bench-fdatasync-probe");
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let result = run_loop(
        &file,
        bytes_per_sec,
        min_write.clamp(1, MAX_WRITE),
        duration,
    );
    drop(file);
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    let (latency, syncs, bytes) = result?;
    let secs = duration.as_secs_f64();
    Ok(DiskSync {
        target_mb_per_sec: bytes_per_sec / 1e6,
        mb_per_sec: bytes as f64 / secs / 1e6,
        syncs,
        mean_write_bytes: bytes as f64 / syncs.max(1) as f64,
        latency,
    })
}

fn run_loop(
    mut file: &File,
    bytes_per_sec: f64,
    min_write: usize,
    duration: Duration,
) -> Result<(Percentiles, u64, u64)> {
    // Non-zero bytes: a filesystem could store zeros sparsely.
    let buf = vec![0x5a_u8; MAX_WRITE];
    let mut hist = new_histogram();
    let (mut syncs, mut bytes) = (0u64, 0u64);
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
        syncs += 1;
        bytes += len as u64;
    }
    Ok((Percentiles::of(&hist), syncs, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_at_the_rate_and_cleans_up() {
        let dir = tempfile::tempdir().unwrap();
        let probe = fdatasync_loop(dir.path(), 2e6, 1000, Duration::from_millis(300)).unwrap();
        assert!(probe.syncs > 0 && probe.latency.count == probe.syncs);
        assert!(probe.mean_write_bytes >= 1000.0);
        // Never above the rate asked for, however fast the disk (the first write is a
        // minimum-size one).
        assert!(probe.mb_per_sec < 2.0 * 1.1 + 0.01, "{probe:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
