//! The recovery points and high watermarks of a shard's partitions, in one file per shard
//! (`offset-checkpoint-shard-<n>` in the data dir), as Kafka keeps them in one file per log
//! dir. Kept per partition, they cost two new files (temp and rename) per partition and
//! flush round: with 10,000 partitions, 20,000 inode allocations a second.
//!
//! Written without fsync: after a crash a file may be old, empty or missing, and each is
//! validated when read. A lost entry costs a full recovery of that partition and a high
//! watermark starting at 0, never data. Entries are keyed by topic id, so a topic created
//! again under an old name never inherits the old one's recovery point.
//!
//! ```text
//! 0                                   version
//! 2                                   entries
//! <topic id> <partition> <recovery point> <high watermark>
//! 6f2d0c6a94a04b87a52c8cbd0c2a3b1e 0 1200 1250
//! 6f2d0c6a94a04b87a52c8cbd0c2a3b1e 1 0 0
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use crate::metadata::replace_file;

const FILE_PREFIX: &str = "offset-checkpoint-shard-";
const VERSION: &str = "0";

/// A partition: its topic's id and its index.
pub type PartitionKey = (Uuid, i32);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// Below it the log was flushed with its indexes: recovery trusts it.
    pub recovery_point: i64,
    pub high_watermark: i64,
}

/// One shard's entries and the file they go to.
pub struct ShardCheckpoint {
    path: PathBuf,
    entries: BTreeMap<PartitionKey, PartitionOffsets>,
    changed: bool,
    /// Numbers the writes taken, so that a write running late on the blocking pool never
    /// replaces a newer one made meanwhile (a clean stop, a truncation).
    taken: u64,
    /// The newest write done. Locked for the length of a write, which also keeps two
    /// writes from sharing the temp file; only the shard and its blocking pool take it.
    written: Arc<Mutex<u64>>,
}

/// A write of a shard's checkpoint file, `Send`, so it can run off the shard.
pub struct CheckpointWrite {
    path: PathBuf,
    text: String,
    number: u64,
    written: Arc<Mutex<u64>>,
}

impl CheckpointWrite {
    pub fn run(self) -> io::Result<()> {
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written > self.number {
            return Ok(());
        }
        replace_file(&self.path, self.text.as_bytes())?;
        *written = self.number;
        Ok(())
    }
}

impl ShardCheckpoint {
    pub fn new(data_dir: &Path, shard: usize) -> Self {
        ShardCheckpoint {
            path: data_dir.join(format!("{FILE_PREFIX}{shard}")),
            entries: BTreeMap::new(),
            changed: false,
            taken: 0,
            written: Arc::new(Mutex::new(0)),
        }
    }

    pub fn set(&mut self, key: PartitionKey, offsets: PartitionOffsets) {
        if self.entries.insert(key, offsets) != Some(offsets) {
            self.changed = true;
        }
    }

    pub fn remove(&mut self, key: PartitionKey) {
        if self.entries.remove(&key).is_some() {
            self.changed = true;
        }
    }

    /// The write to make when an entry changed since the last call.
    pub fn take_changes(&mut self) -> Option<CheckpointWrite> {
        self.changed.then(|| self.take_write())
    }

    fn take_write(&mut self) -> CheckpointWrite {
        self.changed = false;
        let mut text = format!("{VERSION}\n{}\n", self.entries.len());
        for ((topic_id, partition), offsets) in &self.entries {
            let _ = writeln!(
                text,
                "{} {partition} {} {}",
                topic_id.simple(),
                offsets.recovery_point,
                offsets.high_watermark
            );
        }
        self.taken += 1;
        CheckpointWrite {
            path: self.path.clone(),
            text,
            number: self.taken,
            written: self.written.clone(),
        }
    }

    /// Writes the file now, changed or not: an earlier write of the same entries may still
    /// be on its way. Blocking: for a clean stop and before a truncation, which must not
    /// leave a recovery point above what it cuts.
    pub fn write_now(&mut self) -> io::Result<()> {
        self.take_write().run()
    }
}

/// Every shard file's entries. Where a partition is in several files (the shard count
/// changed since they were written) the lower offsets win: too low costs a longer
/// recovery, too high would trust an unflushed tail.
pub fn read_all(data_dir: &Path) -> io::Result<HashMap<PartitionKey, PartitionOffsets>> {
    let mut merged: HashMap<PartitionKey, PartitionOffsets> = HashMap::new();
    for (path, _) in shard_files(data_dir)? {
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => String::new(),
            Err(e) => return Err(e),
        };
        let Some(entries) = parse(&text) else {
            tracing::warn!(path = %path.display(), "ignoring a malformed offset checkpoint");
            continue;
        };
        for (key, offsets) in entries {
            merged
                .entry(key)
                .and_modify(|kept| {
                    kept.recovery_point = kept.recovery_point.min(offsets.recovery_point);
                    kept.high_watermark = kept.high_watermark.min(offsets.high_watermark);
                })
                .or_insert(offsets);
        }
    }
    Ok(merged)
}

/// Removes the files of shards that no longer exist (after [`read_all`]): nothing would
/// rewrite them, and their stale entries would lower every later recovery point.
pub fn remove_files_of_shards_from(data_dir: &Path, shard_count: usize) -> io::Result<()> {
    for (path, shard) in shard_files(data_dir)? {
        if shard >= shard_count {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

fn shard_files(data_dir: &Path) -> io::Result<Vec<(PathBuf, usize)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let shard = name
            .to_str()
            .and_then(|name| name.strip_prefix(FILE_PREFIX))
            .and_then(|shard| shard.parse().ok());
        if let Some(shard) = shard {
            files.push((entry.path(), shard));
        }
    }
    Ok(files)
}

/// The entries of a whole file, or `None` if it is not one (a crash can leave it empty or
/// cut short: the entry count and the final newline tell).
fn parse(text: &str) -> Option<Vec<(PartitionKey, PartitionOffsets)>> {
    if !text.ends_with('\n') {
        return None;
    }
    let mut lines = text.lines();
    if lines.next()? != VERSION {
        return None;
    }
    let count: usize = lines.next()?.parse().ok()?;
    let entries = lines
        .map(|line| {
            let mut fields = line.split(' ');
            let topic_id = Uuid::try_parse(fields.next()?).ok()?;
            let partition = fields.next()?.parse().ok()?;
            let recovery_point: i64 = fields.next()?.parse().ok()?;
            let high_watermark: i64 = fields.next()?.parse().ok()?;
            let valid = fields.next().is_none() && recovery_point >= 0 && high_watermark >= 0;
            valid.then_some((
                (topic_id, partition),
                PartitionOffsets {
                    recovery_point,
                    high_watermark,
                },
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    (entries.len() == count).then_some(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(recovery_point: i64, high_watermark: i64) -> PartitionOffsets {
        PartitionOffsets {
            recovery_point,
            high_watermark,
        }
    }

    #[test]
    fn entries_round_trip_and_unchanged_ones_are_not_rewritten() {
        let dir = tempfile::tempdir().unwrap();
        let topic = Uuid::new_v4();
        let mut shard = ShardCheckpoint::new(dir.path(), 0);
        shard.set((topic, 0), offsets(10, 12));
        shard.set((topic, 1), offsets(0, 0));
        shard.write_now().unwrap();
        shard.set((topic, 0), offsets(10, 12));
        assert!(shard.take_changes().is_none());
        let read = read_all(dir.path()).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[&(topic, 0)], offsets(10, 12));

        shard.remove((topic, 1));
        shard.write_now().unwrap();
        assert!(!read_all(dir.path()).unwrap().contains_key(&(topic, 1)));
    }

    #[test]
    fn a_late_write_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let topic = Uuid::new_v4();
        let mut shard = ShardCheckpoint::new(dir.path(), 0);
        shard.set((topic, 0), offsets(10, 10));
        let late = shard.take_changes().unwrap();
        shard.set((topic, 0), offsets(20, 20));
        shard.write_now().unwrap();
        late.run().unwrap();
        assert_eq!(read_all(dir.path()).unwrap()[&(topic, 0)], offsets(20, 20));
    }

    #[test]
    fn damaged_files_are_ignored_and_duplicates_take_the_lower_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let topic = Uuid::new_v4();
        let mut first = ShardCheckpoint::new(dir.path(), 0);
        first.set((topic, 0), offsets(100, 90));
        first.write_now().unwrap();
        let mut second = ShardCheckpoint::new(dir.path(), 1);
        second.set((topic, 0), offsets(80, 95));
        second.set((topic, 1), offsets(5, 5));
        second.write_now().unwrap();
        let read = read_all(dir.path()).unwrap();
        assert_eq!(read[&(topic, 0)], offsets(80, 90));

        let whole = std::fs::read_to_string(&second.path).unwrap();
        for damaged in [
            "",
            "0\n",
            &whole[..whole.len() - 1],
            &whole.replace("\n2\n", "\n3\n"),
            &whole.replace(" 5 5", " -5 5"),
        ] {
            std::fs::write(&second.path, damaged).unwrap();
            let read = read_all(dir.path()).unwrap();
            assert_eq!(read.len(), 1, "{damaged:?}");
            assert_eq!(read[&(topic, 0)], offsets(100, 90));
        }

        remove_files_of_shards_from(dir.path(), 1).unwrap();
        assert!(!second.path.exists());
        assert!(first.path.exists());
    }
}
