//! The log of one partition: a directory of segments, appended at the end,
//! read anywhere, trimmed at the start by retention.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::batch::{
    error_code, validate_batches, BatchError, BatchIter, BatchesSummary, NO_TIMESTAMP,
};
use super::leader_epoch::{EpochEntry, LeaderEpochCache};
use super::segment::{
    parse_segment_name, system_time_ms, LogSegment, RecoveryOutcome, INDEX_SUFFIX, LOG_SUFFIX,
    TIME_INDEX_SUFFIX,
};

/// Segment positions are u32 in the offset index.
const MAX_SEGMENT_BYTES: u64 = i32::MAX as u64;

/// With `preallocate`, an active segment holding this much reserves disk blocks ahead of
/// its end: as much again as it holds, up to `RESERVE_MAX_BYTES`, renewed when half is
/// used. Smaller segments (idle partitions) reserve nothing.
const RESERVE_FROM_BYTES: u64 = 1 << 20;
const RESERVE_MAX_BYTES: u64 = 8 << 20;

/// Per-topic log settings (Kafka topic config names in the comments).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`; capped at `i32::MAX` like Kafka.
    pub segment_bytes: u64,
    /// `segment.ms`: roll a non-empty active segment older than this.
    pub segment_ms: i64,
    /// `retention.ms`; -1 = infinite.
    pub retention_ms: i64,
    /// `retention.bytes`; -1 = infinite.
    pub retention_bytes: i64,
    /// `max.message.bytes`: largest accepted batch.
    pub max_message_bytes: usize,
    /// `index.interval.bytes`.
    pub index_interval_bytes: usize,
    /// `preallocate`: reserve disk blocks ahead of the active segment's end.
    pub preallocate: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: WEEK_MS,
            retention_ms: WEEK_MS,
            retention_bytes: -1,
            max_message_bytes: 1_048_588,
            index_interval_bytes: 4096,
            preallocate: true,
        }
    }
}

/// Result of a successful append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// Largest batch `maxTimestamp` in the append (`-1` if none).
    pub max_timestamp: i64,
    /// Base offset of the first batch holding `max_timestamp`.
    pub offset_of_max_timestamp: i64,
    pub batch_count: usize,
    pub log_start_offset: i64,
    /// Base offset of the segment written to, and the position in it.
    pub segment_base_offset: i64,
    pub position: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The offsets claimed do not fit `i64`, or one segment's 32-bit
    /// relative offsets.
    #[error("append of {records} offsets at {log_end_offset} overflows the offset space")]
    OffsetOverflow { log_end_offset: i64, records: i64 },
    /// A replicated append must continue the log exactly: its batches start at the log
    /// end offset and follow each other without gaps.
    #[error("replicated batch at offset {found} does not follow offset {expected}")]
    NotContiguous { expected: i64, found: i64 },
    #[error("log write failed: {0}")]
    Io(#[from] io::Error),
}

impl AppendError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            AppendError::Batch(e) => e.kafka_error_code(),
            AppendError::OffsetOverflow { .. } => error_code::INVALID_RECORD,
            AppendError::NotContiguous { .. } => error_code::OFFSET_OUT_OF_RANGE,
            AppendError::Io(_) => error_code::KAFKA_STORAGE_ERROR,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    #[error("log read failed: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ReadError::OffsetOutOfRange { .. } => error_code::OFFSET_OUT_OF_RANGE,
            ReadError::Io(_) => error_code::KAFKA_STORAGE_ERROR,
        }
    }
}

/// A range of whole batches in one segment file, ready to be sent (e.g. with
/// `sendfile`) or read by another thread. Holding the `Arc<File>` keeps the
/// data readable even if retention unlinks the segment meanwhile.
#[derive(Debug, Clone)]
pub struct ReadSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
    /// First and last offset of the batches in the range (`None` when empty).
    pub offsets: Option<(i64, i64)>,
}

impl ReadSlice {
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the range into memory (`read_exact_at` retries short reads).
    pub fn read_to_bytes(&self) -> io::Result<Bytes> {
        let mut buf = BytesMut::with_capacity(self.len);
        self.read_onto(&mut buf)?;
        Ok(buf.freeze())
    }

    /// Reads the range onto the end of `buf`; on an error `buf` is left as it was.
    pub fn read_onto(&self, buf: &mut BytesMut) -> io::Result<()> {
        let start = buf.len();
        buf.resize(start + self.len, 0);
        let read = self.file.read_exact_at(&mut buf[start..], self.position);
        if read.is_err() {
            buf.truncate(start);
        }
        read
    }
}

/// fsyncs to run off the shard thread; see [`PartitionLog::flush_job`].
#[derive(Debug)]
pub struct FlushJob {
    /// The active segment's open `.log`, if it holds unflushed data.
    files: Vec<Arc<File>>,
    /// Files no descriptor is kept for (inactive segments, indexes): the job
    /// opens them itself, off the shard.
    paths: Vec<PathBuf>,
    dir: Option<PathBuf>,
    log_end_offset: i64,
    /// The log's truncation count when the job was made: a job that ran across a
    /// truncation may have synced offsets that were cut and written anew since.
    truncations: u64,
    /// Base offset of the active segment when the job was made: the job
    /// syncs the indexes of every inactive segment below it, and (if `dir`
    /// is set) the directory entries of every segment up to it.
    active_base: i64,
    /// Blocks to reserve past the active segment's end, after the syncs.
    reserve: Option<Reserve>,
}

/// Disk blocks to allocate past the active segment's end, keeping the file's length.
#[derive(Debug)]
struct Reserve {
    log: Arc<File>,
    from: u64,
    to: u64,
}

impl Reserve {
    fn run(&self) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (from, len) = (
            self.from as libc::off_t,
            (self.to - self.from) as libc::off_t,
        );
        // SAFETY: a plain syscall on a descriptor the job holds open.
        let done =
            unsafe { libc::fallocate(self.log.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, from, len) };
        if done == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl FlushJob {
    /// Offsets below this are durable once the job has run.
    pub fn log_end_offset(&self) -> i64 {
        self.log_end_offset
    }

    /// `fdatasync`s every file, then the directory if segments were created, then
    /// reserves blocks ahead of the active segment's end.
    ///
    /// On [`FlushError::Sync`] the caller must treat the log as failed (take the
    /// partition offline): after a failed fsync Linux may have dropped the dirty pages,
    /// so retrying could "succeed" without the data being on disk.
    pub fn run(&self) -> Result<(), FlushError> {
        for file in &self.files {
            file.sync_data().map_err(FlushError::Sync)?;
        }
        // fsync acts on the inode: a descriptor opened for it covers writes made
        // through any other.
        for path in self.paths.iter().chain(&self.dir) {
            File::open(path)
                .map_err(FlushError::Open)?
                .sync_data()
                .map_err(FlushError::Sync)?;
        }
        // With blocks allocated ahead, later fdatasyncs do not allocate. In five paired A/B
        // runs of 16 partitions at 100 MB/s of acks=all on ext4, produce p99 was lower with
        // it in four (the README has the figures and the order bias that blurs them). Only
        // speed depends on it, so a failure (no fallocate on this filesystem) is ignored.
        if let Some(reserve) = &self.reserve {
            let _ = reserve.run();
        }
        Ok(())
    }
}

/// Why a [`FlushJob`] did not complete.
#[derive(Debug, thiserror::Error)]
pub enum FlushError {
    /// A file could not be opened to be synced (out of descriptors, say): nothing was
    /// synced or lost, a later flush can retry.
    #[error("cannot open a file to fdatasync it: {0}")]
    Open(io::Error),
    /// fdatasync itself failed: the dirty pages may be gone.
    #[error("fdatasync failed: {0}")]
    Sync(io::Error),
}

impl From<FlushError> for io::Error {
    fn from(e: FlushError) -> io::Error {
        match e {
            FlushError::Open(e) | FlushError::Sync(e) => e,
        }
    }
}

/// What `open` found and did, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecoveryStats {
    pub recovery_point: i64,
    /// Segments opened from their indexes, without reading the log.
    pub segments_trusted: usize,
    /// Segments scanned, validated and re-indexed.
    pub segments_recovered: usize,
    /// Segments deleted because an earlier one was corrupt.
    pub segments_deleted: usize,
    pub bytes_truncated: u64,
}

/// Where opening a log starts validating batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoveryStart {
    /// The broker stopped cleanly: every segment was flushed with its indexes.
    CleanShutdown,
    /// Segments wholly below this offset were flushed with their indexes (the recovery
    /// point checkpointed by the shard, 0 when it has none).
    RecoveryPoint(i64),
}

/// A log holds one descriptor: its active segment's `.log`. The directory and
/// indexes are opened when they are synced or written, and inactive segments
/// through the shard's bounded file cache, so 10,000 partitions fit in a
/// 20,000-descriptor limit with room for connections.
pub struct PartitionLog {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset, never empty; the last one is the active segment.
    segments: Vec<LogSegment>,
    log_start_offset: i64,
    /// Offsets below this are on disk.
    flushed_offset: i64,
    /// Inactive segments with a base offset below this have fsynced indexes.
    indexes_durable_below: i64,
    /// Segments with a base offset below this have fsynced directory entries.
    dir_durable_below: i64,
    recovery: RecoveryStats,
    epochs: LeaderEpochCache,
    /// Truncations so far; see [`FlushJob::truncations`].
    truncations: u64,
}

/// How an append sets the offsets and leader epochs of its batches.
#[derive(Clone, Copy)]
enum Stamp {
    /// A produce on the leader: offsets from the log end, this epoch on every batch.
    Assign(i32),
    /// A follower copying the leader: both kept as they are.
    Keep,
}

impl PartitionLog {
    /// Opens (or creates) the partition directory and recovers its segments.
    ///
    /// Segments wholly below the recovery point were flushed and are trusted:
    /// only their indexes are read. From the segment holding the recovery
    /// point on, every batch is validated and the indexes rebuilt; the first
    /// invalid batch truncates the log there and later segments are deleted.
    ///
    /// After a clean shutdown every segment was flushed with its indexes: all are
    /// trusted, and only the active segment's tail after its last index entry is read to
    /// find the log end.
    pub fn open(dir: &Path, config: LogConfig, start: RecoveryStart) -> io::Result<Self> {
        let mut config = config;
        config.segment_bytes = config.segment_bytes.clamp(1, MAX_SEGMENT_BYTES);
        fs::create_dir_all(dir)?;
        let bases = list_segments(dir)?;
        let (recovery_point, clean_shutdown) = match start {
            RecoveryStart::CleanShutdown => (i64::MAX, true),
            RecoveryStart::RecoveryPoint(offset) => (offset.max(0), false),
        };
        let mut recovery = RecoveryStats {
            recovery_point,
            ..RecoveryStats::default()
        };
        let (mut segments, first_recovered) = load_segments(
            dir,
            &bases,
            recovery_point,
            clean_shutdown,
            &config,
            &mut recovery,
        )?;
        if segments.is_empty() {
            let now = system_time_ms(SystemTime::now());
            segments.push(LogSegment::create(
                dir,
                0,
                now,
                config.index_interval_bytes,
            )?);
        }
        let log_end_offset = segments.last().map_or(0, LogSegment::next_offset);
        let log_start_offset = segments.first().map_or(0, LogSegment::base_offset);
        let epochs = load_epochs(dir, &segments)?;
        // Recovered segments may hold data, truncations and directory entries
        // that only lived in the page cache: the first flush job syncs them.
        let not_durable_from = first_recovered.unwrap_or(log_start_offset);
        // Damage found is worth a line of its own; the rest is summed up by the caller.
        if recovery.bytes_truncated > 0 || recovery.segments_deleted > 0 {
            tracing::warn!(dir = %dir.display(), log_end_offset, ?recovery, "partition log recovered with damage");
        } else {
            tracing::debug!(dir = %dir.display(), log_start_offset, log_end_offset, ?recovery, "partition log opened");
        }
        Ok(PartitionLog {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            flushed_offset: recovery_point.min(log_end_offset).max(log_start_offset),
            indexes_durable_below: not_durable_from,
            dir_durable_below: not_durable_from,
            recovery,
            epochs,
            truncations: 0,
        })
    }

    /// Validates `records` (one or more v2 batches), then appends them with
    /// offsets from the log end offset and `leader_epoch` stamped in. Nothing
    /// is written if validation fails.
    pub fn append(
        &mut self,
        records: &Bytes,
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let summary = validate_batches(records, self.config.max_message_bytes)?;
        self.write(records, &summary, Stamp::Assign(leader_epoch), now_ms)
    }

    /// A follower's append of batches fetched from the leader: validated like a produce,
    /// but stored byte-for-byte, with the leader's offsets and epochs. The first batch
    /// must start at the log end offset and each next one where the previous ended;
    /// otherwise nothing is written and the caller re-fetches (or truncates) first.
    pub fn append_replicated(&mut self, records: &Bytes) -> Result<AppendInfo, AppendError> {
        let summary = validate_batches(records, self.config.max_message_bytes)?;
        let mut expected = self.log_end_offset();
        for (header, _) in BatchIter::new(records) {
            let found = header.base_offset.get();
            if found != expected {
                return Err(AppendError::NotContiguous { expected, found });
            }
            expected = found.saturating_add(header.offset_count());
        }
        let now_ms = system_time_ms(SystemTime::now());
        self.write(records, &summary, Stamp::Keep, now_ms)
    }

    fn write(
        &mut self,
        records: &Bytes,
        summary: &BatchesSummary,
        stamp: Stamp,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        let base_offset = self.log_end_offset();
        let last_offset = base_offset.checked_add(summary.record_count - 1).ok_or(
            AppendError::OffsetOverflow {
                log_end_offset: base_offset,
                records: summary.record_count,
            },
        )?;
        self.maybe_roll(records.len() as u64, last_offset, now_ms)?;
        if !self.active().can_hold(last_offset) {
            // Even a fresh segment cannot index it; recovery would reject it.
            return Err(AppendError::OffsetOverflow {
                log_end_offset: base_offset,
                records: summary.record_count,
            });
        }
        let position = match stamp {
            Stamp::Assign(epoch) => {
                let position = self.active_mut().append(records, base_offset, epoch)?;
                self.epochs.assign(epoch, base_offset)?;
                position
            }
            Stamp::Keep => self.write_epoch_runs(records)?,
        };
        Ok(AppendInfo {
            base_offset,
            last_offset,
            max_timestamp: summary.max_timestamp,
            offset_of_max_timestamp: nth_batch_base_offset(
                records,
                base_offset,
                summary.max_timestamp_batch,
            ),
            batch_count: summary.batch_count,
            log_start_offset: self.log_start_offset,
            segment_base_offset: self.active().base_offset(),
            position,
        })
    }

    /// Writes replicated batches one run of equal leader epochs at a time: restamping
    /// a contiguous run with its own first offset and epoch reproduces its bytes
    /// exactly, and each new epoch enters the cache once its batches are in the log.
    fn write_epoch_runs(&mut self, records: &[u8]) -> Result<u64, AppendError> {
        let mut start = None;
        let mut rest = records;
        while let Some((first, _)) = BatchIter::new(rest).next() {
            let epoch = first.partition_leader_epoch.get();
            let base_offset = first.base_offset.get();
            let run_len: usize = BatchIter::new(rest)
                .take_while(|(h, _)| h.partition_leader_epoch.get() == epoch)
                .map(|(_, batch)| batch.len())
                .sum();
            let (run, tail) = rest.split_at(run_len);
            let position = self.active_mut().append(run, base_offset, epoch)?;
            start.get_or_insert(position);
            self.epochs.assign(epoch, base_offset)?;
            rest = tail;
        }
        Ok(start.unwrap_or_else(|| self.active().size()))
    }

    /// Rolls to a new segment when the active one is non-empty and either
    /// cannot take `append_bytes` more, is older than `segment.ms`, or cannot
    /// index `last_offset` in its 32-bit relative offsets. An empty segment
    /// takes any append, so an oversized batch still finds a home.
    fn maybe_roll(&mut self, append_bytes: u64, last_offset: i64, now_ms: i64) -> io::Result<()> {
        let active = self.active();
        if active.is_empty() {
            return Ok(());
        }
        let full = active.size().saturating_add(append_bytes) > self.config.segment_bytes;
        let old = now_ms.saturating_sub(active.created_at_ms()) >= self.config.segment_ms;
        if full || old || !active.can_hold(last_offset) {
            self.roll(now_ms)?;
        }
        Ok(())
    }

    fn roll(&mut self, now_ms: i64) -> io::Result<()> {
        let base_offset = self.log_end_offset();
        self.active_mut().seal()?;
        self.active_mut().deactivate();
        let segment = LogSegment::create(
            &self.dir,
            base_offset,
            now_ms,
            self.config.index_interval_bytes,
        )?;
        tracing::debug!(dir = %self.dir.display(), base_offset, "rolled log segment");
        self.segments.push(segment);
        Ok(())
    }

    /// Whole batches starting with the one holding `offset`, from one
    /// segment, at most `max_bytes` except that the first batch is always
    /// returned whole. `offset == log_end_offset` gives an empty slice.
    pub fn read(&self, offset: i64, max_bytes: usize) -> Result<ReadSlice, ReadError> {
        self.read_bounded(offset, max_bytes, i64::MAX)
    }

    /// Like [`PartitionLog::read`], but only returns batches lying wholly
    /// below `max_offset` (e.g. the high watermark or the flushed offset), so
    /// consumers never see records that could still be lost. An offset in
    /// `[max_offset, log_end_offset]` gives an empty slice.
    pub fn read_bounded(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
    ) -> Result<ReadSlice, ReadError> {
        let log_end_offset = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end_offset {
            return Err(ReadError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset,
            });
        }
        let upper = max_offset.min(log_end_offset);
        if offset >= upper {
            return self.empty_slice();
        }
        // The segment holding `offset` may end before it (a gap): then the
        // next segment's first batch is the answer, as in Kafka.
        for segment in &self.segments[self.segment_index(offset)..] {
            let Some(first) = segment.find(offset)? else {
                continue;
            };
            if first.last_offset() >= upper {
                break; // the batch straddles the bound: nothing to return yet
            }
            let bound = segment.bound_position(upper)?;
            let (end, last_batch) = segment.read_end(&first, max_bytes, bound)?;
            let last_offset = if last_batch == first.position {
                first.last_offset()
            } else {
                segment.read_header(last_batch)?.last_offset()
            };
            return Ok(ReadSlice {
                file: segment.log_file()?,
                position: first.position,
                // Bounded by max(max_bytes, one i32-sized batch).
                len: (end - first.position) as usize,
                offsets: Some((first.base_offset(), last_offset)),
            });
        }
        self.empty_slice()
    }

    fn empty_slice(&self) -> Result<ReadSlice, ReadError> {
        let active = self.active();
        Ok(ReadSlice {
            file: active.log_file()?,
            position: active.size(),
            len: 0,
            offsets: None,
        })
    }

    /// Index of the last segment with base offset `<= offset` (0 if none).
    fn segment_index(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    /// The first record with timestamp `>= timestamp`, as `(timestamp,
    /// offset)`; `None` if there is none. The special ListOffsets timestamps
    /// (-1 latest, -2 earliest, -3 max) are the caller's to map.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> io::Result<Option<(i64, i64)>> {
        for segment in self
            .segments
            .iter()
            .filter(|s| s.max_timestamp() >= timestamp)
        {
            if let Some(hit) = segment.find_by_timestamp(timestamp)? {
                return Ok(Some(hit));
            }
        }
        Ok(None)
    }

    /// The record with the largest timestamp (the first one if several share
    /// it), as `(timestamp, offset)`; `None` if no record has a timestamp.
    pub fn max_timestamp_offset(&self) -> io::Result<Option<(i64, i64)>> {
        let mut best: Option<&LogSegment> = None;
        for segment in &self.segments {
            if segment.max_timestamp() != NO_TIMESTAMP
                && best.is_none_or(|b| segment.max_timestamp() > b.max_timestamp())
            {
                best = Some(segment);
            }
        }
        best.map_or(Ok(None), LogSegment::max_timestamp_record)
    }

    /// The fsyncs needed to make everything appended so far durable, or
    /// `None` if there is nothing to sync. Run it anywhere (it only holds
    /// `Arc<File>`s), then report with [`PartitionLog::complete_flush`].
    /// Having one job in flight at a time gives group commit: appends made
    /// while it runs are covered by the next one. Overlapping jobs are safe,
    /// just redundant.
    ///
    /// The job covers: the `.log` of every segment holding unflushed offsets;
    /// the indexes of segments that became inactive since the last completed
    /// job (needed before the recovery point may pass them); and the directory
    /// if segments were created since.
    pub fn flush_job(&self) -> Option<FlushJob> {
        let active_base = self.active().base_offset();
        // Both conditions below hold for a suffix of the segments only (base
        // and end offsets grow along the list): skip the settled prefix.
        let first = self.segments.partition_point(|s| {
            s.next_offset() <= self.flushed_offset && s.base_offset() < self.indexes_durable_below
        });
        let mut files = Vec::new();
        let mut paths = Vec::new();
        for segment in &self.segments[first..] {
            if segment.next_offset() > self.flushed_offset {
                // The active segment's file is open: no open on the hot path.
                match segment.held_log() {
                    Some(file) => files.push(Arc::clone(file)),
                    None => paths.push(segment.log_path().to_path_buf()),
                }
            }
            let inactive = segment.base_offset() < active_base;
            if inactive && segment.base_offset() >= self.indexes_durable_below {
                paths.extend(segment.index_paths().map(Path::to_path_buf));
            }
        }
        let dir = (active_base >= self.dir_durable_below).then(|| self.dir.clone());
        if files.is_empty() && paths.is_empty() && dir.is_none() {
            return None;
        }
        Some(FlushJob {
            files,
            paths,
            dir,
            log_end_offset: self.log_end_offset(),
            truncations: self.truncations,
            active_base,
            reserve: self.reserve_ahead(),
        })
    }

    /// The blocks the active segment should reserve now, if any: see `RESERVE_FROM_BYTES`.
    fn reserve_ahead(&self) -> Option<Reserve> {
        let active = self.active();
        let size = active.size();
        if !self.config.preallocate || size < RESERVE_FROM_BYTES {
            return None;
        }
        let ahead = size.min(RESERVE_MAX_BYTES);
        let to = (size + ahead).min(self.config.segment_bytes);
        let from = active.reserved_end();
        if from >= size + ahead / 2 || from >= to {
            return None;
        }
        Some(Reserve {
            log: Arc::clone(active.held_log()?),
            from,
            to,
        })
    }

    /// Before a clean shutdown: writes the active segment's indexes and returns the job
    /// whose coverage [`complete_flush`](Self::complete_flush) records once the caller
    /// has put every file on disk (one syncfs for all logs). The next start can then
    /// trust the whole log ([`RecoveryStart::CleanShutdown`]).
    pub fn seal_for_close(&mut self) -> io::Result<Option<FlushJob>> {
        self.active_mut().seal()?;
        Ok(self.flush_job())
    }

    /// Records that `job` ran successfully.
    pub fn complete_flush(&mut self, job: &FlushJob) {
        if job.truncations != self.truncations {
            return;
        }
        let covered = job.log_end_offset.min(self.log_end_offset());
        self.flushed_offset = self.flushed_offset.max(covered);
        if let Some(reserve) = &job.reserve {
            // Noted even if fallocate failed, so a filesystem without it is not asked
            // at every sync.
            if self.active().base_offset() == job.active_base {
                self.active_mut().note_reserved(reserve.to);
            }
        }
        self.indexes_durable_below = self.indexes_durable_below.max(job.active_base);
        if job.dir.is_some() {
            // The directory sync covered every segment existing at job time,
            // including the then-active one.
            self.dir_durable_below = self.dir_durable_below.max(job.active_base + 1);
        }
    }

    /// Offsets below this are durable.
    pub fn flushed_offset(&self) -> i64 {
        self.flushed_offset
    }

    /// The offset below which recovery may trust the log: the flushed offset, capped at
    /// the first segment whose indexes or directory entry are not yet durable, so recovery
    /// never trusts a segment that could be incomplete. The shard checkpoints it.
    pub fn recovery_point(&self) -> i64 {
        let durable_below = self.indexes_durable_below.min(self.dir_durable_below);
        let first_not_durable = self
            .segments
            .iter()
            .map(LogSegment::base_offset)
            .find(|&base| base >= durable_below)
            .unwrap_or(i64::MAX);
        self.flushed_offset.min(first_not_durable)
    }

    /// Deletes the oldest non-active segments that are past `retention.ms`
    /// (by max record timestamp, else file mtime) or not needed to keep
    /// `retention.bytes`. Returns how many were deleted; the log start offset
    /// moves to the first remaining segment.
    pub fn enforce_retention(&mut self, now_ms: i64) -> usize {
        let mut remaining_bytes = self.size_bytes();
        let mut count = 0;
        while count + 1 < self.segments.len() {
            let segment = &self.segments[count];
            if !self.is_expired(segment, now_ms, remaining_bytes) {
                break;
            }
            remaining_bytes -= segment.size();
            count += 1;
        }
        self.delete_oldest(count);
        if count > 0 {
            tracing::info!(dir = %self.dir.display(), count, log_start_offset = self.log_start_offset, "retention deleted segments");
        }
        count
    }

    /// Deletes the non-active segments lying wholly below `offset`, as a follower does
    /// when the leader's log start offset moved past them. Returns how many.
    pub fn delete_segments_below(&mut self, offset: i64) -> usize {
        let count = self
            .segments
            .windows(2)
            .take_while(|pair| pair[1].base_offset() <= offset)
            .count();
        self.delete_oldest(count);
        count
    }

    /// Deletes the `count` oldest segments (never the active one) and moves the log
    /// start offset, and the first leader epoch's start, to the first remaining one.
    fn delete_oldest(&mut self, count: usize) {
        let count = count.min(self.segments.len() - 1);
        if count == 0 {
            return;
        }
        for segment in self.segments.drain(..count) {
            if let Err(e) = segment.delete_files() {
                // The segment is gone from the log either way; leftover files
                // are deleted again by retention after the next open.
                tracing::warn!(segment = %segment.log_path().display(), error = %e, "could not delete segment");
            }
        }
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset());
        if let Err(e) = self.epochs.truncate_from_start(self.log_start_offset) {
            // The cache in memory is right; open clamps the file's entries again.
            tracing::warn!(dir = %self.dir.display(), error = %e, "could not write leader epoch checkpoint");
        }
    }

    /// KIP-320 on a follower: the leader's copy of `epoch` ends at `leader_end`. Cuts
    /// there, or where this log's own copy of that epoch ends if earlier: an epoch of ours
    /// the leader never saw starts there, and cutting only at the leader's end would keep
    /// it, so the leader would report the same divergence forever (Kafka's follower takes
    /// the same minimum). Returns the new log end.
    pub fn truncate_to_divergence(&mut self, epoch: i32, leader_end: i64) -> io::Result<i64> {
        let own_end = self.end_offset_for_epoch(epoch);
        let end = own_end.map_or(leader_end, |(_, own_end)| own_end.min(leader_end));
        self.truncate_to(end)
    }

    /// Removes every batch at or after `offset`, as a follower whose log diverged from
    /// the leader's does. An offset inside a batch truncates at that batch's start; an
    /// offset before the log start empties the log and restarts it there. Returns the
    /// new log end offset.
    ///
    /// Crash safety: the caller first lowers the checkpointed recovery point on disk (to
    /// the log start: `Partition` does), so whatever step a crash interrupts, the next open
    /// rescans everything that could be affected.
    /// Later segments go newest first, so a crash leaves a gapless prefix of the log;
    /// the epoch cache follows the log, and open drops entries past the log end.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<i64> {
        if offset >= self.log_end_offset() {
            // No batch to cut, but the cache may end with an epoch this replica started
            // as leader and lost before appending to it. Kept, the follower would keep
            // fetching with it and the leader keep answering with the same divergence
            // (Kafka's truncateTo drops it too).
            self.epochs.truncate_from_end(self.log_end_offset())?;
            return Ok(self.log_end_offset());
        }
        if offset < self.log_start_offset {
            self.truncate_fully_and_start_at(offset)?;
            return Ok(offset);
        }
        let holding = self.segment_index(offset);
        // The first batch ending at or after `offset`, in this segment or (past a gap
        // at its end) the first batch of the next one.
        let cut = match self.segments[holding].find(offset)? {
            Some(batch) => Some((holding, batch)),
            None => self
                .segments
                .get(holding + 1)
                .map(|next| next.find(next.base_offset()))
                .transpose()?
                .flatten()
                .map(|batch| (holding + 1, batch)),
        };
        let Some((holding, batch)) = cut else {
            return Ok(self.log_end_offset());
        };
        let new_end = batch.base_offset();
        self.lower_recovery_point(new_end, self.segments[holding].base_offset());
        while self.segments.len() > holding + 1 {
            self.active().delete_files()?;
            self.segments.pop();
        }
        self.active_mut().truncate_to(&batch)?;
        self.epochs.truncate_from_end(new_end)?;
        tracing::info!(dir = %self.dir.display(), offset, log_end_offset = new_end, "truncated log");
        Ok(self.log_end_offset())
    }

    /// Empties the log and restarts it at `offset` with a fresh segment, as a follower
    /// whose log end is below the leader's log start offset does.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> io::Result<()> {
        let offset = offset.max(0);
        self.lower_recovery_point(offset, offset);
        // Newest first, and the oldest only once its replacement exists: the log keeps
        // a segment whatever fails.
        while self.segments.len() > 1 {
            self.active().delete_files()?;
            self.segments.pop();
        }
        self.epochs.clear()?;
        if self.active().base_offset() == offset {
            if let Some(first) = self.active().find(offset)? {
                self.active_mut().truncate_to(&first)?;
            }
        } else {
            let now_ms = system_time_ms(SystemTime::now());
            let segment =
                LogSegment::create(&self.dir, offset, now_ms, self.config.index_interval_bytes)?;
            std::mem::replace(&mut self.segments[0], segment).delete_files()?;
        }
        self.log_start_offset = offset;
        tracing::info!(dir = %self.dir.display(), offset, "emptied log, restarting it at offset");
        Ok(())
    }

    /// Before a truncation: nothing at or after `offset` counts as flushed any more, and
    /// the segment at `segment_base` and the directory must be synced again.
    fn lower_recovery_point(&mut self, offset: i64, segment_base: i64) {
        self.truncations += 1;
        self.flushed_offset = self.flushed_offset.min(offset);
        self.indexes_durable_below = self.indexes_durable_below.min(segment_base);
        self.dir_durable_below = self.dir_durable_below.min(segment_base);
    }

    /// The leader epoch of the last batch appended, or of a leader elected since.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    /// Kafka's OffsetForLeaderEpoch answer: the largest known epoch `<= epoch` and the
    /// offset where it ends (see [`LeaderEpochCache::end_offset_for`]). `None` is
    /// UNDEFINED (-1, -1).
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.epochs.end_offset_for(epoch, self.log_end_offset())
    }

    /// A newly elected leader's epoch starts at the log end offset (Kafka records it
    /// at election, before any append, so followers can be answered at once). An epoch
    /// not newer than the latest recorded one changes nothing.
    pub fn start_leader_epoch(&mut self, epoch: i32) -> io::Result<()> {
        self.epochs.assign(epoch, self.log_end_offset())
    }

    /// Where `epoch` starts in the log, if it is known.
    pub fn epoch_start_offset(&self, epoch: i32) -> Option<i64> {
        self.epochs
            .entries()
            .iter()
            .find(|e| e.epoch == epoch)
            .map(|e| e.start_offset)
    }

    fn is_expired(&self, segment: &LogSegment, now_ms: i64, total_bytes: u64) -> bool {
        let retention_ms = self.config.retention_ms;
        let too_old = retention_ms >= 0
            && now_ms.saturating_sub(segment.largest_timestamp_ms()) > retention_ms;
        let too_big = u64::try_from(self.config.retention_bytes)
            .is_ok_and(|limit| total_bytes - segment.size() >= limit);
        too_old || too_big
    }

    /// Deletes the whole partition directory.
    pub fn delete(self) -> io::Result<()> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(dir)
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(LogSegment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    pub fn segments(&self) -> &[LogSegment] {
        &self.segments
    }

    pub fn recovery_stats(&self) -> RecoveryStats {
        self.recovery
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Takes new settings (a topic config change); they apply from the next append, roll
    /// or retention run.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn active(&self) -> &LogSegment {
        self.segments
            .last()
            .expect("a partition log always has a segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments
            .last_mut()
            .expect("a partition log always has a segment")
    }
}

/// Base offset the `index`-th batch of a validated payload gets when the
/// payload is appended at `first_offset`.
fn nth_batch_base_offset(records: &[u8], first_offset: i64, index: usize) -> i64 {
    first_offset
        + BatchIter::new(records)
            .take(index)
            .map(|(h, _)| h.offset_count())
            .sum::<i64>()
}

/// The leader epoch cache of a just opened log: the checkpoint, minus entries past the
/// log end, with the first clamped to the log start, if its latest epoch is the last
/// batch's. Otherwise (missing, malformed, or a crash between a log change and the
/// checkpoint write) it is rebuilt from the batch headers.
fn load_epochs(dir: &Path, segments: &[LogSegment]) -> io::Result<LeaderEpochCache> {
    let log_start = segments.first().map_or(0, LogSegment::base_offset);
    let log_end = segments.last().map_or(0, LogSegment::next_offset);
    let last_batch_epoch = match segments.iter().rev().find(|s| !s.is_empty()) {
        Some(segment) => segment
            .find(segment.next_offset() - 1)?
            .map(|b| b.header.partition_leader_epoch.get()),
        None => None,
    };
    if let Some(stored) = LeaderEpochCache::read(dir)? {
        let mut cache = LeaderEpochCache::new(dir, stored);
        cache.truncate_from_end(log_end)?;
        let consistent = match last_batch_epoch {
            Some(epoch) if epoch >= 0 => cache.latest_epoch() == Some(epoch),
            _ => true,
        };
        if consistent {
            cache.truncate_from_start(log_start)?;
            return Ok(cache);
        }
        tracing::warn!(dir = %dir.display(), "leader epoch checkpoint does not match the log, rebuilding it");
    }
    let mut entries: Vec<EpochEntry> = Vec::new();
    for segment in segments.iter().filter(|s| !s.is_empty()) {
        let first = segment.read_header(0)?;
        let last = segment.find(segment.next_offset() - 1)?.unwrap_or(first);
        let mut note = |epoch: i32, start_offset: i64| {
            if epoch >= 0 && entries.last().is_none_or(|e| epoch > e.epoch) {
                entries.push(EpochEntry {
                    epoch,
                    start_offset,
                });
            }
        };
        let (first_epoch, last_epoch) = (
            first.header.partition_leader_epoch.get(),
            last.header.partition_leader_epoch.get(),
        );
        if first_epoch == last_epoch {
            // Epochs never decrease along a log: the whole segment has this one.
            note(first_epoch, first.base_offset());
            continue;
        }
        let mut position = 0;
        while position < segment.size() {
            let batch = segment.read_header(position)?;
            note(
                batch.header.partition_leader_epoch.get(),
                batch.base_offset(),
            );
            position = batch.end();
        }
    }
    let cache = LeaderEpochCache::new(dir, entries);
    // No file reads as an empty cache: an empty log costs no write.
    if cache.latest_epoch().is_some() {
        cache.save()?;
    }
    Ok(cache)
}

/// Base offsets of the segments in `dir`, sorted. Removes index files with no `.log`.
fn list_segments(dir: &Path) -> io::Result<Vec<i64>> {
    let mut bases = Vec::new();
    let mut indexes = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(base) = parse_segment_name(name, LOG_SUFFIX) {
            bases.push(base);
        } else if let Some(base) = parse_segment_name(name, INDEX_SUFFIX)
            .or_else(|| parse_segment_name(name, TIME_INDEX_SUFFIX))
        {
            indexes.push((base, entry.path()));
        }
    }
    bases.sort_unstable();
    for (base, path) in indexes {
        if bases.binary_search(&base).is_err() {
            tracing::warn!(path = %path.display(), "removing index file without a log segment");
            fs::remove_file(path)?;
        }
    }
    Ok(bases)
}

/// Opens every segment (see [`PartitionLog::open`]). Returns the segments
/// and the base offset of the first one that was recovered rather than trusted.
fn load_segments(
    dir: &Path,
    bases: &[i64],
    recovery_point: i64,
    clean_shutdown: bool,
    config: &LogConfig,
    stats: &mut RecoveryStats,
) -> io::Result<(Vec<LogSegment>, Option<i64>)> {
    let interval = config.index_interval_bytes;
    let mut segments: Vec<LogSegment> = Vec::with_capacity(bases.len());
    let mut first_recovered = None;
    for (i, &base) in bases.iter().enumerate() {
        let next_base = bases.get(i + 1).copied();
        let attempt = match next_base {
            Some(next) if next <= recovery_point => Some(
                LogSegment::open_trusted(dir, base, next, interval)?
                    .map(|segment| (segment, RecoveryOutcome::default())),
            ),
            None if clean_shutdown => Some(LogSegment::open_trusted_active(dir, base, interval)?),
            _ => None,
        };
        let trusted = match attempt {
            Some(Ok(opened)) => Some(opened),
            Some(Err(insane)) => {
                tracing::warn!(dir = %dir.display(), base, %insane, "rebuilding index of segment");
                None
            }
            None => None,
        };
        let (segment, outcome) = match trusted {
            Some(opened) => {
                stats.segments_trusted += 1;
                opened
            }
            None => {
                stats.segments_recovered += 1;
                first_recovered.get_or_insert(base);
                LogSegment::open_and_recover(dir, base, interval)?
            }
        };
        stats.bytes_truncated += outcome.truncated_bytes;
        let overlaps_next = next_base.is_some_and(|next| segment.next_offset() > next);
        // Only the last segment stays active (the loop may stop early, so
        // the previous one is only known inactive now).
        if let Some(previous) = segments.last_mut() {
            previous.close_inactive();
        }
        segments.push(segment);
        if next_base.is_some() && (outcome.truncated_bytes > 0 || overlaps_next) {
            // Kafka semantics: nothing after the first bad batch survives.
            stats.segments_deleted += delete_segments(dir, &bases[i + 1..])?;
            break;
        }
    }
    Ok((segments, first_recovered))
}

fn delete_segments(dir: &Path, bases: &[i64]) -> io::Result<usize> {
    for &base in bases {
        tracing::warn!(dir = %dir.display(), base, "deleting segment after a corrupt one");
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            match fs::remove_file(super::segment::segment_path(dir, base, suffix)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
    }
    Ok(bases.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::test_util::{batch, batch_with, concat};
    use crate::log::segment::segment_path;
    use kafka_protocol::records::Compression;
    use std::fs::OpenOptions;

    /// One single-record batch with a 30-byte value: the unit of most tests.
    fn one(ts: i64) -> Bytes {
        batch(1, ts, 30)
    }

    fn batch_len() -> u64 {
        one(0).len() as u64
    }

    /// Ten `one` batches per segment.
    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 10 * batch_len(),
            segment_ms: i64::MAX,
            retention_ms: -1,
            retention_bytes: -1,
            max_message_bytes: 1 << 20,
            index_interval_bytes: 150,
            preallocate: true,
        }
    }

    fn open(dir: &Path) -> PartitionLog {
        PartitionLog::open(
            &dir.join("topic-0"),
            config(),
            RecoveryStart::RecoveryPoint(0),
        )
        .unwrap()
    }

    fn append_n(log: &mut PartitionLog, n: i64, first_ts: i64) {
        for i in 0..n {
            log.append(&one(first_ts + i), 0, 0).unwrap();
        }
    }

    fn bases(log: &PartitionLog) -> Vec<i64> {
        log.segments().iter().map(LogSegment::base_offset).collect()
    }

    fn flush(log: &mut PartitionLog) {
        while let Some(job) = log.flush_job() {
            job.run().unwrap();
            log.complete_flush(&job);
        }
    }

    fn flip_byte(path: &Path, position: u64) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8];
        file.read_exact_at(&mut b, position).unwrap();
        file.write_all_at(&[b[0] ^ 0xFF], position).unwrap();
    }

    fn offsets_in(slice: &ReadSlice) -> Vec<(i64, i64)> {
        let bytes = slice.read_to_bytes().unwrap();
        BatchIter::new(&bytes)
            .map(|(h, _)| (h.base_offset.get(), h.last_offset()))
            .collect()
    }

    #[test]
    fn empty_dir_gets_segment_zero() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        assert_eq!(
            (
                log.log_start_offset(),
                log.log_end_offset(),
                log.size_bytes()
            ),
            (0, 0, 0)
        );
        assert!(dir.path().join("topic-0/00000000000000000000.log").exists());
        // Indexes are only written when the segment is sealed.
        let index = dir.path().join("topic-0/00000000000000000000.index");
        let time_index = dir.path().join("topic-0/00000000000000000000.timeindex");
        assert!(!index.exists() && !time_index.exists());
        let mut log = log;
        log.seal_for_close().unwrap();
        assert!(index.exists() && time_index.exists());
    }

    #[test]
    fn append_assigns_consecutive_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        let a = log.append(&batch(3, 10, 5), 4, 0).unwrap();
        assert_eq!((a.base_offset, a.last_offset, a.max_timestamp), (0, 2, 10));
        let payload = concat(&[batch(2, 50, 5), batch(4, 70, 5), batch(1, 60, 5)]);
        let b = log.append(&payload, 4, 0).unwrap();
        assert_eq!((b.base_offset, b.last_offset, b.batch_count), (3, 9, 3));
        assert_eq!((b.max_timestamp, b.offset_of_max_timestamp), (70, 5));
        assert_eq!(log.log_end_offset(), 10);
    }

    #[test]
    fn append_claiming_more_offsets_than_a_segment_can_index_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        // Control batches skip the record count check: each may claim 2^31 offsets.
        let mut huge = batch(1, 0, 10).to_vec();
        huge[21..23].copy_from_slice(&(1i16 << 5).to_be_bytes()); // control
        huge[23..27].copy_from_slice(&i32::MAX.to_be_bytes()); // lastOffsetDelta
        let crc = crate::log::batch::compute_crc(&huge);
        huge[17..21].copy_from_slice(&crc.to_be_bytes());
        let huge = Bytes::from(huge);
        let payload = concat(&[huge.clone(), huge.clone(), huge]);
        let err = log.append(&payload, 0, 0).unwrap_err();
        assert!(matches!(err, AppendError::OffsetOverflow { .. }), "{err}");
        assert_eq!((log.size_bytes(), log.log_end_offset()), (0, 0));
    }

    #[test]
    fn invalid_append_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        append_n(&mut log, 1, 0);
        let size = log.size_bytes();
        let mut bad = concat(&[one(1), one(2)]).to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1; // the second batch is corrupt: the first must not be written either
        let err = log.append(&Bytes::from(bad), 0, 0).unwrap_err();
        assert_eq!(err.kafka_error_code(), error_code::CORRUPT_MESSAGE);
        let mut old = one(1).to_vec();
        old[16] = 1;
        let err = log.append(&Bytes::from(old), 0, 0).unwrap_err();
        assert_eq!(
            err.kafka_error_code(),
            error_code::UNSUPPORTED_FOR_MESSAGE_FORMAT
        );
        assert_eq!((log.size_bytes(), log.log_end_offset()), (size, 1));
        let segment = &log.segments()[0];
        assert_eq!(fs::metadata(segment.log_path()).unwrap().len(), size);
    }

    #[test]
    fn rolls_by_size_and_oversized_batch_gets_its_own_segment() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        append_n(&mut log, 25, 0);
        assert_eq!(bases(&log), vec![0, 10, 20]);
        for segment in &log.segments()[..2] {
            assert_eq!(segment.size(), 10 * batch_len());
            assert!(segment
                .log_path()
                .ends_with(format!("{:020}.log", segment.base_offset())));
        }
        let big = batch(2, 0, 2 * config().segment_bytes as usize);
        let info = log.append(&big, 0, 0).unwrap();
        assert_eq!((info.segment_base_offset, info.position), (25, 0));
        append_n(&mut log, 1, 0);
        assert_eq!(bases(&log), vec![0, 10, 20, 25, 27]);
    }

    #[test]
    fn rolls_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            segment_ms: 1_000,
            ..config()
        };
        let mut log = PartitionLog::open(dir.path(), cfg, RecoveryStart::RecoveryPoint(0)).unwrap();
        // The first segment's creation time is wall-clock time at open.
        let t0 = system_time_ms(SystemTime::now());
        log.append(&one(0), 0, t0).unwrap();
        log.append(&one(0), 0, t0 + 500).unwrap();
        assert_eq!(bases(&log), vec![0]);
        log.append(&one(0), 0, t0 + 1_500).unwrap();
        assert_eq!(bases(&log), vec![0, 2]);
        // The new segment's age counts from the roll.
        log.append(&one(0), 0, t0 + 2_400).unwrap();
        assert_eq!(bases(&log), vec![0, 2]);
        log.append(&one(0), 0, t0 + 2_500).unwrap();
        assert_eq!(bases(&log), vec![0, 2, 4]);
    }

    #[test]
    fn read_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        // Offsets 0..=4 in one batch, then 5..=24 in single-record batches.
        log.append(&batch(5, 0, 10), 0, 0).unwrap();
        append_n(&mut log, 20, 0);
        let five = log.segments()[0].find(0).unwrap().unwrap().size as usize;
        let unit = batch_len() as usize;

        // Mid-batch offset: the slice starts at the batch holding it.
        let s = log.read(3, 1 << 20).unwrap();
        assert_eq!(s.position, 0);
        assert_eq!(offsets_in(&s)[0], (0, 4));
        // One segment only, whole batches only.
        assert_eq!(s.len as u64, log.segments()[0].size());
        let s = log.read(5, 3 * unit + unit / 2).unwrap();
        assert_eq!(offsets_in(&s), vec![(5, 5), (6, 6), (7, 7)]);
        // max_bytes below the first batch still returns it whole.
        let s = log.read(1, 10).unwrap();
        assert_eq!((s.position, s.len), (0, five));
        // Offset in a later segment.
        let later = log.segments()[1].base_offset();
        let s = log.read(later + 1, 2 * unit).unwrap();
        assert_eq!(
            offsets_in(&s),
            vec![(later + 1, later + 1), (later + 2, later + 2)]
        );
        // Bounded reads stop before the first batch reaching the bound.
        let s = log.read_bounded(0, 1 << 20, 8).unwrap();
        assert_eq!(offsets_in(&s), vec![(0, 4), (5, 5), (6, 6), (7, 7)]);
        assert!(log.read_bounded(3, 1 << 20, 4).unwrap().is_empty()); // straddles
        assert!(log.read_bounded(8, 1 << 20, 8).unwrap().is_empty());
        // At the log end: empty. Beyond, or before the start: out of range.
        assert!(log.read(25, 100).unwrap().is_empty());
        for offset in [26, -1] {
            let err = log.read(offset, 100).unwrap_err();
            assert_eq!(err.kafka_error_code(), error_code::OFFSET_OUT_OF_RANGE);
        }
    }

    #[test]
    fn retention_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            retention_ms: 1_000,
            ..config()
        };
        let mut log = PartitionLog::open(dir.path(), cfg, RecoveryStart::RecoveryPoint(0)).unwrap();
        append_n(&mut log, 10, 1_000); // max ts 1009
        append_n(&mut log, 10, 5_000); // max ts 5009
        append_n(&mut log, 5, 9_000); // active
        let reader = log.read(0, 1 << 20).unwrap();
        let first_log = log.segments()[0].log_path().to_path_buf();

        assert_eq!(log.enforce_retention(5_500), 1);
        assert_eq!(log.log_start_offset(), 10);
        assert!(!first_log.exists());
        assert!(!first_log.with_extension("index").exists());
        assert!(matches!(
            log.read(5, 100),
            Err(ReadError::OffsetOutOfRange { .. })
        ));
        // A reader holding the deleted segment's file still reads it.
        assert_eq!(offsets_in(&reader).len(), 10);
        // The active segment is never deleted, however old.
        assert_eq!(log.enforce_retention(1_000_000), 1);
        assert_eq!((bases(&log), log.log_start_offset()), (vec![20], 20));
        // And the log reopens with the new start offset.
        drop(log);
        let log =
            PartitionLog::open(dir.path(), config(), RecoveryStart::RecoveryPoint(0)).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 25));
    }

    #[test]
    fn retention_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let seg = config().segment_bytes as i64;
        let cfg = LogConfig {
            retention_bytes: 2 * seg,
            ..config()
        };
        let mut log = PartitionLog::open(dir.path(), cfg, RecoveryStart::RecoveryPoint(0)).unwrap();
        append_n(&mut log, 45, 0); // four full segments and a half-full active one
        assert_eq!(log.segment_count(), 5);
        // 4.5 segments; deleting two leaves 2.5 >= 2, a third would leave 1.5.
        assert_eq!(log.enforce_retention(0), 2);
        assert_eq!(log.log_start_offset(), 20);
        assert_eq!(log.size_bytes(), 25 * batch_len());
        assert_eq!(log.enforce_retention(0), 0);
    }

    /// Three segments' worth of data and the position of every batch in the last.
    fn three_segments(dir: &Path) -> PartitionLog {
        let mut log = PartitionLog::open(dir, config(), RecoveryStart::RecoveryPoint(0)).unwrap();
        append_n(&mut log, 25, 0);
        assert_eq!(bases(&log), vec![0, 10, 20]);
        log
    }

    #[test]
    fn recovers_from_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = three_segments(dir.path());
        let active = log.segments()[2].log_path().to_path_buf();
        drop(log);
        // Cut the last batch (offset 24) in half.
        let torn = 4 * batch_len() + batch_len() / 2;
        OpenOptions::new()
            .write(true)
            .open(&active)
            .unwrap()
            .set_len(torn)
            .unwrap();

        let mut log =
            PartitionLog::open(dir.path(), config(), RecoveryStart::RecoveryPoint(0)).unwrap();
        let stats = log.recovery_stats();
        assert_eq!(stats.bytes_truncated, batch_len() / 2);
        assert_eq!(stats.segments_deleted, 0);
        assert_eq!(log.log_end_offset(), 24);
        assert_eq!(fs::metadata(&active).unwrap().len(), 4 * batch_len());
        let info = log.append(&one(0), 0, 0).unwrap();
        assert_eq!(info.base_offset, 24);
        let s = log.read(23, 1 << 20).unwrap();
        assert_eq!(offsets_in(&s), vec![(23, 23), (24, 24)]);
    }

    #[test]
    fn corrupt_byte_past_recovery_point_truncates_there() {
        let dir = tempfile::tempdir().unwrap();
        let log = three_segments(dir.path());
        let middle = log.segments()[1].log_path().to_path_buf();
        drop(log);
        // Flip a byte inside the record data of offset 13 (4th batch of segment 1).
        flip_byte(&middle, 3 * batch_len() + 70);

        let mut log =
            PartitionLog::open(dir.path(), config(), RecoveryStart::RecoveryPoint(0)).unwrap();
        let stats = log.recovery_stats();
        assert_eq!((stats.segments_recovered, stats.segments_deleted), (2, 1));
        assert_eq!(stats.bytes_truncated, 7 * batch_len());
        assert_eq!(bases(&log), vec![0, 10]);
        assert_eq!(log.log_end_offset(), 13);
        assert!(!segment_path(log.dir(), 20, LOG_SUFFIX).exists());
        assert_eq!(log.append(&one(0), 0, 0).unwrap().base_offset, 13);
    }

    #[test]
    fn segments_below_recovery_point_are_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = three_segments(dir.path());
        flush(&mut log);
        assert_eq!(log.flushed_offset(), 25);
        // Capped at the active segment, whose indexes are still changing.
        assert_eq!(log.recovery_point(), 20);
        let first = log.segments()[0].log_path().to_path_buf();
        drop(log);
        // Corrupt a trusted segment: recovery must not even look at it.
        flip_byte(&first, 5 * batch_len() + 70);

        let log =
            PartitionLog::open(dir.path(), config(), RecoveryStart::RecoveryPoint(20)).unwrap();
        let stats = log.recovery_stats();
        assert_eq!(stats.recovery_point, 20);
        assert_eq!((stats.segments_trusted, stats.segments_recovered), (2, 1));
        assert_eq!(stats.bytes_truncated, 0);
        assert_eq!(log.log_end_offset(), 25);
        assert_eq!(log.segments()[0].size(), 10 * batch_len());
        assert_eq!(log.segments()[1].max_timestamp(), 19);
        assert_eq!(log.flushed_offset(), 20);
        drop(log);

        // Without the checkpoint everything is rescanned and the damage found.
        let log =
            PartitionLog::open(dir.path(), config(), RecoveryStart::RecoveryPoint(0)).unwrap();
        assert_eq!(log.recovery_stats().segments_recovered, 1);
        assert_eq!(log.recovery_stats().segments_deleted, 2);
        assert_eq!(log.log_end_offset(), 5);
    }

    #[test]
    fn insane_trusted_index_is_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = three_segments(dir.path());
        flush(&mut log);
        let recovery_point = log.recovery_point();
        let index = segment_path(log.dir(), 0, INDEX_SUFFIX);
        let good = fs::read(&index).unwrap();
        assert!(!good.is_empty());
        drop(log);
        fs::write(&index, &good[..good.len() - 3]).unwrap();

        let start = RecoveryStart::RecoveryPoint(recovery_point);
        let log = PartitionLog::open(dir.path(), config(), start).unwrap();
        let stats = log.recovery_stats();
        assert_eq!((stats.segments_trusted, stats.segments_recovered), (1, 2));
        assert_eq!(fs::read(&index).unwrap(), good);
        assert_eq!(log.log_end_offset(), 25);
    }

    #[test]
    fn flush_jobs_cover_unflushed_segments_and_new_directory_entries() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        // A fresh log must make its first segment's directory entry durable.
        let job = log.flush_job().unwrap();
        assert!(job.dir.is_some());
        job.run().unwrap();
        log.complete_flush(&job);
        assert!(log.flush_job().is_none());

        append_n(&mut log, 5, 0);
        let job = log.flush_job().unwrap();
        assert_eq!(
            (job.files.len(), job.dir.is_some(), job.log_end_offset()),
            (1, false, 5)
        );
        append_n(&mut log, 10, 0); // rolls to segment 10 while the job is "running"
        job.run().unwrap();
        log.complete_flush(&job);
        assert_eq!(log.flushed_offset(), 5);

        let job = log.flush_job().unwrap();
        // The active log (held open); by path, the sealed segment's log and two
        // indexes; and the directory.
        assert_eq!((job.files.len(), job.paths.len()), (1, 3), "{job:?}");
        assert_eq!((job.dir.is_some(), job.log_end_offset()), (true, 15));
        job.run().unwrap();
        log.complete_flush(&job);
        assert_eq!(log.flushed_offset(), 15);
        assert!(log.flush_job().is_none());
    }

    /// Bytes of disk a file holds, reserved blocks past its end included.
    fn allocated(path: &Path) -> u64 {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(path).unwrap().blocks() * 512
    }

    #[test]
    fn busy_active_segments_reserve_blocks_ahead_and_free_them_when_they_roll() {
        const MIB: u64 = 1 << 20;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topic-0");
        let config = LogConfig {
            segment_bytes: 4 * MIB,
            max_message_bytes: 2 * MIB as usize,
            ..config()
        };
        let mut log =
            PartitionLog::open(&path, config.clone(), RecoveryStart::RecoveryPoint(0)).unwrap();
        let chunk = batch(1, 0, 256 << 10);
        let first_log = segment_path(&path, 0, LOG_SUFFIX);
        // Under RESERVE_FROM_BYTES nothing is reserved.
        for _ in 0..3 {
            log.append(&chunk, 0, 0).unwrap();
        }
        flush(&mut log);
        let size = log.active().size();
        assert!(
            allocated(&first_log) < size + 64 * 1024,
            "{}",
            allocated(&first_log)
        );

        for _ in 0..3 {
            log.append(&chunk, 0, 0).unwrap();
        }
        flush(&mut log);
        // About 1.5 MiB held: as much again is reserved, the file's length unchanged.
        let size = log.active().size();
        assert_eq!(fs::metadata(&first_log).unwrap().len(), size);
        assert!(
            allocated(&first_log) >= 2 * size,
            "{} of {size}",
            allocated(&first_log)
        );

        // Up to the segment's limit (4 MiB) is reserved; past it the log rolls, and the
        // old segment gives back what it reserved beyond its end.
        while log.segments().len() == 1 {
            log.append(&chunk, 0, 0).unwrap();
            flush(&mut log);
        }
        let old_size = log.segments()[0].size();
        assert!(
            allocated(&first_log) < old_size + 64 * 1024,
            "{} of {old_size}",
            allocated(&first_log)
        );

        // Blocks past a file's end are invisible to recovery.
        let end = log.log_end_offset();
        drop(log);
        let log = PartitionLog::open(&path, config, RecoveryStart::RecoveryPoint(0)).unwrap();
        assert_eq!(log.log_end_offset(), end);
    }

    #[test]
    fn without_preallocate_nothing_is_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("topic-0");
        let config = LogConfig {
            segment_bytes: 4 << 20,
            max_message_bytes: 2 << 20,
            preallocate: false,
            ..config()
        };
        let mut log = PartitionLog::open(&path, config, RecoveryStart::RecoveryPoint(0)).unwrap();
        for _ in 0..8 {
            log.append(&batch(1, 0, 256 << 10), 0, 0).unwrap();
        }
        flush(&mut log);
        let size = log.active().size();
        let allocated = allocated(&segment_path(&path, 0, LOG_SUFFIX));
        assert!(allocated < size + 64 * 1024, "{allocated} of {size}");
    }

    /// A file the job cannot open (here gone; in production, out of descriptors) is not a
    /// failed fdatasync: the caller keeps the partition online and retries.
    #[test]
    fn a_flush_that_cannot_open_a_file_is_not_a_failed_sync() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        append_n(&mut log, 15, 0); // rolls to segment 10
        let job = log.flush_job().unwrap();
        std::fs::remove_file(&job.paths[0]).unwrap();
        assert!(matches!(job.run(), Err(FlushError::Open(_))), "{job:?}");
    }

    #[test]
    fn timestamp_lookups_across_segments_and_compression() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        log.append(&batch_with(&[100, 300, 200], 10, Compression::None), 0, 0)
            .unwrap(); // 0..=2
        append_n(&mut log, 12, 400); // 3..=14, ts 400..=411, rolls
        log.append(
            &batch_with(&[500, 900, 900, 600], 10, Compression::Gzip),
            0,
            0,
        )
        .unwrap(); // 15..=18
        log.append(&batch_with(&[700], 10, Compression::Zstd), 0, 0)
            .unwrap(); // 19
        assert!(log.segment_count() >= 2);

        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((100, 0)));
        assert_eq!(log.offset_for_timestamp(150).unwrap(), Some((300, 1)));
        assert_eq!(log.offset_for_timestamp(301).unwrap(), Some((400, 3)));
        assert_eq!(log.offset_for_timestamp(405).unwrap(), Some((405, 8)));
        assert_eq!(log.offset_for_timestamp(412).unwrap(), Some((500, 15)));
        assert_eq!(log.offset_for_timestamp(650).unwrap(), Some((900, 16)));
        assert_eq!(log.offset_for_timestamp(901).unwrap(), None);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((900, 16)));

        // The same answers after a reopen that trusts the sealed segments.
        flush(&mut log);
        let start = RecoveryStart::RecoveryPoint(log.recovery_point());
        drop(log);
        let log = PartitionLog::open(&dir.path().join("topic-0"), config(), start).unwrap();
        assert!(log.recovery_stats().segments_trusted >= 1);
        assert_eq!(log.offset_for_timestamp(405).unwrap(), Some((405, 8)));
        assert_eq!(log.offset_for_timestamp(650).unwrap(), Some((900, 16)));
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((900, 16)));
    }

    #[test]
    fn empty_log_has_no_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let log = open(dir.path());
        assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
        assert_eq!(log.max_timestamp_offset().unwrap(), None);
    }

    #[test]
    fn delete_removes_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        append_n(&mut log, 3, 0);
        let path = log.dir().to_path_buf();
        log.delete().unwrap();
        assert!(!path.exists());
    }

    /// Every stored batch as `(base offset, last offset, leader epoch)`.
    fn batches(log: &PartitionLog) -> Vec<(i64, i64, i32)> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let bytes = log.read(offset, 1 << 20).unwrap().read_to_bytes().unwrap();
            for (h, _) in BatchIter::new(&bytes) {
                out.push((
                    h.base_offset.get(),
                    h.last_offset(),
                    h.partition_leader_epoch.get(),
                ));
                offset = h.last_offset() + 1;
            }
        }
        out
    }

    /// The `.log` files of a partition, by name, with their bytes.
    fn log_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .map(|p| {
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    fs::read(&p).unwrap(),
                )
            })
            .collect();
        files.sort();
        files
    }

    fn epochs(log: &PartitionLog) -> Vec<(i32, i64)> {
        log.epochs
            .entries()
            .iter()
            .map(|e| (e.epoch, e.start_offset))
            .collect()
    }

    fn checkpoint(log: &PartitionLog) -> String {
        fs::read_to_string(
            log.dir()
                .join(super::super::leader_epoch::LEADER_EPOCH_CHECKPOINT),
        )
        .unwrap()
    }

    #[test]
    fn appends_of_newer_epochs_fill_the_epoch_cache() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        assert_eq!(
            (log.latest_epoch(), log.end_offset_for_epoch(0)),
            (None, None)
        );
        log.append(&one(0), 1, 0).unwrap();
        log.append(&one(0), 1, 0).unwrap();
        log.start_leader_epoch(3).unwrap(); // elected at 2, before any append
        log.append(&one(0), 3, 0).unwrap();
        log.append(&one(0), 3, 0).unwrap();
        assert_eq!(epochs(&log), vec![(1, 0), (3, 2)]);
        assert_eq!(checkpoint(&log), "0\n2\n1 0\n3 2\n");
        assert_eq!(log.latest_epoch(), Some(3));
        assert_eq!(log.epoch_start_offset(3), Some(2));
        assert_eq!(log.end_offset_for_epoch(3), Some((3, 4)));
        assert_eq!(log.end_offset_for_epoch(2), Some((1, 2)));
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 2)));
        assert_eq!(log.end_offset_for_epoch(0), Some((0, 0)));
        assert_eq!(log.end_offset_for_epoch(4), None);
        // The stored batches carry their epochs, and a reopen keeps the cache.
        assert_eq!(
            batches(&log),
            vec![(0, 0, 1), (1, 1, 1), (2, 2, 3), (3, 3, 3)]
        );
        drop(log);
        let log = open(dir.path());
        assert_eq!(epochs(&log), vec![(1, 0), (3, 2)]);
    }

    #[test]
    fn epoch_cache_is_rebuilt_from_the_batches_when_missing_or_inconsistent() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        // Epochs 0, 2 and 5 over three segments, 2 starting mid-segment.
        for (count, epoch) in [(13, 0), (9, 2), (3, 5)] {
            for _ in 0..count {
                log.append(&one(0), epoch, 0).unwrap();
            }
        }
        let expected = vec![(0, 0), (2, 13), (5, 22)];
        assert_eq!(epochs(&log), expected);
        let path = log
            .dir()
            .join(super::super::leader_epoch::LEADER_EPOCH_CHECKPOINT);
        drop(log);
        fs::remove_file(&path).unwrap();
        let log = open(dir.path());
        assert_eq!(epochs(&log), expected);
        assert_eq!(checkpoint(&log), "0\n3\n0 0\n2 13\n5 22\n");
        drop(log);
        // A latest epoch that is not the last batch's: rebuilt.
        fs::write(&path, "0\n2\n0 0\n2 13\n").unwrap();
        let log = open(dir.path());
        assert_eq!(epochs(&log), expected);
        drop(log);
        // Entries past the log end (a crash after a truncation) are dropped.
        fs::write(&path, "0\n4\n0 0\n2 13\n5 22\n7 25\n").unwrap();
        let log = open(dir.path());
        assert_eq!(epochs(&log), expected);
        assert_eq!(checkpoint(&log), "0\n3\n0 0\n2 13\n5 22\n");
    }

    #[test]
    fn retention_clamps_the_first_epoch_to_the_log_start() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            retention_bytes: 0,
            ..config()
        };
        let mut log = PartitionLog::open(dir.path(), cfg, RecoveryStart::RecoveryPoint(0)).unwrap();
        for i in 0..25 {
            log.append(&one(0), if i < 5 { 1 } else { 2 }, 0).unwrap();
        }
        assert_eq!(log.enforce_retention(0), 2);
        assert_eq!(epochs(&log), vec![(2, 20)]);
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 20)));
        // A follower drops segments below the leader's log start the same way.
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        for i in 0..25 {
            log.append(&one(0), if i < 5 { 1 } else { 2 }, 0).unwrap();
        }
        assert_eq!(log.delete_segments_below(19), 1);
        assert_eq!((log.log_start_offset(), epochs(&log)), (10, vec![(2, 10)]));
        assert_eq!(log.delete_segments_below(1_000), 1); // never the active segment
        assert_eq!(bases(&log), vec![20]);
    }

    #[test]
    fn truncate_across_segments_then_append_and_recover_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        // 0..=4 epoch 1 in one batch, then single-record batches: 5..=12 epoch 1,
        // 13..=29 epoch 2; ten single-record batches fill a segment.
        log.append(&batch(5, 0, 10), 1, 0).unwrap();
        for i in 5..30 {
            log.append(&one(i), if i < 13 { 1 } else { 2 }, 0).unwrap();
        }
        flush(&mut log);
        assert_eq!(bases(&log), vec![0, 13, 23]);
        let holding = 13;
        let later: Vec<PathBuf> = log.segments()[2..]
            .iter()
            .map(|s| s.log_path().to_path_buf())
            .collect();

        // Into the middle of the second segment, past the start of epoch 2.
        let cut = holding + 4;
        assert_eq!(log.truncate_to(cut).unwrap(), cut);
        assert_eq!(log.log_end_offset(), cut);
        assert_eq!(bases(&log), vec![0, holding]);
        assert!(later.iter().all(|p| !p.exists()));
        assert!(!segment_path(log.dir(), later_base(&later[0]), INDEX_SUFFIX).exists());
        assert_eq!(epochs(&log), vec![(1, 0), (2, 13)]);
        // The recovery point no longer covers what was cut.
        assert!(log.recovery_point() <= cut);
        let segment = &log.segments()[1];
        assert_eq!(segment.size(), (cut - holding) as u64 * batch_len());
        assert!(segment
            .offset_index()
            .last_entry()
            .is_none_or(|e| e.offset < cut));
        assert_eq!(
            fs::metadata(segment.offset_index().path()).unwrap().len() as usize,
            segment.offset_index().len() * 8
        );

        // Appending continues at the cut, with a new epoch; then a crash (no flush).
        log.start_leader_epoch(4).unwrap();
        for i in 0..12 {
            log.append(&one(100 + i), 4, 0).unwrap();
        }
        let before = (batches(&log), log_files(log.dir()), epochs(&log));
        assert_eq!(before.0[before.0.len() - 12].0, cut);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((111, cut + 11)));
        drop(log);
        let log = open(dir.path());
        assert!(log.recovery_stats().segments_recovered >= 1);
        assert_eq!(log.recovery_stats().bytes_truncated, 0);
        assert_eq!((batches(&log), log_files(log.dir()), epochs(&log)), before);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((111, cut + 11)));
    }

    fn later_base(path: &Path) -> i64 {
        parse_segment_name(&path.file_name().unwrap().to_string_lossy(), LOG_SUFFIX).unwrap()
    }

    #[test]
    fn truncating_inside_a_batch_cuts_at_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        log.append(&one(0), 0, 0).unwrap();
        log.append(&batch(5, 0, 10), 0, 0).unwrap(); // 1..=5
        log.append(&one(0), 0, 0).unwrap();
        assert_eq!(log.truncate_to(3).unwrap(), 1);
        assert_eq!(batches(&log), vec![(0, 0, 0)]);
        assert_eq!(log.truncate_to(7).unwrap(), 1); // at or past the end: nothing
        assert_eq!(log.truncate_to(0).unwrap(), 0);
        assert_eq!((log.size_bytes(), epochs(&log)), (0, vec![]));
    }

    #[test]
    fn divergence_cuts_where_our_own_copy_of_the_epoch_ends() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        log.append(&one(0), 1, 0).unwrap();
        log.append(&one(0), 1, 0).unwrap();
        // This replica led epoch 3 from offset 2 and wrote one batch the others never got;
        // the new leader's epoch 1 runs on to 5.
        log.start_leader_epoch(3).unwrap();
        log.append(&one(0), 3, 0).unwrap();
        assert_eq!(log.truncate_to_divergence(1, 5).unwrap(), 2);
        assert_eq!((epochs(&log), log.latest_epoch()), (vec![(1, 0)], Some(1)));
        assert_eq!(batches(&log), vec![(0, 0, 1), (1, 1, 1)]);
        // Where our copy reaches past the leader's, the leader's end wins.
        assert_eq!(log.truncate_to_divergence(1, 1).unwrap(), 1);
        assert_eq!(batches(&log), vec![(0, 0, 1)]);
    }

    #[test]
    fn truncating_at_the_end_drops_an_epoch_that_holds_no_batch() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        log.append(&one(0), 1, 0).unwrap();
        log.append(&one(0), 1, 0).unwrap();
        // Elected at 2, then replaced before any append: the next leader, without
        // epoch 2, answers a fetch at 2 with a divergence at epoch 1 ending at 2.
        log.start_leader_epoch(2).unwrap();
        assert_eq!(log.truncate_to(2).unwrap(), 2);
        assert_eq!((epochs(&log), log.latest_epoch()), (vec![(1, 0)], Some(1)));
        assert_eq!(checkpoint(&log), "0\n1\n1 0\n");
        assert_eq!(batches(&log), vec![(0, 0, 1), (1, 1, 1)]);
    }

    #[test]
    fn truncate_fully_restarts_the_log_at_an_offset() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = three_segments(&dir.path().join("p"));
        log.truncate_fully_and_start_at(100).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
        assert_eq!(bases(&log), vec![100]);
        assert_eq!((log.latest_epoch(), log.size_bytes()), (None, 0));
        assert_eq!(log_files(log.dir()).len(), 1);
        assert_eq!(log.append(&one(0), 3, 0).unwrap().base_offset, 100);
        // Below the log start, truncate_to does the same.
        assert_eq!(log.truncate_to(40).unwrap(), 40);
        assert_eq!(bases(&log), vec![40]);
        log.append(&one(0), 3, 0).unwrap();
        drop(log);
        let log = PartitionLog::open(
            &dir.path().join("p"),
            config(),
            RecoveryStart::RecoveryPoint(0),
        )
        .unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (40, 41));
        assert_eq!(epochs(&log), vec![(3, 40)]);
    }

    #[test]
    fn flush_jobs_from_before_a_truncation_do_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = open(dir.path());
        append_n(&mut log, 5, 0);
        let job = log.flush_job().unwrap();
        job.run().unwrap();
        log.truncate_to(2).unwrap();
        append_n(&mut log, 4, 0); // 2..=5, not synced by `job`
        log.complete_flush(&job);
        assert_eq!(log.flushed_offset(), 0);
    }

    #[test]
    fn replicated_appends_keep_the_leaders_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let mut leader = PartitionLog::open(
            &dir.path().join("leader"),
            config(),
            RecoveryStart::RecoveryPoint(0),
        )
        .unwrap();
        let mut follower = PartitionLog::open(
            &dir.path().join("follower"),
            config(),
            RecoveryStart::RecoveryPoint(0),
        )
        .unwrap();
        for i in 0..25 {
            let epoch = match i {
                0..=6 => 1,
                7..=17 => 2,
                _ => 6,
            };
            leader.append(&one(i), epoch, 0).unwrap();
        }
        leader.append(&batch(4, 7, 10), 6, 0).unwrap();
        // Copy it over as fetches would, several epochs per chunk.
        while follower.log_end_offset() < leader.log_end_offset() {
            let chunk = leader
                .read(follower.log_end_offset(), 7 * batch_len() as usize)
                .unwrap()
                .read_to_bytes()
                .unwrap();
            let info = follower.append_replicated(&chunk).unwrap();
            assert_eq!(info.last_offset + 1, follower.log_end_offset());
        }
        assert_eq!(log_files(follower.dir()), log_files(leader.dir()));
        assert_eq!(epochs(&follower), vec![(1, 0), (2, 7), (6, 18)]);
        assert_eq!(checkpoint(&follower), checkpoint(&leader));

        // Not starting at the log end, or with a gap between batches: refused, nothing written.
        let size = follower.size_bytes();
        let at_5 = leader.read(5, 1).unwrap().read_to_bytes().unwrap();
        let err = follower.append_replicated(&at_5).unwrap_err();
        assert!(
            matches!(
                err,
                AppendError::NotContiguous {
                    expected: 29,
                    found: 5
                }
            ),
            "{err}"
        );
        assert_eq!(err.kafka_error_code(), error_code::OFFSET_OUT_OF_RANGE);
        let mut next = one(0).to_vec();
        next[..8].copy_from_slice(&29i64.to_be_bytes());
        let mut gap = one(0).to_vec();
        gap[..8].copy_from_slice(&31i64.to_be_bytes());
        let err = follower
            .append_replicated(&concat(&[Bytes::from(next.clone()), Bytes::from(gap)]))
            .unwrap_err();
        assert!(
            matches!(
                err,
                AppendError::NotContiguous {
                    expected: 30,
                    found: 31
                }
            ),
            "{err}"
        );
        // A corrupt batch is refused like a produce.
        let last = next.len() - 1;
        next[last] ^= 1;
        let err = follower.append_replicated(&Bytes::from(next)).unwrap_err();
        assert_eq!(err.kafka_error_code(), error_code::CORRUPT_MESSAGE);
        assert_eq!(
            (follower.size_bytes(), follower.log_end_offset()),
            (size, 29)
        );
    }
}
