//! Sparse segment indexes in Kafka's on-disk formats.
//!
//! * `.index`: 8-byte entries `relativeOffset: u32 BE, position: u32 BE`.
//! * `.timeindex`: 12-byte entries `timestamp: i64 BE, relativeOffset: u32 BE`.
//!
//! Entries are added every `index.interval.bytes` of log. The whole index is
//! mirrored in a `Vec` of the on-disk entry type, so lookups are a binary
//! search in memory and persisting new entries is one `write_at` of the
//! vector's unwritten tail: no (de)serialisation step in between.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use zerocopy::byteorder::big_endian::{I64, U32};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::batch::HEADER_SIZE;

/// One `.index` entry as stored on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct OffsetIndexEntry {
    pub relative_offset: U32,
    pub position: U32,
}

/// One `.timeindex` entry as stored on disk.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct TimeIndexEntry {
    pub timestamp: I64,
    pub relative_offset: U32,
}

const _: () = assert!(std::mem::size_of::<OffsetIndexEntry>() == 8);
const _: () = assert!(std::mem::size_of::<TimeIndexEntry>() == 12);

/// Why an index file found on disk is not used (it gets rebuilt instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsaneIndex {
    pub reason: &'static str,
    /// Entry number where the problem was found, if it concerns one entry.
    pub entry: Option<usize>,
}

impl InsaneIndex {
    fn new(reason: &'static str, entry: Option<usize>) -> Self {
        InsaneIndex { reason, entry }
    }
}

impl fmt::Display for InsaneIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.entry {
            Some(i) => write!(f, "{} (entry {i})", self.reason),
            None => f.write_str(self.reason),
        }
    }
}

/// What an index loaded from disk must be consistent with.
#[derive(Debug, Clone, Copy)]
pub struct IndexLimits {
    /// Size of the segment's `.log`: every position must be below it.
    pub log_size: u64,
    /// Largest offset the segment can hold, relative to its base offset.
    pub max_relative_offset: u32,
}

impl IndexLimits {
    /// Each entry points at a distinct batch, so there can be at most one per
    /// minimal batch. Bounding the count before reading keeps a corrupt (say,
    /// hugely sparse) index file from triggering a huge allocation.
    fn max_entries(&self) -> u64 {
        self.log_size / HEADER_SIZE as u64 + 1
    }
}

/// Result of loading an index: an IO error is an `Err` of the outer result,
/// an index that exists but cannot be trusted is an `Err` of the inner one.
pub type LoadResult<T> = io::Result<Result<T, InsaneIndex>>;

/// An append-only file of fixed-size entries with an in-memory mirror.
///
/// No descriptor is kept: the file is opened for each write, and writes only
/// happen when a segment is sealed or rebuilt. 10,000 partitions would
/// otherwise hold 20,000 index descriptors for files nobody reads.
struct IndexFile<E> {
    path: PathBuf,
    entries: Vec<E>,
    /// Entries already written to the file; the rest are pending.
    persisted: usize,
}

impl<E> IndexFile<E>
where
    E: FromBytes + IntoBytes + Immutable + KnownLayout + Copy,
{
    const ENTRY_SIZE: usize = std::mem::size_of::<E>();

    /// A new, empty index. The file is only written (replacing any stale one)
    /// by the first [`IndexFile::write_pending`].
    fn create(path: &Path) -> Self {
        IndexFile {
            path: path.to_path_buf(),
            entries: Vec::new(),
            persisted: 0,
        }
    }

    /// Reads the whole file, checking only that its size is plausible; the
    /// content checks are the caller's, as they differ per index type.
    fn load(path: &Path, max_entries: u64) -> LoadResult<Self> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Err(InsaneIndex::new("missing", None)))
            }
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        if len % Self::ENTRY_SIZE as u64 != 0 {
            return Ok(Err(InsaneIndex::new(
                "size is not a multiple of the entry size",
                None,
            )));
        }
        let count = len / Self::ENTRY_SIZE as u64;
        if count > max_entries {
            return Ok(Err(InsaneIndex::new(
                "more entries than the log has batches",
                None,
            )));
        }
        // At most one 8- or 12-byte entry per 61-byte batch: a fraction of the log size.
        let mut entries = vec![E::new_zeroed(); count as usize];
        file.read_exact_at(entries.as_mut_bytes(), 0)?;
        let persisted = entries.len();
        Ok(Ok(IndexFile {
            path: path.to_path_buf(),
            entries,
            persisted,
        }))
    }

    /// Keeps the leading entries that satisfy `keep` (entries are sorted, so that is a
    /// prefix), cutting the file if it held more.
    fn truncate_prefix(&mut self, keep: impl Fn(&E) -> bool) -> io::Result<()> {
        let len = self.entries.partition_point(keep);
        if len >= self.entries.len() {
            return Ok(());
        }
        self.entries.truncate(len);
        if self.persisted > len {
            OpenOptions::new()
                .write(true)
                .open(&self.path)?
                .set_len((len * Self::ENTRY_SIZE) as u64)?;
            self.persisted = len;
        }
        Ok(())
    }

    /// Writes the entries added since the last call, in one `pwrite`. The file
    /// always exists afterwards, so a sealed segment with no entries reopens
    /// as trusted; nothing persisted yet means any file found is stale and is
    /// truncated.
    fn write_pending(&mut self) -> io::Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(self.persisted == 0)
            .open(&self.path)?;
        let pending = &self.entries[self.persisted..];
        let at = (self.persisted * Self::ENTRY_SIZE) as u64;
        file.write_all_at(pending.as_bytes(), at)?;
        self.persisted = self.entries.len();
        Ok(())
    }
}

/// Converts an absolute offset to one relative to `base`, if it fits an entry.
fn relative(base: i64, offset: i64) -> Option<u32> {
    offset.checked_sub(base).and_then(|r| u32::try_from(r).ok())
}

/// Position of a batch found through the offset index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub offset: i64,
    pub position: u64,
}

/// The `.index` of a segment: maps batch base offsets to file positions.
///
/// Kafka indexes a batch's last offset; we index its base offset. Both give a
/// correct starting point for the forward scan (the entry's batch starts at or
/// before the target), and with the base offset an exact hit needs no scan.
pub struct OffsetIndex {
    base_offset: i64,
    inner: IndexFile<OffsetIndexEntry>,
}

impl OffsetIndex {
    pub fn create(path: &Path, base_offset: i64) -> Self {
        OffsetIndex {
            base_offset,
            inner: IndexFile::create(path),
        }
    }

    /// Loads and sanity-checks an existing `.index`: relative offsets and
    /// positions strictly increasing, offsets within the segment, positions
    /// within the log.
    pub fn load(path: &Path, base_offset: i64, limits: &IndexLimits) -> LoadResult<Self> {
        let inner = match IndexFile::<OffsetIndexEntry>::load(path, limits.max_entries())? {
            Ok(inner) => inner,
            Err(insane) => return Ok(Err(insane)),
        };
        let mut prev: Option<&OffsetIndexEntry> = None;
        for (i, e) in inner.entries.iter().enumerate() {
            let (rel, pos) = (e.relative_offset.get(), e.position.get());
            if rel > limits.max_relative_offset {
                return Ok(Err(InsaneIndex::new("offset beyond the segment", Some(i))));
            }
            if u64::from(pos) >= limits.log_size {
                return Ok(Err(InsaneIndex::new("position beyond the log", Some(i))));
            }
            if let Some(p) = prev {
                if rel <= p.relative_offset.get() || pos <= p.position.get() {
                    return Ok(Err(InsaneIndex::new("entries not increasing", Some(i))));
                }
            }
            prev = Some(e);
        }
        Ok(Ok(OffsetIndex { base_offset, inner }))
    }

    /// Adds an entry for the batch at `position` whose base offset is `offset`.
    /// Entries that would break monotonicity or not fit the format are
    /// skipped (returns false): the index is a hint, a missing entry only
    /// lengthens a scan.
    pub fn append(&mut self, offset: i64, position: u64) -> bool {
        let (Some(rel), Ok(pos)) = (relative(self.base_offset, offset), u32::try_from(position))
        else {
            return false;
        };
        if let Some(last) = self.inner.entries.last() {
            if rel <= last.relative_offset.get() || pos <= last.position.get() {
                return false;
            }
        }
        self.inner.entries.push(OffsetIndexEntry {
            relative_offset: U32::new(rel),
            position: U32::new(pos),
        });
        true
    }

    /// The last entry at or before `target`; the segment start if there is none.
    pub fn lookup(&self, target: i64) -> IndexEntry {
        let rel_target = target.saturating_sub(self.base_offset);
        let n = self
            .inner
            .entries
            .partition_point(|e| i64::from(e.relative_offset.get()) <= rel_target);
        match n.checked_sub(1).map(|i| &self.inner.entries[i]) {
            Some(e) => IndexEntry {
                offset: self.base_offset + i64::from(e.relative_offset.get()),
                position: u64::from(e.position.get()),
            },
            None => IndexEntry {
                offset: self.base_offset,
                position: 0,
            },
        }
    }

    /// The largest indexed batch position `<= position`, if any. Every indexed
    /// position is a batch boundary, which lets a read find where to stop
    /// without reading every header in between.
    pub fn floor_position(&self, position: u64) -> Option<u64> {
        let n = self
            .inner
            .entries
            .partition_point(|e| u64::from(e.position.get()) <= position);
        n.checked_sub(1)
            .map(|i| u64::from(self.inner.entries[i].position.get()))
    }

    /// Removes the entries for offsets `>= offset` (the log was truncated there).
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        let rel = offset.saturating_sub(self.base_offset);
        self.inner
            .truncate_prefix(|e| i64::from(e.relative_offset.get()) < rel)
    }

    pub fn last_entry(&self) -> Option<IndexEntry> {
        self.inner.entries.last().map(|e| IndexEntry {
            offset: self.base_offset + i64::from(e.relative_offset.get()),
            position: u64::from(e.position.get()),
        })
    }

    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    pub fn write_pending(&mut self) -> io::Result<()> {
        self.inner.write_pending()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

/// The `.timeindex` of a segment: maps "largest timestamp so far" to the base
/// offset of the batch where that timestamp first appeared.
///
/// Entries are only added when the timestamp strictly grows, so for an entry
/// `(t, o)` every record before batch `o` has a timestamp `< t`. That is what
/// makes "the last entry with timestamp <= target" a safe place to start
/// searching for the first record with timestamp >= target.
pub struct TimeIndex {
    base_offset: i64,
    inner: IndexFile<TimeIndexEntry>,
}

impl TimeIndex {
    pub fn create(path: &Path, base_offset: i64) -> Self {
        TimeIndex {
            base_offset,
            inner: IndexFile::create(path),
        }
    }

    /// Loads and sanity-checks an existing `.timeindex`: timestamps strictly
    /// increasing, offsets non-decreasing and within the segment.
    pub fn load(path: &Path, base_offset: i64, limits: &IndexLimits) -> LoadResult<Self> {
        let inner = match IndexFile::<TimeIndexEntry>::load(path, limits.max_entries())? {
            Ok(inner) => inner,
            Err(insane) => return Ok(Err(insane)),
        };
        let mut prev: Option<&TimeIndexEntry> = None;
        for (i, e) in inner.entries.iter().enumerate() {
            if e.relative_offset.get() > limits.max_relative_offset {
                return Ok(Err(InsaneIndex::new("offset beyond the segment", Some(i))));
            }
            if let Some(p) = prev {
                if e.timestamp.get() <= p.timestamp.get()
                    || e.relative_offset.get() < p.relative_offset.get()
                {
                    return Ok(Err(InsaneIndex::new("entries not increasing", Some(i))));
                }
            }
            prev = Some(e);
        }
        Ok(Ok(TimeIndex { base_offset, inner }))
    }

    /// Adds `(timestamp, offset)` if the timestamp is larger than the last
    /// entry's (and the offset not smaller). Returns whether it was added.
    pub fn maybe_append(&mut self, timestamp: i64, offset: i64) -> bool {
        let Some(rel) = relative(self.base_offset, offset) else {
            return false;
        };
        if let Some(last) = self.inner.entries.last() {
            if timestamp <= last.timestamp.get() || rel < last.relative_offset.get() {
                return false;
            }
        }
        self.inner.entries.push(TimeIndexEntry {
            timestamp: I64::new(timestamp),
            relative_offset: U32::new(rel),
        });
        true
    }

    /// The last entry with timestamp `<= target`, as `(timestamp, offset)`.
    pub fn lookup(&self, target: i64) -> Option<(i64, i64)> {
        let n = self
            .inner
            .entries
            .partition_point(|e| e.timestamp.get() <= target);
        n.checked_sub(1)
            .map(|i| self.to_abs(&self.inner.entries[i]))
    }

    /// Removes the entries pointing at offsets `>= offset` (the log was truncated there).
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<()> {
        let rel = offset.saturating_sub(self.base_offset);
        self.inner
            .truncate_prefix(|e| i64::from(e.relative_offset.get()) < rel)
    }

    pub fn last_entry(&self) -> Option<(i64, i64)> {
        self.inner.entries.last().map(|e| self.to_abs(e))
    }

    fn to_abs(&self, e: &TimeIndexEntry) -> (i64, i64) {
        (
            e.timestamp.get(),
            self.base_offset + i64::from(e.relative_offset.get()),
        )
    }

    pub fn len(&self) -> usize {
        self.inner.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.entries.is_empty()
    }

    pub fn write_pending(&mut self) -> io::Result<()> {
        self.inner.write_pending()
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 1_000;
    const LIMITS: IndexLimits = IndexLimits {
        log_size: 100_000,
        max_relative_offset: 10_000,
    };

    fn offset_index(dir: &Path) -> OffsetIndex {
        let mut idx = OffsetIndex::create(&dir.join("x.index"), BASE);
        for (off, pos) in [(1_010, 4_100), (1_020, 8_300), (1_035, 12_500)] {
            assert!(idx.append(off, pos));
        }
        idx.write_pending().unwrap();
        idx
    }

    #[test]
    fn offset_lookup_exact_between_and_before_first() {
        let dir = tempfile::tempdir().unwrap();
        let idx = offset_index(dir.path());
        let at = |offset, position| IndexEntry { offset, position };
        assert_eq!(idx.lookup(1_020), at(1_020, 8_300)); // exact
        assert_eq!(idx.lookup(1_034), at(1_020, 8_300)); // between entries
        assert_eq!(idx.lookup(99_999), at(1_035, 12_500)); // after the last
        assert_eq!(idx.lookup(1_005), at(BASE, 0)); // before the first
        assert_eq!(idx.lookup(i64::MIN), at(BASE, 0));
        assert_eq!(idx.floor_position(8_299), Some(4_100));
        assert_eq!(idx.floor_position(8_300), Some(8_300));
        assert_eq!(idx.floor_position(100), None);
    }

    #[test]
    fn offset_append_rejects_non_monotonic_and_overflow() {
        let dir = tempfile::tempdir().unwrap();
        let mut idx = offset_index(dir.path());
        assert!(!idx.append(1_035, 20_000)); // same offset
        assert!(!idx.append(1_040, 12_500)); // same position
        assert!(!idx.append(BASE - 1, 30_000)); // before the base
        assert!(!idx.append(BASE + (1 << 33), 30_000)); // relative offset > u32
        assert!(!idx.append(2_000, 1 << 33)); // position > u32
        assert_eq!(idx.len(), 3);
    }

    #[test]
    fn offset_index_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        offset_index(dir.path());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24);
        let raw = std::fs::read(&path).unwrap();
        assert_eq!(&raw[..8], &[0, 0, 0, 10, 0, 0, 0x10, 0x04]); // rel 10, pos 4100, BE
        let idx = OffsetIndex::load(&path, BASE, &LIMITS).unwrap().unwrap();
        assert_eq!(idx.len(), 3);
        assert_eq!(idx.lookup(1_021).position, 8_300);
    }

    #[test]
    fn insane_offset_indexes_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.index");
        let missing = OffsetIndex::load(&path, BASE, &LIMITS).unwrap();
        assert_eq!(missing.err().unwrap().reason, "missing");

        offset_index(dir.path());
        let small_log = IndexLimits {
            log_size: 10_000,
            ..LIMITS
        };
        let err = OffsetIndex::load(&path, BASE, &small_log)
            .unwrap()
            .err()
            .unwrap();
        assert_eq!(err, InsaneIndex::new("position beyond the log", Some(2)));

        let mut raw = std::fs::read(&path).unwrap();
        raw[16..24].fill(0); // a zeroed tail entry, as after a crash
        std::fs::write(&path, &raw).unwrap();
        let err = OffsetIndex::load(&path, BASE, &LIMITS)
            .unwrap()
            .err()
            .unwrap();
        assert_eq!(err.reason, "entries not increasing");

        raw.push(0); // partial entry
        std::fs::write(&path, &raw).unwrap();
        let err = OffsetIndex::load(&path, BASE, &LIMITS)
            .unwrap()
            .err()
            .unwrap();
        assert_eq!(err.reason, "size is not a multiple of the entry size");
    }

    #[test]
    fn time_index_lookup_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.timeindex");
        let mut idx = TimeIndex::create(&path, BASE);
        assert!(idx.maybe_append(100, 1_000));
        assert!(!idx.maybe_append(100, 1_005)); // timestamp did not grow
        assert!(idx.maybe_append(200, 1_010));
        assert!(idx.maybe_append(300, 1_010));
        assert!(!idx.maybe_append(400, 1_009)); // offset went back
        idx.write_pending().unwrap();
        assert_eq!(idx.lookup(50), None);
        assert_eq!(idx.lookup(100), Some((100, 1_000)));
        assert_eq!(idx.lookup(250), Some((200, 1_010)));
        assert_eq!(idx.last_entry(), Some((300, 1_010)));

        let loaded = TimeIndex::load(&path, BASE, &LIMITS).unwrap().unwrap();
        assert_eq!(loaded.len(), 3);
        let tight = IndexLimits {
            max_relative_offset: 5,
            ..LIMITS
        };
        let err = TimeIndex::load(&path, BASE, &tight).unwrap().err().unwrap();
        assert_eq!(err.reason, "offset beyond the segment");
    }
}
