//! Descriptor use of logs with many segments: bounded by the shard's file
//! cache, and reads of evicted segments (zero-copy ones in flight included)
//! still return the right bytes.

use std::fs;
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Mutex;

use super::batch::test_util::batch;
use super::fileio::CACHED_FILES_PER_SHARD;
use super::{LogConfig, PartitionLog, ReadSlice, RecoveryStart};

/// Enough segments that holding each one's files open would need thousands
/// of descriptors more than the cache allows.
const SEGMENTS: i64 = 2 * CACHED_FILES_PER_SHARD as i64 + 100;

/// Each test fills its thread's cache: run one at a time so neither counts the
/// other's descriptors.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Descriptors of this process open on `path` (any, if `None`).
fn open_fds(path: Option<&Path>) -> usize {
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| fs::read_link(e.ok()?.path()).ok())
        .filter(|target| path.is_none_or(|p| target == p))
        .count()
}

/// One batch per segment, the record's timestamp equal to its offset.
fn log_of_single_batch_segments(dir: &Path) -> PartitionLog {
    let config = LogConfig {
        segment_bytes: batch(1, 0, 30).len() as u64,
        segment_ms: i64::MAX,
        retention_ms: -1,
        ..LogConfig::default()
    };
    let mut log =
        PartitionLog::open(&dir.join("t-0"), config, RecoveryStart::RecoveryPoint(0)).unwrap();
    for offset in 0..SEGMENTS {
        log.append(&batch(1, offset, 30), 0, 0).unwrap();
    }
    assert_eq!(log.segment_count(), SEGMENTS as usize);
    log
}

/// Reads the batch at `offset` and checks it is the one appended there.
fn check_batch(slice: &ReadSlice, offset: i64) {
    let bytes = slice.read_to_bytes().unwrap();
    assert_eq!(slice.offsets, Some((offset, offset)));
    assert_eq!(bytes, stored_batch(offset));
}

/// The batch as stored at `offset`: as appended, with its base offset set.
fn stored_batch(offset: i64) -> Vec<u8> {
    let mut expected = batch(1, offset, 30).to_vec();
    expected[..8].copy_from_slice(&offset.to_be_bytes());
    expected
}

#[test]
fn descriptors_stay_bounded_and_evicted_segments_read_back() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // Other tests run on other threads: only a growth far above the cache
    // size, as keeping every segment open would cause, fails this test.
    let before = open_fds(None);
    let log = log_of_single_batch_segments(dir.path());
    let bound = CACHED_FILES_PER_SHARD + 200;
    assert!(open_fds(None) < before + bound);
    // Two passes over every segment: the second finds the first evicted.
    for _ in 0..2 {
        for offset in 0..SEGMENTS {
            check_batch(&log.read(offset, 1 << 20).unwrap(), offset);
        }
        assert!(open_fds(None) < before + bound);
    }
    drop(log);
    assert!(open_fds(None) < before + 200);
}

#[test]
fn zero_copy_read_survives_eviction_of_its_file() {
    let _serial = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let log = log_of_single_batch_segments(dir.path());
    let first_path = log.segments()[0].log_path().to_path_buf();
    let in_flight = log.read(0, 1 << 20).unwrap();
    // Reading every other segment evicts segment 0's file from the cache.
    for offset in 1..SEGMENTS {
        check_batch(&log.read(offset, 1 << 20).unwrap(), offset);
    }
    // The in-flight read's own reference is now all that keeps it open...
    assert_eq!(open_fds(Some(&first_path)), 1);
    let (tx, mut rx) = UnixStream::pair().unwrap();
    let mut position = i64::try_from(in_flight.position).unwrap();
    // SAFETY: both descriptors are open for the call; `position` is a valid
    // in/out offset.
    let sent = unsafe {
        libc::sendfile(
            tx.as_raw_fd(),
            in_flight.file.as_raw_fd(),
            &mut position,
            in_flight.len,
        )
    };
    assert_eq!(usize::try_from(sent).ok(), Some(in_flight.len));
    drop(tx);
    let mut received = Vec::new();
    rx.read_to_end(&mut received).unwrap();
    assert_eq!(received, stored_batch(0));
    // ...and the descriptor is closed once the read is done with it.
    drop(in_flight);
    assert_eq!(open_fds(Some(&first_path)), 0);
    // A later read of the segment reopens it.
    check_batch(&log.read(0, 1 << 20).unwrap(), 0);
}
