//! The leader epoch cache of a partition: for every leader epoch that wrote to the log,
//! the offset where its batches start. Followers use it (through OffsetForLeaderEpoch and
//! KIP-320's diverging epoch in Fetch) to find where their log parted from the leader's.
//!
//! Persisted as Kafka's `leader-epoch-checkpoint`: a version line `0`, the number of
//! entries, then one `epoch startOffset` line per entry, rewritten atomically on every
//! change (changes come with leader elections, so they are rare).

use std::io;
use std::path::{Path, PathBuf};

use crate::metadata::replace_file;

pub const LEADER_EPOCH_CHECKPOINT: &str = "leader-epoch-checkpoint";
const VERSION: &str = "0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    pub epoch: i32,
    pub start_offset: i64,
}

pub struct LeaderEpochCache {
    path: PathBuf,
    /// Strictly increasing in both epoch and start offset.
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// A cache over `entries` (already validated by the caller), persisted in `dir`.
    pub fn new(dir: &Path, entries: Vec<EpochEntry>) -> Self {
        LeaderEpochCache {
            path: dir.join(LEADER_EPOCH_CHECKPOINT),
            entries,
        }
    }

    /// The entries of the checkpoint in `dir`; `None` when the file is missing, malformed
    /// or not monotonic (the caller rebuilds the cache from the log then).
    pub fn read(dir: &Path) -> io::Result<Option<Vec<EpochEntry>>> {
        let text = match std::fs::read_to_string(dir.join(LEADER_EPOCH_CHECKPOINT)) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(parse(&text))
    }

    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset` if it is newer than the latest epoch
    /// (older or equal epochs change nothing, as in Kafka). Entries at or after
    /// `start_offset` held no batch, so the new epoch replaces them.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) -> io::Result<()> {
        if epoch < 0 || self.latest_epoch().is_some_and(|latest| epoch <= latest) {
            return Ok(());
        }
        self.entries.retain(|e| e.start_offset < start_offset);
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        self.save()
    }

    /// Removes the entries starting at or after `end_offset` (the log was truncated there).
    pub fn truncate_from_end(&mut self, end_offset: i64) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|e| e.start_offset < end_offset);
        if keep == self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(keep);
        self.save()
    }

    /// The log now starts at `start_offset`: entries wholly before it go, and the epoch
    /// holding it is clamped to start there.
    pub fn truncate_from_start(&mut self, start_offset: i64) -> io::Result<()> {
        let holding = self
            .entries
            .partition_point(|e| e.start_offset <= start_offset);
        let Some(first) = holding.checked_sub(1) else {
            return Ok(());
        };
        if first == 0 && self.entries[0].start_offset == start_offset {
            return Ok(());
        }
        self.entries.drain(..first);
        self.entries[0].start_offset = start_offset;
        self.save()
    }

    /// Forgets every epoch (the log was emptied).
    pub fn clear(&mut self) -> io::Result<()> {
        if self.entries.is_empty() {
            return Ok(());
        }
        self.entries.clear();
        self.save()
    }

    /// Kafka's `endOffsetFor`: the largest epoch `<= epoch` and the offset where it ends
    /// (the start of the next epoch, or `log_end_offset` for the latest one). An epoch
    /// below every known one answers itself with the first known start offset: that data
    /// is gone from the log, and a follower must not keep anything past it. `None` is
    /// Kafka's UNDEFINED (-1, -1): a negative epoch, an empty cache, or an epoch beyond
    /// the latest.
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: i64) -> Option<(i32, i64)> {
        let latest = self.entries.last()?;
        if epoch < 0 {
            return None;
        }
        if epoch == latest.epoch {
            return Some((epoch, log_end_offset));
        }
        let higher = self.entries.partition_point(|e| e.epoch <= epoch);
        let next = self.entries.get(higher)?;
        match higher.checked_sub(1) {
            Some(floor) => Some((self.entries[floor].epoch, next.start_offset)),
            None => Some((epoch, next.start_offset)),
        }
    }

    /// Replaces the checkpoint (no fsync: a stale or empty one is rebuilt from the log's
    /// batches when the partition opens, see `load_epochs`).
    pub fn save(&self) -> io::Result<()> {
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for e in &self.entries {
            text.push_str(&format!("{} {}\n", e.epoch, e.start_offset));
        }
        replace_file(&self.path, text.as_bytes())
    }
}

/// Parses a checkpoint; `None` unless well-formed and strictly increasing.
fn parse(text: &str) -> Option<Vec<EpochEntry>> {
    let mut lines = text.lines();
    if lines.next()? != VERSION {
        return None;
    }
    let count: usize = lines.next()?.trim().parse().ok()?;
    let mut entries: Vec<EpochEntry> = Vec::with_capacity(count.min(1024));
    for line in lines.by_ref().take(count) {
        let mut fields = line.split_whitespace();
        let epoch: i32 = fields.next()?.parse().ok()?;
        let start_offset: i64 = fields.next()?.parse().ok()?;
        if fields.next().is_some() || epoch < 0 || start_offset < 0 {
            return None;
        }
        if entries
            .last()
            .is_some_and(|prev| prev.epoch >= epoch || prev.start_offset >= start_offset)
        {
            return None;
        }
        entries.push(EpochEntry {
            epoch,
            start_offset,
        });
    }
    let trailing = lines.any(|l| !l.trim().is_empty());
    (entries.len() == count && !trailing).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(epoch: i32, start_offset: i64) -> EpochEntry {
        EpochEntry {
            epoch,
            start_offset,
        }
    }

    fn file(dir: &Path) -> String {
        std::fs::read_to_string(dir.join(LEADER_EPOCH_CHECKPOINT)).unwrap()
    }

    #[test]
    fn checkpoint_file_round_trip_in_kafka_format() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = LeaderEpochCache::new(dir.path(), Vec::new());
        cache.assign(0, 0).unwrap();
        cache.assign(3, 120).unwrap();
        cache.assign(3, 150).unwrap(); // not newer: ignored
        cache.assign(2, 160).unwrap(); // older: ignored
        assert_eq!(file(dir.path()), "0\n2\n0 0\n3 120\n");
        assert!(!dir.path().join("leader-epoch-checkpoint.tmp").exists());
        let read = LeaderEpochCache::read(dir.path()).unwrap().unwrap();
        assert_eq!(read, vec![entry(0, 0), entry(3, 120)]);
    }

    #[test]
    fn malformed_or_missing_checkpoints_read_as_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(LeaderEpochCache::read(dir.path()).unwrap(), None);
        for bad in [
            "",
            "1\n1\n0 0\n",               // unknown version
            "0\n2\n0 0\n",               // fewer entries than announced
            "0\n1\n0 0\n1 5\n",          // more
            "0\n2\n3 0\n2 10\n",         // epochs not increasing
            "0\n2\n1 10\n2 10\n",        // offsets not increasing
            "0\n1\n-1 0\n",              // negative epoch
            "0\n1\n1 x\n",               // not a number
            "0\n1\n1 2 3\n",             // extra field
            "0\nmany\n",                 // bad count
            "0\n18446744073709551615\n", // huge count: no huge allocation, just None
        ] {
            std::fs::write(dir.path().join(LEADER_EPOCH_CHECKPOINT), bad).unwrap();
            assert_eq!(LeaderEpochCache::read(dir.path()).unwrap(), None, "{bad:?}");
        }
    }

    #[test]
    fn assign_replaces_entries_that_held_no_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = LeaderEpochCache::new(dir.path(), vec![entry(1, 0), entry(2, 10)]);
        // Epoch 2 was elected at 10 but wrote nothing before epoch 4 took over at 10.
        cache.assign(4, 10).unwrap();
        assert_eq!(cache.entries(), [entry(1, 0), entry(4, 10)]);
        assert_eq!(file(dir.path()), "0\n2\n1 0\n4 10\n");
    }

    #[test]
    fn truncation_from_both_ends() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![entry(1, 0), entry(2, 10), entry(5, 20), entry(6, 30)];
        let mut cache = LeaderEpochCache::new(dir.path(), entries);
        cache.truncate_from_end(31).unwrap(); // nothing starts at or after 31
        assert!(!dir.path().join(LEADER_EPOCH_CHECKPOINT).exists());
        cache.truncate_from_end(30).unwrap();
        assert_eq!(cache.entries(), [entry(1, 0), entry(2, 10), entry(5, 20)]);
        cache.truncate_from_start(15).unwrap();
        assert_eq!(cache.entries(), [entry(2, 15), entry(5, 20)]);
        cache.truncate_from_start(20).unwrap();
        assert_eq!(cache.entries(), [entry(5, 20)]);
        assert_eq!(file(dir.path()), "0\n1\n5 20\n");
        cache.truncate_from_start(10).unwrap(); // before the first: unchanged
        assert_eq!(cache.entries(), [entry(5, 20)]);
        cache.clear().unwrap();
        assert_eq!(cache.latest_epoch(), None);
        assert_eq!(file(dir.path()), "0\n0\n");
    }

    #[test]
    fn end_offset_for_epoch_follows_kafka() {
        let dir = tempfile::tempdir().unwrap();
        let empty = LeaderEpochCache::new(dir.path(), Vec::new());
        assert_eq!(empty.end_offset_for(0, 10), None);
        let cache =
            LeaderEpochCache::new(dir.path(), vec![entry(2, 5), entry(4, 20), entry(7, 40)]);
        let leo = 50;
        assert_eq!(cache.end_offset_for(7, leo), Some((7, 50))); // latest: the log end
        assert_eq!(cache.end_offset_for(4, leo), Some((4, 40)));
        assert_eq!(cache.end_offset_for(2, leo), Some((2, 20)));
        // Unknown epochs between known ones: the largest known below, ending where the
        // next known one starts.
        assert_eq!(cache.end_offset_for(3, leo), Some((2, 20)));
        assert_eq!(cache.end_offset_for(6, leo), Some((4, 40)));
        // Below the first known epoch: itself, ending at the first known start.
        assert_eq!(cache.end_offset_for(1, leo), Some((1, 5)));
        // Beyond the latest, or undefined: UNDEFINED.
        assert_eq!(cache.end_offset_for(8, leo), None);
        assert_eq!(cache.end_offset_for(-1, leo), None);
    }
}
