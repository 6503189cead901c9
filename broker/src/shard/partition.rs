//! One partition as a shard serves it: its log plus what waits on it (long-polling
//! fetches, acks=all producers waiting for fdatasync).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use event_listener::{Event, EventListener};
use uuid::Uuid;

use super::messages::{AppendResult, FetchResult, OffsetResult};
use crate::errors::ErrorCode;
use crate::log::{LogConfig, PartitionLog, RecordBatchHeader};
use crate::metadata::{base64_url, write_atomically, TopicMeta};
use crate::metrics::{PartitionCounters, PartitionSnapshot, ShardMetrics};

fn error_code(code: i16) -> ErrorCode {
    ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError)
}

/// Kafka's file in each partition dir naming the topic id, so a directory left behind by a
/// deleted topic is never served as part of a new topic with the same name.
const PARTITION_METADATA: &str = "partition.metadata";

pub struct Partition {
    pub topic_id: Uuid,
    dir: PathBuf,
    log: RefCell<PartitionLog>,
    min_insync_replicas: Cell<i32>,
    appended: Event,
    flushed: Event,
    flushing: Cell<bool>,
    /// Set when an fdatasync failed: Linux may have dropped the dirty pages, so a retry
    /// could "succeed" without the data on disk. The partition refuses writes from then on.
    offline: Cell<bool>,
    counters: PartitionCounters,
    metrics: Rc<ShardMetrics>,
    /// The recovery point last written, to skip rewriting an unchanged one.
    checkpointed: Cell<i64>,
}

impl Partition {
    pub fn open(
        data_dir: &Path,
        topic: &TopicMeta,
        index: i32,
        clean_shutdown: bool,
        metrics: Rc<ShardMetrics>,
    ) -> anyhow::Result<Partition> {
        let dir = data_dir.join(format!("{}-{index}", topic.record.name));
        let id_line = format!(
            "version: 0\ntopic_id: {}\n",
            base64_url(topic.record.id.as_bytes())
        );
        match std::fs::read_to_string(dir.join(PARTITION_METADATA)) {
            Ok(existing) if existing == id_line => {}
            Ok(_) => {
                tracing::warn!(dir = %dir.display(), "removing partition data of an older topic with the same name");
                std::fs::remove_dir_all(&dir)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        let log = PartitionLog::open(&dir, topic.log_config.clone(), clean_shutdown)?;
        if !dir.join(PARTITION_METADATA).exists() {
            write_atomically(&dir.join(PARTITION_METADATA), id_line.as_bytes())?;
        }
        Ok(Partition {
            topic_id: topic.record.id,
            dir,
            log: RefCell::new(log),
            min_insync_replicas: Cell::new(topic.min_insync_replicas),
            appended: Event::new(),
            flushed: Event::new(),
            flushing: Cell::new(false),
            offline: Cell::new(false),
            counters: PartitionCounters::default(),
            metrics,
            checkpointed: Cell::new(-1),
        })
    }

    pub fn update_config(&self, config: &LogConfig, min_insync_replicas: i32) {
        self.log.borrow_mut().set_config(config.clone());
        self.min_insync_replicas.set(min_insync_replicas);
    }

    /// Validates and appends a produce payload (nothing is written if any batch is bad)
    /// and wakes long-polling fetches.
    pub fn append(&self, records: &Bytes, acks: i16, now_ms: i64) -> AppendResult {
        if self.offline.get() {
            return AppendResult::error(
                ErrorCode::KafkaStorageError,
                Some("partition is offline after a failed fdatasync".into()),
            );
        }
        // A single node is the whole ISR: acks=all cannot be honoured above 1.
        if acks == -1 && self.min_insync_replicas.get() > 1 {
            return AppendResult::error(
                ErrorCode::NotEnoughReplicas,
                Some(format!(
                    "min.insync.replicas is {} but only 1 replica exists",
                    self.min_insync_replicas.get()
                )),
            );
        }
        let mut log = self.log.borrow_mut();
        match log.append(records, 0, now_ms) {
            Ok(info) => {
                drop(log);
                self.metrics
                    .count(&self.counters.bytes_in, records.len() as u64);
                self.metrics.count(
                    &self.counters.records_in,
                    (info.last_offset - info.base_offset + 1) as u64,
                );
                self.appended.notify(usize::MAX);
                let log = self.log.borrow();
                AppendResult {
                    error_code: 0,
                    error_message: None,
                    base_offset: info.base_offset,
                    last_offset: info.last_offset,
                    log_start_offset: log.log_start_offset(),
                }
            }
            Err(e) => AppendResult::error(error_code(e.kafka_error_code()), Some(e.to_string())),
        }
    }

    pub fn listen_appends(&self) -> EventListener {
        self.appended.listen()
    }

    /// The batches from `offset`, as a file range the connection's shard sends.
    pub fn read(&self, offset: i64, max_bytes: usize) -> FetchResult {
        let log = self.log.borrow();
        let high_watermark = log.log_end_offset();
        let log_start_offset = log.log_start_offset();
        match log.read(offset, max_bytes) {
            Ok(slice) => {
                if let Some((first, last)) = slice.offsets {
                    self.metrics
                        .count(&self.counters.bytes_out, slice.len as u64);
                    self.metrics
                        .count(&self.counters.records_out, (last - first + 1) as u64);
                }
                FetchResult {
                    error_code: 0,
                    high_watermark,
                    log_start_offset,
                    records: Some(slice).filter(|s| s.len > 0),
                }
            }
            Err(e) => FetchResult::error(error_code(e.kafka_error_code()))
                .with_offsets(high_watermark, log_start_offset),
        }
    }

    pub fn metrics_snapshot(&self, topic: &str, partition: i32) -> PartitionSnapshot {
        let log = self.log.borrow();
        PartitionSnapshot {
            topic: topic.to_string(),
            partition,
            log_size_bytes: log.size_bytes(),
            log_start_offset: log.log_start_offset(),
            high_watermark: log.log_end_offset(),
            bytes_in: self.counters.bytes_in.get(),
            records_in: self.counters.records_in.get(),
            bytes_out: self.counters.bytes_out.get(),
            records_out: self.counters.records_out.get(),
        }
    }

    /// Every batch from the log start to the end, for rebuilding state kept in a log
    /// (committed offsets). Only for internal topics of bounded size.
    pub fn read_all(&self) -> std::io::Result<Bytes> {
        let log = self.log.borrow();
        let mut all = bytes::BytesMut::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let slice = log
                .read(offset, 16 << 20)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let bytes = slice.read_to_bytes()?;
            let Some(last) = last_offset_of(&bytes) else {
                break;
            };
            all.extend_from_slice(&bytes);
            offset = last + 1;
        }
        Ok(all.freeze())
    }

    /// The answer for a partition left out of a fetch because the response is full.
    pub fn empty_read(&self) -> FetchResult {
        let log = self.log.borrow();
        FetchResult {
            error_code: 0,
            high_watermark: log.log_end_offset(),
            log_start_offset: log.log_start_offset(),
            records: None,
        }
    }

    pub fn list_offset(&self, timestamp: i64) -> OffsetResult {
        let log = self.log.borrow();
        let found = match timestamp {
            // Latest, and KIP-1005's latest-tiered (nothing is tiered): the log end.
            -1 | -5 => Ok(Some((-1, log.log_end_offset()))),
            // Earliest, and KIP-405's earliest-local: the log start.
            -2 | -4 => Ok(Some((-1, log.log_start_offset()))),
            -3 => log.max_timestamp_offset(),
            ts if ts >= 0 => log.offset_for_timestamp(ts),
            _ => return OffsetResult::error(ErrorCode::InvalidRequest),
        };
        match found {
            Ok(found) => {
                let (timestamp, offset) = found.unwrap_or((-1, -1));
                OffsetResult {
                    error_code: 0,
                    timestamp,
                    offset,
                }
            }
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "log read failed: {e}");
                OffsetResult::error(ErrorCode::KafkaStorageError)
            }
        }
    }

    /// Waits until everything up to `last_offset` is fdatasynced. Concurrent waiters share
    /// one sync: whoever finds no sync running starts one covering everything written so
    /// far, the others wait for it and check again.
    pub async fn wait_durable(&self, last_offset: i64) -> std::io::Result<()> {
        loop {
            if self.log.borrow().flushed_offset() > last_offset {
                return Ok(());
            }
            if self.flushing.get() {
                let listener = self.flushed.listen();
                if self.flushing.get() {
                    listener.await;
                }
                continue;
            }
            self.sync_once().await?;
        }
    }

    /// Runs one fdatasync of everything appended so far on the blocking pool.
    async fn sync_once(&self) -> std::io::Result<()> {
        if self.offline.get() {
            return Err(std::io::Error::other(
                "partition is offline after a failed fdatasync",
            ));
        }
        let Some(job) = self.log.borrow().flush_job() else {
            return Ok(());
        };
        self.flushing.set(true);
        let started = std::time::Instant::now();
        let (job, outcome) = corelog_io::spawn_blocking(move || {
            let outcome = job.run();
            (job, outcome)
        })
        .await;
        self.flushing.set(false);
        self.metrics.fsync_latency.record(started.elapsed());
        match &outcome {
            Ok(()) => self.log.borrow_mut().complete_flush(&job),
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "fdatasync failed, taking the partition offline: {e}");
                self.offline.set(true);
            }
        }
        self.flushed.notify(usize::MAX);
        outcome
    }

    /// The periodic flush: fdatasync what acks=0/1 appends left in the page cache, then
    /// record the new recovery point. Both run on the blocking pool, and only when
    /// something changed: an idle partition costs nothing.
    pub async fn flush_and_checkpoint(&self) -> std::io::Result<()> {
        if self.flushing.get() {
            return Ok(());
        }
        self.sync_once().await?;
        let Some(job) = self
            .log
            .borrow()
            .checkpoint_job_if_moved(self.checkpointed.get())
        else {
            return Ok(());
        };
        let point = job.recovery_point;
        corelog_io::spawn_blocking(move || job.write()).await?;
        self.checkpointed.set(point);
        Ok(())
    }

    pub fn recovery_stats(&self) -> crate::log::RecoveryStats {
        self.log.borrow().recovery_stats()
    }

    /// See [`PartitionLog::close_cleanly`].
    pub fn close_cleanly(&self) -> std::io::Result<()> {
        self.log.borrow_mut().close_cleanly()
    }

    pub fn enforce_retention(&self, now_ms: i64) {
        let deleted = self.log.borrow_mut().enforce_retention(now_ms);
        if deleted > 0 {
            tracing::info!(dir = %self.dir.display(), deleted, "retention deleted segments");
        }
    }

    /// Removes the partition's data for good (its topic was deleted). Readers still holding
    /// a segment keep reading the unlinked file.
    pub fn delete(&self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::error!(dir = %self.dir.display(), "cannot delete partition data: {e}");
        }
    }
}

impl FetchResult {
    fn with_offsets(mut self, high_watermark: i64, log_start_offset: i64) -> Self {
        self.high_watermark = high_watermark;
        self.log_start_offset = log_start_offset;
        self
    }
}

/// The last offset of the last whole batch in `batches`.
fn last_offset_of(mut batches: &[u8]) -> Option<i64> {
    let mut last = None;
    while let Some(header) = RecordBatchHeader::parse(batches) {
        let size = header.total_size().filter(|&size| size <= batches.len())?;
        last = Some(header.last_offset());
        batches = &batches[size..];
    }
    last
}
