//! One log segment: `<base>.log` plus its `.index` and `.timeindex`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;
use zerocopy::FromBytes;

use super::batch::{
    check_fields, check_frame, BatchIter, RecordBatchHeader, CRC_START, HEADER_SIZE,
    LEADER_EPOCH_OFFSET, LOG_OVERHEAD, MAGIC_OFFSET, MIN_BATCH_LENGTH, NO_TIMESTAMP,
};
use super::fileio::{crc32c_range, iovec, pwritev_all, CachedFile, WindowReader, EMPTY_IOVEC};
use super::index::{IndexLimits, InsaneIndex, LoadResult, OffsetIndex, TimeIndex};

pub const LOG_SUFFIX: &str = ".log";
pub const INDEX_SUFFIX: &str = ".index";
pub const TIME_INDEX_SUFFIX: &str = ".timeindex";

/// Batches written per `pwritev`: 4 iovecs each, well under `IOV_MAX`, and
/// small enough for the iovec array to live on the stack.
const BATCHES_PER_WRITE: usize = 64;
/// Read window of the recovery scan.
const RECOVERY_WINDOW: usize = 1 << 20;

/// `<dir>/<20-digit base offset><suffix>`, Kafka's segment file naming.
pub fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}{suffix}"))
}

/// Base offset encoded in a segment file name with the given suffix.
pub fn parse_segment_name(file_name: &str, suffix: &str) -> Option<i64> {
    let digits = file_name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub(crate) fn system_time_ms(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A batch located in a segment file: where it is and its header.
#[derive(Debug, Clone, Copy)]
pub struct BatchLocation {
    pub position: u64,
    pub size: u64,
    pub header: RecordBatchHeader,
}

impl BatchLocation {
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset.get()
    }

    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    pub fn max_timestamp(&self) -> i64 {
        self.header.max_timestamp.get()
    }

    pub fn end(&self) -> u64 {
        self.position + self.size
    }
}

/// What a recovery scan found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryOutcome {
    pub batches: u64,
    pub valid_bytes: u64,
    /// Bytes cut off the end of the file (0 if the whole file was valid).
    pub truncated_bytes: u64,
}

/// A segment's `.log`. The active segment keeps its file open: appends and
/// reads at the log end (the hot path) cost no extra syscall. Inactive ones go
/// through the shard's bounded cache of open files, so a broker's descriptors
/// do not grow with the number of old segments.
enum SegmentLog {
    Open(Arc<File>, PathBuf),
    Cached(CachedFile),
}

impl SegmentLog {
    fn file(&self) -> io::Result<Arc<File>> {
        match self {
            SegmentLog::Open(file, _) => Ok(Arc::clone(file)),
            SegmentLog::Cached(cached) => cached.get(),
        }
    }

    fn read_exact_at(&self, buf: &mut [u8], position: u64) -> io::Result<()> {
        match self {
            SegmentLog::Open(file, _) => file.read_exact_at(buf, position),
            SegmentLog::Cached(cached) => cached.get()?.read_exact_at(buf, position),
        }
    }

    fn path(&self) -> &Path {
        match self {
            SegmentLog::Open(_, path) => path,
            SegmentLog::Cached(cached) => cached.path(),
        }
    }
}

pub struct LogSegment {
    base_offset: i64,
    log: SegmentLog,
    offset_index: OffsetIndex,
    time_index: TimeIndex,
    /// Bytes of valid batches; appends go here. May be below the file length
    /// only transiently (a failed write is truncated back).
    size: u64,
    /// Offset after the last batch (the segment's end offset).
    next_offset: i64,
    max_timestamp: i64,
    /// Base offset of the first batch holding `max_timestamp`.
    max_timestamp_offset: i64,
    created_at_ms: i64,
    bytes_since_last_index_entry: u64,
    index_interval_bytes: u64,
    /// End of the disk blocks reserved past `size` for appends (see
    /// [`PartitionLog::flush_job`](super::partition_log::PartitionLog::flush_job)); not
    /// known after a restart, when it counts as `size`.
    reserved_end: u64,
}

impl LogSegment {
    /// State of a segment holding no batch yet; `open_*` fill it in.
    fn empty(
        base_offset: i64,
        (log, log_path): (File, PathBuf),
        (offset_index, time_index): (OffsetIndex, TimeIndex),
        created_at_ms: i64,
        index_interval_bytes: usize,
    ) -> Self {
        LogSegment {
            base_offset,
            log: SegmentLog::Open(Arc::new(log), log_path),
            offset_index,
            time_index,
            size: 0,
            next_offset: base_offset,
            max_timestamp: NO_TIMESTAMP,
            max_timestamp_offset: base_offset,
            created_at_ms,
            bytes_since_last_index_entry: 0,
            index_interval_bytes: index_interval_bytes as u64,
            reserved_end: 0,
        }
    }

    /// Creates a new, empty segment. An existing empty `.log` (left by a
    /// roll that failed half-way) is reused; one holding data is an error,
    /// as overwriting it would lose records.
    pub fn create(
        dir: &Path,
        base_offset: i64,
        created_at_ms: i64,
        index_interval_bytes: usize,
    ) -> io::Result<Self> {
        let log_path = segment_path(dir, base_offset, LOG_SUFFIX);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)?;
        if log.metadata()?.len() != 0 {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("segment {} already holds data", log_path.display()),
            ));
        }
        let indexes = create_indexes(dir, base_offset);
        Ok(Self::empty(
            base_offset,
            (log, log_path),
            indexes,
            created_at_ms,
            index_interval_bytes,
        ))
    }

    /// Opens a segment known to be complete and flushed (wholly below the
    /// recovery point) without reading its log: its end offset is the next
    /// segment's base, its max timestamp the last time index entry.
    /// `Ok(Err(_))` means an index is missing or insane and the caller
    /// should use [`LogSegment::open_and_recover`] instead.
    pub fn open_trusted(
        dir: &Path,
        base_offset: i64,
        next_base_offset: i64,
        index_interval_bytes: usize,
    ) -> io::Result<Result<Self, InsaneIndex>> {
        let (log, log_path) = open_log(dir, base_offset)?;
        let size = log.metadata()?.len();
        let max_relative = next_base_offset
            .saturating_sub(base_offset)
            .saturating_sub(1)
            .clamp(0, i64::from(u32::MAX)) as u32;
        let limits = IndexLimits {
            log_size: size,
            max_relative_offset: max_relative,
        };
        let indexes = match load_indexes(dir, base_offset, &limits)? {
            Ok(indexes) => indexes,
            Err(insane) => return Ok(Err(insane)),
        };
        let created_at_ms = file_created_ms(&log);
        let mut segment = Self::empty(
            base_offset,
            (log, log_path),
            indexes,
            created_at_ms,
            index_interval_bytes,
        );
        let (max_timestamp, max_timestamp_offset) = segment
            .time_index
            .last_entry()
            .unwrap_or((NO_TIMESTAMP, base_offset));
        let last_indexed = segment.offset_index.last_entry().map_or(0, |e| e.position);
        segment.size = size;
        segment.next_offset = next_base_offset;
        segment.max_timestamp = max_timestamp;
        segment.max_timestamp_offset = max_timestamp_offset;
        segment.bytes_since_last_index_entry = size - last_indexed; // position < size: checked
        if !segment.last_index_entry_matches_log()? {
            return Ok(Err(InsaneIndex {
                reason: "last entry does not point at its batch",
                entry: segment.offset_index.len().checked_sub(1),
            }));
        }
        Ok(Ok(segment))
    }

    /// Opens the active segment after a clean shutdown: its indexes were flushed, so
    /// only the batches after the last index entry (at most about one index interval)
    /// are read back to find the end offset, instead of the whole segment.
    /// `Ok(Err(_))` means an index is missing or insane: recover instead.
    pub fn open_trusted_active(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: usize,
    ) -> io::Result<Result<(Self, RecoveryOutcome), InsaneIndex>> {
        let mut segment =
            match Self::open_trusted(dir, base_offset, i64::MAX, index_interval_bytes)? {
                Ok(segment) => segment,
                Err(insane) => return Ok(Err(insane)),
            };
        let outcome = segment.replay_from_last_index_entry()?;
        Ok(Ok((segment, outcome)))
    }

    /// Rewinds the in-memory state to right before the last indexed batch was written
    /// (the max timestamp to the last time index entry), then replays the batches from
    /// there to the end of the file exactly as the appends did.
    fn replay_from_last_index_entry(&mut self) -> io::Result<RecoveryOutcome> {
        let (position, offset) = self
            .offset_index
            .last_entry()
            .map_or((0, self.base_offset), |entry| {
                (entry.position, entry.offset)
            });
        let (max_timestamp, max_timestamp_offset) = self
            .time_index
            .last_entry()
            .unwrap_or((NO_TIMESTAMP, self.base_offset));
        self.size = position;
        self.next_offset = offset;
        self.max_timestamp = max_timestamp;
        self.max_timestamp_offset = max_timestamp_offset;
        self.bytes_since_last_index_entry = 0;
        self.recover_from(position)
    }

    /// Removes the batches from `batch` on (the log file and the index entries for
    /// them), as a follower does when its log diverged from the leader's. The state
    /// is rebuilt by replaying the few batches after the last remaining index entry.
    /// The segment is the log's active one afterwards, so it holds its file open again.
    pub fn truncate_to(&mut self, batch: &BatchLocation) -> io::Result<()> {
        let file = self.log.file()?;
        // Shrinking also frees the blocks reserved past the old end.
        file.set_len(batch.position)?;
        self.reserved_end = 0;
        self.log = SegmentLog::Open(file, self.log.path().to_path_buf());
        self.offset_index.truncate_to(batch.base_offset())?;
        self.time_index.truncate_to(batch.base_offset())?;
        self.replay_from_last_index_entry()?;
        Ok(())
    }

    /// Opens a segment whose content is not known to be durable: validates
    /// every batch, rebuilds both indexes and truncates the file at the
    /// first invalid or torn batch.
    pub fn open_and_recover(
        dir: &Path,
        base_offset: i64,
        index_interval_bytes: usize,
    ) -> io::Result<(Self, RecoveryOutcome)> {
        let (log, log_path) = open_log(dir, base_offset)?;
        let created_at_ms = file_created_ms(&log);
        let indexes = create_indexes(dir, base_offset);
        let mut segment = Self::empty(
            base_offset,
            (log, log_path),
            indexes,
            created_at_ms,
            index_interval_bytes,
        );
        let outcome = segment.recover()?;
        Ok((segment, outcome))
    }

    /// Recovery scan from position 0. See [`LogSegment::open_and_recover`].
    fn recover(&mut self) -> io::Result<RecoveryOutcome> {
        self.recover_from(0)
    }

    /// Validates and indexes every batch from `start` (a batch boundary the in-memory
    /// state is at) to the end of the file, truncating at the first invalid one.
    fn recover_from(&mut self, start: u64) -> io::Result<RecoveryOutcome> {
        let log = self.log.file()?;
        let file_len = log.metadata()?.len();
        let mut reader = WindowReader::new(&log, file_len, RECOVERY_WINDOW);
        let mut outcome = RecoveryOutcome::default();
        let mut position = start;
        let mut invalid = None;
        while position < file_len {
            match self.check_stored_batch(&mut reader, position, file_len)? {
                Ok(header) => {
                    let size = self.on_batch_written(position, &header);
                    position += size;
                    outcome.batches += 1;
                }
                Err(reason) => {
                    invalid = Some(reason);
                    break;
                }
            }
        }
        outcome.valid_bytes = position;
        if let Some(reason) = invalid {
            outcome.truncated_bytes = file_len - position;
            tracing::warn!(
                segment = %self.log_path().display(),
                position,
                bytes_cut = outcome.truncated_bytes,
                %reason,
                "truncating log segment at first invalid batch"
            );
            log.set_len(position)?;
        }
        self.offset_index.write_pending()?;
        self.time_index.write_pending()?;
        Ok(outcome)
    }

    /// Validates the stored batch at `position`: framing, magic, CRC, fields,
    /// and that its offsets follow the previous batch's. The outer `Err` is an
    /// IO failure (never a reason to truncate), the inner one a bad batch.
    fn check_stored_batch(
        &self,
        reader: &mut WindowReader<'_>,
        position: u64,
        file_len: u64,
    ) -> io::Result<Result<RecordBatchHeader, String>> {
        let available = file_len - position;
        let prefix = reader.get(position, available.min(HEADER_SIZE as u64) as usize)?;
        let pos = usize::try_from(position).unwrap_or(usize::MAX);
        let avail = usize::try_from(available).unwrap_or(usize::MAX);
        let size = match check_frame(prefix, pos, avail) {
            Ok(size) => size,
            Err(e) => return Ok(Err(e.to_string())),
        };
        // check_frame guarantees a full header in `prefix`.
        let Ok((header, _)) = RecordBatchHeader::read_from_prefix(prefix) else {
            return Ok(Err("short header".to_owned()));
        };
        let crc_len = (size - CRC_START) as u64;
        let computed = crc32c_range(reader, position + CRC_START as u64, crc_len)?;
        if computed != header.crc.get() {
            return Ok(Err(format!(
                "CRC mismatch: stored {:#010x}, computed {computed:#010x}",
                header.crc.get()
            )));
        }
        if let Err(e) = check_fields(&header, size, pos) {
            return Ok(Err(e.to_string()));
        }
        if header.base_offset.get() < self.next_offset || !self.can_hold(header.last_offset()) {
            return Ok(Err(format!(
                "batch offsets {}..={} do not follow {} in segment {}",
                header.base_offset.get(),
                header.last_offset(),
                self.next_offset,
                self.base_offset
            )));
        }
        Ok(Ok(header))
    }

    /// Updates in-memory state for a batch now in the file at `position`
    /// (whose header carries its final base offset); returns its size. Shared
    /// by append and recovery so both build identical indexes.
    fn on_batch_written(&mut self, position: u64, header: &RecordBatchHeader) -> u64 {
        let base_offset = header.base_offset.get();
        let max_timestamp = header.max_timestamp.get();
        let size = header.total_size().unwrap_or(HEADER_SIZE) as u64;
        if max_timestamp > self.max_timestamp {
            self.max_timestamp = max_timestamp;
            self.max_timestamp_offset = base_offset;
        }
        // Kafka's rule: index the batch that starts after more than
        // index.interval.bytes were written since the last entry.
        if self.bytes_since_last_index_entry > self.index_interval_bytes {
            self.offset_index.append(base_offset, position);
            if self.max_timestamp != NO_TIMESTAMP {
                self.time_index
                    .maybe_append(self.max_timestamp, self.max_timestamp_offset);
            }
            self.bytes_since_last_index_entry = 0;
        }
        self.bytes_since_last_index_entry += size;
        self.next_offset = header.last_offset() + 1;
        self.size = position + size;
        size
    }

    /// Appends validated batches, assigning offsets from `first_offset` and
    /// stamping `leader_epoch`, without copying record bytes. Returns the
    /// file position of the first batch. On a write error the file is cut
    /// back so nothing of this append remains.
    pub fn append(
        &mut self,
        records: &[u8],
        first_offset: i64,
        leader_epoch: i32,
    ) -> io::Result<u64> {
        let start = self.size;
        let log = self.log.file()?;
        if let Err(e) = write_batches(&log, records, first_offset, leader_epoch, start) {
            if let Err(cut) = log.set_len(start) {
                tracing::warn!(segment = %self.log_path().display(), error = %cut, "could not undo failed append");
            }
            // A cut frees the reserved blocks too.
            self.reserved_end = 0;
            return Err(e);
        }
        let mut position = start;
        let mut next_offset = first_offset;
        for (header, _) in BatchIter::new(records) {
            let mut stored = *header;
            stored.base_offset.set(next_offset);
            next_offset += header.offset_count();
            position += self.on_batch_written(position, &stored);
        }
        // Index entries stay in memory until `seal`: the active segment's
        // indexes are only trusted after a clean shutdown, which seals it, and
        // are rebuilt otherwise. So appends cost no index write.
        Ok(start)
    }

    /// Called when the segment stops being the active one (and at a clean
    /// shutdown): writes its indexes, recording its max timestamp in the time
    /// index (Kafka does the same) so that reopening it as a trusted segment
    /// recovers the max timestamp without a scan.
    pub fn seal(&mut self) -> io::Result<()> {
        if self.max_timestamp != NO_TIMESTAMP {
            self.time_index
                .maybe_append(self.max_timestamp, self.max_timestamp_offset);
        }
        self.offset_index.write_pending()?;
        self.time_index.write_pending()?;
        self.release_reserved();
        Ok(())
    }

    /// Frees the blocks reserved past the end: truncating a file to its own length does
    /// (ext4, xfs), where fallocate's punch-hole stops at the end. Only disk space is at
    /// stake, so a failure is logged, not returned.
    fn release_reserved(&mut self) {
        if self.reserved_end <= self.size {
            return;
        }
        match self.log.file().and_then(|file| file.set_len(self.size)) {
            Ok(()) => self.reserved_end = 0,
            Err(e) => {
                tracing::warn!(segment = %self.log_path().display(), error = %e, "could not free reserved disk blocks")
            }
        }
    }

    /// Hands the open `.log` to the shard's file cache, once the segment will
    /// not be appended to again.
    pub fn deactivate(&mut self) {
        if let SegmentLog::Open(file, path) = &self.log {
            let cached = CachedFile::new(path.clone(), Some(Arc::clone(file)));
            self.log = SegmentLog::Cached(cached);
        }
    }

    /// Closes the `.log` of a segment found inactive while a log is loaded. Loads run on
    /// the blocking pool, whose thread's file cache is not the shard's: the shard reopens
    /// the file when it is first read.
    pub fn close_inactive(&mut self) {
        if let SegmentLog::Open(_, path) = &self.log {
            self.log = SegmentLog::Cached(CachedFile::new(path.clone(), None));
        }
    }

    /// The first batch whose last offset is `>= offset`, if the segment has one.
    pub fn find(&self, offset: i64) -> io::Result<Option<BatchLocation>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let start = self.offset_index.lookup(offset).position;
        self.scan_headers(start, |batch| batch.last_offset() >= offset)
    }

    /// Reads batch headers from `position` on until `wanted` accepts one.
    fn scan_headers(
        &self,
        mut position: u64,
        wanted: impl Fn(&BatchLocation) -> bool,
    ) -> io::Result<Option<BatchLocation>> {
        while position < self.size {
            let batch = self.read_header(position)?;
            if wanted(&batch) {
                return Ok(Some(batch));
            }
            position = batch.end();
        }
        Ok(None)
    }

    /// Reads the header at `position` (one 61-byte `pread`).
    pub fn read_header(&self, position: u64) -> io::Result<BatchLocation> {
        if position + HEADER_SIZE as u64 > self.size {
            return Err(corrupt(position, "header beyond segment end"));
        }
        let mut buf = [0u8; HEADER_SIZE];
        self.log.read_exact_at(&mut buf, position)?;
        let header = RecordBatchHeader::read_from_bytes(&buf)
            .map_err(|_| corrupt(position, "short header"))?;
        let size = header
            .total_size()
            .ok_or_else(|| corrupt(position, "bad batch length"))? as u64;
        if position + size > self.size {
            return Err(corrupt(position, "batch beyond segment end"));
        }
        Ok(BatchLocation {
            position,
            size,
            header,
        })
    }

    /// Size of the batch at `position`, from its 12-byte prefix only.
    fn read_batch_size(&self, position: u64) -> io::Result<u64> {
        let mut buf = [0u8; LOG_OVERHEAD];
        self.log.read_exact_at(&mut buf, position)?;
        let length = i32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
        if length < MIN_BATCH_LENGTH {
            return Err(corrupt(position, "bad batch length"));
        }
        Ok(length as u64 + LOG_OVERHEAD as u64)
    }

    /// End position of the longest run of whole batches starting with `first`
    /// that fits in `max_bytes` and ends by `bound` (a batch boundary, see
    /// [`LogSegment::bound_position`]). `first` itself is always included,
    /// even when larger than `max_bytes`, so a consumer can make progress.
    /// Returns the end position and the start of the last batch before it.
    pub fn read_end(
        &self,
        first: &BatchLocation,
        max_bytes: usize,
        bound: u64,
    ) -> io::Result<(u64, u64)> {
        let limit = first
            .position
            .saturating_add(max_bytes as u64)
            .min(bound)
            .min(self.size);
        if first.end() >= limit {
            return Ok((first.end(), first.position));
        }
        // Indexed positions are batch starts: jump to the last one that fits
        // and only walk the few headers after it.
        let (mut position, mut last_batch) = match self.offset_index.floor_position(limit) {
            Some(p) if p > first.end() => (p, first.position),
            _ => (first.end(), first.position),
        };
        while position < limit {
            let size = self.read_batch_size(position)?;
            if position + size > limit {
                break;
            }
            last_batch = position;
            position += size;
        }
        Ok((position, last_batch))
    }

    /// Position where the batches holding offsets `>= max_offset` start (the
    /// segment end if there are none): reads stop there.
    pub fn bound_position(&self, max_offset: i64) -> io::Result<u64> {
        Ok(self.find(max_offset)?.map_or(self.size, |b| b.position))
    }

    /// The first record with timestamp `>= target`, as `(timestamp, offset)`.
    pub fn find_by_timestamp(&self, target: i64) -> io::Result<Option<(i64, i64)>> {
        if self.max_timestamp < target || self.size == 0 {
            return Ok(None);
        }
        // Every record before the time index entry's batch is older than
        // the entry's timestamp (<= target), so the search can start there.
        let start_offset = self
            .time_index
            .lookup(target)
            .map_or(self.base_offset, |(_, o)| o);
        let mut position = self.offset_index.lookup(start_offset).position;
        while let Some(batch) = self.scan_headers(position, |b| b.max_timestamp() >= target)? {
            if let Some(hit) = self.first_record_at_or_after(&batch, target)? {
                return Ok(Some(hit));
            }
            position = batch.end();
        }
        Ok(None)
    }

    /// The record holding the segment's largest timestamp (the first one if
    /// several share it), as `(timestamp, offset)`.
    pub fn max_timestamp_record(&self) -> io::Result<Option<(i64, i64)>> {
        if self.max_timestamp == NO_TIMESTAMP {
            return Ok(None);
        }
        let Some(batch) = self.find(self.max_timestamp_offset)? else {
            return Ok(None);
        };
        // Fall back to the batch if its header promises a timestamp no record has.
        let hit = self.first_record_at_or_after(&batch, self.max_timestamp)?;
        Ok(Some(
            hit.unwrap_or((self.max_timestamp, batch.base_offset())),
        ))
    }

    /// Decodes one batch (decompressing if needed) to find the first record
    /// with timestamp `>= target`. Only the ListOffsets path gets here, so
    /// allocating the decoded records is acceptable.
    fn first_record_at_or_after(
        &self,
        batch: &BatchLocation,
        target: i64,
    ) -> io::Result<Option<(i64, i64)>> {
        if batch.header.is_log_append_time() {
            // Every record carries the batch's append time.
            return Ok((batch.max_timestamp() >= target)
                .then_some((batch.max_timestamp(), batch.base_offset())));
        }
        let mut bytes = self.read_batch(batch)?;
        let set = RecordBatchDecoder::decode(&mut bytes)
            .map_err(|e| corrupt(batch.position, &format!("cannot decode batch: {e}")))?;
        Ok(set
            .records
            .iter()
            .find(|r| r.timestamp >= target)
            .map(|r| (r.timestamp, r.offset)))
    }

    fn read_batch(&self, batch: &BatchLocation) -> io::Result<Bytes> {
        let mut buf = BytesMut::zeroed(batch.size as usize);
        self.log.read_exact_at(&mut buf, batch.position)?;
        Ok(buf.freeze())
    }

    /// Checks that the last offset index entry points at a batch starting
    /// with the indexed offset: a cheap guard against a stale index.
    fn last_index_entry_matches_log(&self) -> io::Result<bool> {
        let Some(entry) = self.offset_index.last_entry() else {
            return Ok(true);
        };
        match self.read_header(entry.position) {
            Ok(batch) => Ok(batch.header.magic == 2 && batch.base_offset() == entry.offset),
            Err(e) if e.kind() == io::ErrorKind::InvalidData => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `offset` still fits the 32-bit relative offsets of the indexes.
    pub fn can_hold(&self, offset: i64) -> bool {
        offset
            .checked_sub(self.base_offset)
            .is_some_and(|rel| (0..=i64::from(u32::MAX)).contains(&rel))
    }

    /// Largest timestamp for retention: the max record timestamp, or the
    /// file's modification time if no batch carried a timestamp.
    pub fn largest_timestamp_ms(&self) -> i64 {
        if self.max_timestamp >= 0 {
            return self.max_timestamp;
        }
        fs::metadata(self.log_path())
            .and_then(|m| m.modified())
            .map_or(self.created_at_ms, system_time_ms)
    }

    /// Unlinks the segment's files. Open handles (a reader's `Arc<File>`)
    /// keep working: the inode lives until the last one is closed.
    pub fn delete_files(&self) -> io::Result<()> {
        let mut result = Ok(());
        for path in [
            self.log_path(),
            self.offset_index.path(),
            self.time_index.path(),
        ] {
            match fs::remove_file(path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => result = Err(e),
                _ => {}
            }
        }
        result
    }

    pub fn base_offset(&self) -> i64 {
        self.base_offset
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// Where the disk blocks reserved for appends end, at least `size`.
    pub fn reserved_end(&self) -> u64 {
        self.reserved_end.max(self.size)
    }

    pub fn note_reserved(&mut self, end: u64) {
        self.reserved_end = self.reserved_end.max(end);
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub fn max_timestamp_offset(&self) -> i64 {
        self.max_timestamp_offset
    }

    pub fn created_at_ms(&self) -> i64 {
        self.created_at_ms
    }

    /// The `.log`, opened through the shard's cache if the segment is inactive.
    pub fn log_file(&self) -> io::Result<Arc<File>> {
        self.log.file()
    }

    /// The `.log` if the segment holds it open (the active segment).
    pub fn held_log(&self) -> Option<&Arc<File>> {
        match &self.log {
            SegmentLog::Open(file, _) => Some(file),
            SegmentLog::Cached(_) => None,
        }
    }

    pub fn index_paths(&self) -> [&Path; 2] {
        [self.offset_index.path(), self.time_index.path()]
    }

    pub fn log_path(&self) -> &Path {
        self.log.path()
    }

    pub fn offset_index(&self) -> &OffsetIndex {
        &self.offset_index
    }

    pub fn time_index(&self) -> &TimeIndex {
        &self.time_index
    }
}

fn open_log(dir: &Path, base_offset: i64) -> io::Result<(File, PathBuf)> {
    let path = segment_path(dir, base_offset, LOG_SUFFIX);
    let file = OpenOptions::new().read(true).write(true).open(&path)?;
    Ok((file, path))
}

/// Empty indexes, for a new segment or a rebuild; their files are (re)written
/// by the first `write_pending`.
fn create_indexes(dir: &Path, base_offset: i64) -> (OffsetIndex, TimeIndex) {
    (
        OffsetIndex::create(&segment_path(dir, base_offset, INDEX_SUFFIX), base_offset),
        TimeIndex::create(
            &segment_path(dir, base_offset, TIME_INDEX_SUFFIX),
            base_offset,
        ),
    )
}

fn load_indexes(
    dir: &Path,
    base_offset: i64,
    limits: &IndexLimits,
) -> LoadResult<(OffsetIndex, TimeIndex)> {
    let offset_path = segment_path(dir, base_offset, INDEX_SUFFIX);
    let offset_index = match OffsetIndex::load(&offset_path, base_offset, limits)? {
        Ok(index) => index,
        Err(insane) => return Ok(Err(insane)),
    };
    let time_path = segment_path(dir, base_offset, TIME_INDEX_SUFFIX);
    let time_index = match TimeIndex::load(&time_path, base_offset, limits)? {
        Ok(index) => index,
        Err(insane) => return Ok(Err(insane)),
    };
    Ok(Ok((offset_index, time_index)))
}

/// Creation time of a reopened segment, for `segment.ms`. Birth time where
/// the filesystem records it; otherwise the mtime, a later (so roll-delaying,
/// never roll-hastening) approximation.
fn file_created_ms(file: &File) -> i64 {
    let now = || system_time_ms(SystemTime::now());
    match file.metadata() {
        Ok(m) => m
            .created()
            .or_else(|_| m.modified())
            .map_or_else(|_| now(), system_time_ms),
        Err(_) => now(),
    }
}

fn corrupt(position: u64, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{what} at log position {position}"),
    )
}

/// Writes the batches of a validated payload at `position` with `pwritev`,
/// replacing each batch's base offset and leader epoch on the fly: the
/// iovecs are `[new baseOffset, batchLength, new epoch, magic..end]`, so the
/// record bytes go from the request buffer to the kernel untouched. Both
/// replaced fields are outside the CRC, so the stored CRC stays valid.
fn write_batches(
    file: &File,
    records: &[u8],
    first_offset: i64,
    leader_epoch: i32,
    mut position: u64,
) -> io::Result<()> {
    let epoch = leader_epoch.to_be_bytes();
    let mut batches = BatchIter::new(records);
    let mut next_offset = first_offset;
    loop {
        let mut offsets = [[0u8; 8]; BATCHES_PER_WRITE];
        let mut group: [&[u8]; BATCHES_PER_WRITE] = [&[]; BATCHES_PER_WRITE];
        let mut count = 0;
        while count < BATCHES_PER_WRITE {
            let Some((header, batch)) = batches.next() else {
                break;
            };
            offsets[count] = next_offset.to_be_bytes();
            next_offset += header.offset_count();
            group[count] = batch;
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let mut iovs = [EMPTY_IOVEC; 4 * BATCHES_PER_WRITE];
        let mut bytes = 0;
        for (i, batch) in group[..count].iter().enumerate() {
            // BatchIter only yields batches of at least HEADER_SIZE bytes.
            iovs[4 * i] = iovec(&offsets[i]);
            iovs[4 * i + 1] = iovec(&batch[8..LEADER_EPOCH_OFFSET]);
            iovs[4 * i + 2] = iovec(&epoch);
            iovs[4 * i + 3] = iovec(&batch[MAGIC_OFFSET..]);
            bytes += batch.len() as u64;
        }
        pwritev_all(file, &mut iovs[..4 * count], position)?;
        position += bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::test_util::{batch, batch_with, concat};
    use kafka_protocol::records::Compression;

    const INTERVAL: usize = 200;

    fn new_segment(dir: &Path) -> LogSegment {
        LogSegment::create(dir, 100, 0, INTERVAL).unwrap()
    }

    #[test]
    fn names_are_20_digit_base_offsets() {
        let p = segment_path(Path::new("/d"), 42, LOG_SUFFIX);
        assert_eq!(p, Path::new("/d/00000000000000000042.log"));
        assert_eq!(
            parse_segment_name("00000000000000000042.log", LOG_SUFFIX),
            Some(42)
        );
        assert_eq!(
            parse_segment_name("00000000000000000042.index", LOG_SUFFIX),
            None
        );
        assert_eq!(parse_segment_name("42.log", LOG_SUFFIX), None);
        assert_eq!(
            parse_segment_name("0000000000000000004x.log", LOG_SUFFIX),
            None
        );
    }

    #[test]
    fn append_assigns_offsets_and_epoch_without_breaking_crc() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = new_segment(dir.path());
        let payload = concat(&[batch(3, 10, 20), batch(2, 30, 20)]);
        assert_eq!(seg.append(&payload, 100, 7).unwrap(), 0);
        assert_eq!(seg.next_offset(), 105);
        assert_eq!(seg.size(), payload.len() as u64);
        assert_eq!((seg.max_timestamp(), seg.max_timestamp_offset()), (30, 103));

        let stored = fs::read(seg.log_path()).unwrap();
        let summary = crate::log::batch::validate_batches(&stored, usize::MAX).unwrap();
        assert_eq!(summary.record_count, 5);
        let second = seg.find(104).unwrap().unwrap();
        assert_eq!((second.base_offset(), second.last_offset()), (103, 104));
        assert_eq!(second.header.partition_leader_epoch.get(), 7);
        // Everything but offset and epoch is byte-identical to the request.
        for ((_, sent), (_, kept)) in BatchIter::new(&payload).zip(BatchIter::new(&stored)) {
            assert_eq!(sent[8..12], kept[8..12]);
            assert_eq!(sent[16..], kept[16..]);
            assert_eq!(kept[12..16], 7i32.to_be_bytes());
        }
    }

    /// Appends `n` single-record batches of ~100 bytes with timestamps 1000+i.
    fn filled_segment(dir: &Path, n: i64) -> (LogSegment, Vec<u64>) {
        let mut seg = new_segment(dir);
        let mut positions = Vec::new();
        for i in 0..n {
            positions.push(seg.append(&batch(1, 1_000 + i, 30), 100 + i, 0).unwrap());
        }
        (seg, positions)
    }

    #[test]
    fn find_uses_index_and_scans() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, positions) = filled_segment(dir.path(), 40);
        assert!(
            seg.offset_index().len() > 5,
            "interval {INTERVAL} should create entries"
        );
        for (i, &pos) in positions.iter().enumerate() {
            let found = seg.find(100 + i as i64).unwrap().unwrap();
            assert_eq!(found.position, pos);
        }
        assert_eq!(seg.find(50).unwrap().unwrap().position, 0); // before the base
        assert!(seg.find(140).unwrap().is_none()); // at the end offset
    }

    #[test]
    fn read_end_respects_max_bytes_and_whole_batches() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, positions) = filled_segment(dir.path(), 40);
        let batch_size = positions[1];
        let first = seg.find(110).unwrap().unwrap();
        let end = seg
            .read_end(&first, (3 * batch_size + 5) as usize, u64::MAX)
            .map(|(end, _)| end)
            .unwrap();
        assert_eq!(end - first.position, 3 * batch_size);
        // A limit below one batch still returns that batch.
        assert_eq!(
            seg.read_end(&first, 1, u64::MAX).unwrap(),
            (first.end(), first.position)
        );
        // A huge limit stops at the segment end.
        assert_eq!(
            seg.read_end(&first, usize::MAX, u64::MAX).unwrap().0,
            seg.size()
        );
        // A bound stops the read at the batch holding it.
        let bound = seg.bound_position(115).unwrap();
        assert_eq!(bound, positions[15]);
        assert_eq!(seg.read_end(&first, usize::MAX, bound).unwrap().0, bound);
        assert_eq!(seg.bound_position(140).unwrap(), seg.size());
    }

    #[test]
    fn timestamp_search_decodes_the_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = new_segment(dir.path());
        seg.append(&batch_with(&[10, 50, 20], 10, Compression::None), 100, 0)
            .unwrap();
        seg.append(&batch_with(&[60, 55, 70], 10, Compression::Lz4), 103, 0)
            .unwrap();
        assert_eq!(seg.find_by_timestamp(0).unwrap(), Some((10, 100)));
        assert_eq!(seg.find_by_timestamp(15).unwrap(), Some((50, 101)));
        assert_eq!(seg.find_by_timestamp(51).unwrap(), Some((60, 103)));
        assert_eq!(seg.find_by_timestamp(56).unwrap(), Some((60, 103)));
        assert_eq!(seg.find_by_timestamp(61).unwrap(), Some((70, 105)));
        assert_eq!(seg.find_by_timestamp(71).unwrap(), None);
        assert_eq!(seg.max_timestamp_record().unwrap(), Some((70, 105)));
    }

    #[test]
    fn recovery_rebuilds_identical_indexes_and_cuts_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let (mut seg, positions) = filled_segment(dir.path(), 40);
        seg.seal().unwrap();
        let index_before = fs::read(seg.offset_index().path()).unwrap();
        let full = seg.size();
        drop(seg);
        // Tear the last batch.
        let torn = positions[39] + 10;
        let log = OpenOptions::new()
            .write(true)
            .open(segment_path(dir.path(), 100, LOG_SUFFIX))
            .unwrap();
        log.set_len(torn).unwrap();

        let (seg, outcome) = LogSegment::open_and_recover(dir.path(), 100, INTERVAL).unwrap();
        assert_eq!(
            outcome,
            RecoveryOutcome {
                batches: 39,
                valid_bytes: positions[39],
                truncated_bytes: 10
            }
        );
        assert!(full > torn);
        assert_eq!(seg.next_offset(), 139);
        assert_eq!(seg.size(), positions[39]);
        assert_eq!(fs::metadata(seg.log_path()).unwrap().len(), positions[39]);
        let index_after = fs::read(seg.offset_index().path()).unwrap();
        assert!(index_before.starts_with(&index_after));
        assert_eq!(seg.max_timestamp(), 1_038);
    }

    #[test]
    fn recovery_handles_batches_larger_than_its_window_and_garbage_tails() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = new_segment(dir.path());
        seg.append(&batch(2, 5, RECOVERY_WINDOW + 1000), 100, 0)
            .unwrap();
        seg.append(&batch(1, 6, 10), 102, 0).unwrap();
        let valid = seg.size();
        drop(seg);
        let log_path = segment_path(dir.path(), 100, LOG_SUFFIX);
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for garbage_len in [1u64, 16, 17, 60, 61, 62, 500] {
            let file = OpenOptions::new().write(true).open(&log_path).unwrap();
            let mut garbage: Vec<u8> = (0..garbage_len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            if let Some(magic) = garbage.get_mut(MAGIC_OFFSET) {
                *magic = 2; // plausible magic: the scan must look further
            }
            file.write_all_at(&garbage, valid).unwrap();
            let (seg, outcome) = LogSegment::open_and_recover(dir.path(), 100, INTERVAL).unwrap();
            assert_eq!((outcome.batches, outcome.valid_bytes), (2, valid));
            assert_eq!(outcome.truncated_bytes, garbage_len);
            assert_eq!((seg.next_offset(), seg.max_timestamp()), (103, 6));
        }
    }

    #[test]
    fn trusted_open_reads_indexes_not_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let (mut seg, _) = filled_segment(dir.path(), 40);
        seg.seal().unwrap();
        let entries = seg.offset_index().len();
        drop(seg);
        let seg = LogSegment::open_trusted(dir.path(), 100, 140, INTERVAL)
            .unwrap()
            .unwrap();
        assert_eq!(seg.offset_index().len(), entries);
        assert_eq!(
            (seg.max_timestamp(), seg.max_timestamp_offset()),
            (1_039, 139)
        );
        assert_eq!(seg.next_offset(), 140);
        assert_eq!(seg.find(120).unwrap().unwrap().base_offset(), 120);

        // An index pointing elsewhere than its batch is caught.
        let index_path = segment_path(dir.path(), 100, INDEX_SUFFIX);
        let mut raw = fs::read(&index_path).unwrap();
        let n = raw.len();
        raw[n - 5] ^= 0x01; // bump the last entry's relative offset
        fs::write(&index_path, &raw).unwrap();
        let err = LogSegment::open_trusted(dir.path(), 100, 140, INTERVAL)
            .unwrap()
            .err()
            .unwrap();
        assert_eq!(err.reason, "last entry does not point at its batch");
    }
}
