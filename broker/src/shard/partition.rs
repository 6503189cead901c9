//! One partition as a shard serves it: its log, its replication role, and what waits on
//! it (long-polling fetches, acks=all producers waiting for fdatasync and the high
//! watermark).
//!
//! As leader it stamps produced batches with its leader epoch, serves followers'
//! fetches (KIP-320 divergence checks included) and tracks their log end offsets to
//! move the high watermark (HW); consumers only see what is below the HW. As follower
//! it appends the leader's batches unchanged and truncates where its log diverged.
//! A single node is the leader of every partition with itself as the whole ISR, so its
//! HW moves with every append.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use corelog_replication::isr::{LeaderAndIsr, ReplicaTracker};
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

enum Role {
    Leader {
        state: LeaderAndIsr,
        tracker: ReplicaTracker,
        /// Where this leader's epoch starts: a replica joins the ISR only once it has
        /// everything up to here (Kafka's leaderEpochStartOffset).
        epoch_start_offset: i64,
    },
    Follower {
        leader: i32,
        leader_epoch: i32,
    },
}

impl Role {
    fn leader_epoch(&self) -> i32 {
        match self {
            Role::Leader { state, .. } => state.leader_epoch,
            Role::Follower { leader_epoch, .. } => *leader_epoch,
        }
    }
}

/// KIP-320: where the leader's log parted from a follower's, answered instead of records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DivergingEpoch {
    pub epoch: i32,
    pub end_offset: i64,
}

/// The answer to a follower's fetch.
pub struct FollowerRead {
    pub fetch: FetchResult,
    pub diverging_epoch: Option<DivergingEpoch>,
}

impl FollowerRead {
    fn error(code: ErrorCode) -> Self {
        FollowerRead {
            fetch: FetchResult::error(code),
            diverging_epoch: None,
        }
    }
}

pub struct Partition {
    pub topic_id: Uuid,
    dir: PathBuf,
    log: RefCell<PartitionLog>,
    min_insync_replicas: Cell<i32>,
    local_id: i32,
    role: RefCell<Role>,
    /// Offsets below this are on every ISR member: consumers read up to here.
    high_watermark: Cell<i64>,
    /// The log end moved: wakes followers' long-polling fetches.
    appended: Event,
    /// The HW moved, or the role changed: wakes consumers' long polls and acks=all waits.
    high_watermark_moved: Event,
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
    /// Opens the partition's log and takes the role `state` gives broker `local_id`.
    pub fn open(
        data_dir: &Path,
        topic: &TopicMeta,
        index: i32,
        clean_shutdown: bool,
        metrics: Rc<ShardMetrics>,
        local_id: i32,
        state: &LeaderAndIsr,
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
        let high_watermark = log.log_start_offset();
        let partition = Partition {
            topic_id: topic.record.id,
            dir,
            log: RefCell::new(log),
            min_insync_replicas: Cell::new(topic.min_insync_replicas),
            local_id,
            role: RefCell::new(Role::Follower {
                leader: -1,
                leader_epoch: -1,
            }),
            high_watermark: Cell::new(high_watermark),
            appended: Event::new(),
            high_watermark_moved: Event::new(),
            flushed: Event::new(),
            flushing: Cell::new(false),
            offline: Cell::new(false),
            counters: PartitionCounters::default(),
            metrics,
            checkpointed: Cell::new(-1),
        };
        let taken = if state.leader == local_id {
            partition.become_leader(state, unix_ms())
        } else {
            partition.become_follower(state)
        };
        taken.map_err(|code| anyhow::anyhow!("cannot take the partition's role: {code:?}"))?;
        Ok(partition)
    }

    /// Makes this broker the leader for `state.leader_epoch`: the epoch starts at the log
    /// end offset (recorded in the epoch cache now, as Kafka does at election) and
    /// stamps every produced batch from now on. The same epoch again only updates the
    /// ISR and replicas. An older epoch than the current one is refused.
    pub fn become_leader(&self, state: &LeaderAndIsr, now_ms: u64) -> Result<(), ErrorCode> {
        if state.leader != self.local_id {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let mut role = self.role.borrow_mut();
        if state.leader_epoch < role.leader_epoch() {
            return Err(ErrorCode::FencedLeaderEpoch);
        }
        if let Role::Leader {
            state: current,
            tracker,
            ..
        } = &mut *role
        {
            if current.leader_epoch == state.leader_epoch {
                tracker.apply(state);
                *current = state.clone();
                let high_watermark = tracker.high_watermark();
                drop(role);
                self.advance_high_watermark(Some(high_watermark));
                return Ok(());
            }
        }
        let mut log = self.log.borrow_mut();
        log.start_leader_epoch(state.leader_epoch).map_err(|e| {
            tracing::error!(dir = %self.dir.display(), "cannot record the leader epoch: {e}");
            ErrorCode::KafkaStorageError
        })?;
        let leo = log.log_end_offset();
        let epoch_start_offset = log.epoch_start_offset(state.leader_epoch).unwrap_or(leo);
        drop(log);
        let tracker = ReplicaTracker::new(
            self.local_id,
            state,
            leo,
            self.high_watermark.get(),
            now_ms,
        );
        let high_watermark = tracker.high_watermark();
        *role = Role::Leader {
            state: state.clone(),
            tracker,
            epoch_start_offset,
        };
        drop(role);
        self.advance_high_watermark(Some(high_watermark));
        Ok(())
    }

    /// Makes this broker a follower of `state.leader`. Produce and consumer reads are
    /// refused from now on, and acks=all producers still waiting fail.
    pub fn become_follower(&self, state: &LeaderAndIsr) -> Result<(), ErrorCode> {
        let mut role = self.role.borrow_mut();
        if state.leader_epoch < role.leader_epoch() {
            return Err(ErrorCode::FencedLeaderEpoch);
        }
        *role = Role::Follower {
            leader: state.leader,
            leader_epoch: state.leader_epoch,
        };
        drop(role);
        let leo = self.log_end_offset();
        self.high_watermark.set(self.high_watermark.get().min(leo));
        self.high_watermark_moved.notify(usize::MAX);
        self.appended.notify(usize::MAX);
        Ok(())
    }

    /// The leader this broker follows, if it is a follower.
    pub fn leader(&self) -> Option<i32> {
        match &*self.role.borrow() {
            Role::Follower { leader, .. } => Some(*leader),
            Role::Leader { .. } => None,
        }
    }

    /// The current leader epoch, if this broker leads the partition.
    fn epoch_as_leader(&self) -> Option<i32> {
        match &*self.role.borrow() {
            Role::Leader { state, .. } => Some(state.leader_epoch),
            Role::Follower { .. } => None,
        }
    }

    /// Records a new HW (if any) and wakes whoever waits on it.
    fn advance_high_watermark(&self, high_watermark: Option<i64>) {
        if let Some(hw) = high_watermark.filter(|&hw| hw > self.high_watermark.get()) {
            self.high_watermark.set(hw);
            self.high_watermark_moved.notify(usize::MAX);
        }
    }

    pub fn update_config(&self, config: &LogConfig, min_insync_replicas: i32) {
        self.log.borrow_mut().set_config(config.clone());
        self.min_insync_replicas.set(min_insync_replicas);
    }

    /// Validates and appends a produce payload (nothing is written if any batch is bad)
    /// stamped with the leader epoch, and wakes long-polling fetches. Only the leader
    /// takes produces; acks=all needs at least min.insync.replicas in the ISR.
    pub fn append(&self, records: &Bytes, acks: i16, now_ms: i64) -> AppendResult {
        if self.offline.get() {
            return AppendResult::error(
                ErrorCode::KafkaStorageError,
                Some("partition is offline after a failed fdatasync".into()),
            );
        }
        let mut role = self.role.borrow_mut();
        let Role::Leader { state, tracker, .. } = &mut *role else {
            return AppendResult::error(ErrorCode::NotLeaderOrFollower, None);
        };
        let isr_size = tracker.isr().len();
        if acks == -1 && (isr_size as i64) < i64::from(self.min_insync_replicas.get()) {
            return AppendResult::error(
                ErrorCode::NotEnoughReplicas,
                Some(format!(
                    "min.insync.replicas is {} but the ISR has {isr_size}",
                    self.min_insync_replicas.get()
                )),
            );
        }
        let mut log = self.log.borrow_mut();
        match log.append(records, state.leader_epoch, now_ms) {
            Ok(info) => {
                let advanced = tracker.on_leader_append(log.log_end_offset());
                drop((log, role));
                self.advance_high_watermark(advanced);
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

    /// Wakes on appends (and role changes): for followers' long-polling fetches.
    pub fn listen_appends(&self) -> EventListener {
        self.appended.listen()
    }

    /// Wakes when the HW moves (or the role changes): for consumers' long polls.
    pub fn listen_high_watermark(&self) -> EventListener {
        self.high_watermark_moved.listen()
    }

    /// A consumer's read: the batches from `offset` wholly below the HW, as a file range
    /// the connection's shard sends. Only the leader serves consumers.
    pub fn read(&self, offset: i64, max_bytes: usize) -> FetchResult {
        if self.epoch_as_leader().is_none() {
            return FetchResult::error(ErrorCode::NotLeaderOrFollower);
        }
        let log = self.log.borrow();
        let high_watermark = self.high_watermark.get();
        let log_start_offset = log.log_start_offset();
        match log.read_bounded(offset, max_bytes, high_watermark) {
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
            high_watermark: self.high_watermark.get(),
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
            high_watermark: self.high_watermark.get(),
            log_start_offset: log.log_start_offset(),
            records: None,
        }
    }

    pub fn list_offset(&self, timestamp: i64) -> OffsetResult {
        if self.epoch_as_leader().is_none() {
            return OffsetResult::error(ErrorCode::NotLeaderOrFollower);
        }
        let log = self.log.borrow();
        let found = match timestamp {
            // Latest, and KIP-1005's latest-tiered (nothing is tiered): what consumers
            // can read, the HW.
            -1 | -5 => Ok(Some((-1, self.high_watermark.get()))),
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

    /// acks=all: waits until the batch ending at `last_offset` is fdatasynced here and
    /// below the HW (on every ISR member). Fails with NOT_LEADER_OR_FOLLOWER if this
    /// broker stops leading the epoch that appended it meanwhile (the batch may be
    /// truncated); the caller bounds the wait with the request timeout.
    pub async fn wait_acknowledged(&self, last_offset: i64) -> Result<(), ErrorCode> {
        let epoch = self
            .epoch_as_leader()
            .ok_or(ErrorCode::NotLeaderOrFollower)?;
        if let Err(e) = self.wait_durable(last_offset).await {
            tracing::error!(dir = %self.dir.display(), "fdatasync failed: {e}");
            return Err(ErrorCode::KafkaStorageError);
        }
        loop {
            let listener = self.high_watermark_moved.listen();
            if self.epoch_as_leader() != Some(epoch) {
                return Err(ErrorCode::NotLeaderOrFollower);
            }
            if self.high_watermark.get() > last_offset {
                return Ok(());
            }
            listener.await;
        }
    }

    /// A follower's fetch (Fetch with a replica id). Checks the follower's view of the
    /// leader epoch; with `last_fetched_epoch` (KIP-320), answers the epoch where the
    /// follower's log diverged instead of records when it did. Otherwise returns the
    /// batches from `fetch_offset` up to the log end and records that the follower's log
    /// ends at `fetch_offset`, which may move the HW.
    pub fn read_for_follower(
        &self,
        replica_id: i32,
        fetch_offset: i64,
        last_fetched_epoch: Option<i32>,
        current_leader_epoch: Option<i32>,
        max_bytes: usize,
        now_ms: u64,
    ) -> FollowerRead {
        let mut role = self.role.borrow_mut();
        let Role::Leader { state, tracker, .. } = &mut *role else {
            return FollowerRead::error(ErrorCode::NotLeaderOrFollower);
        };
        match current_leader_epoch {
            Some(e) if e < state.leader_epoch => {
                return FollowerRead::error(ErrorCode::FencedLeaderEpoch)
            }
            Some(e) if e > state.leader_epoch => {
                return FollowerRead::error(ErrorCode::UnknownLeaderEpoch)
            }
            _ => {}
        }
        if replica_id == self.local_id || !state.replicas.contains(&replica_id) {
            return FollowerRead::error(ErrorCode::NotLeaderOrFollower);
        }
        let log = self.log.borrow();
        let (log_start_offset, log_end_offset) = (log.log_start_offset(), log.log_end_offset());
        // `error` 0 is success.
        let answer = |error: i16, records| FetchResult {
            error_code: error,
            high_watermark: self.high_watermark.get(),
            log_start_offset,
            records,
        };
        if let Some(fetched_epoch) = last_fetched_epoch {
            if fetch_offset < log_start_offset {
                return FollowerRead {
                    fetch: answer(ErrorCode::OffsetOutOfRange.code(), None),
                    diverging_epoch: None,
                };
            }
            match log.end_offset_for_epoch(fetched_epoch) {
                None => {
                    return FollowerRead {
                        fetch: answer(ErrorCode::OffsetOutOfRange.code(), None),
                        diverging_epoch: None,
                    }
                }
                Some((epoch, end_offset)) if epoch < fetched_epoch || end_offset < fetch_offset => {
                    return FollowerRead {
                        fetch: answer(0, None),
                        diverging_epoch: Some(DivergingEpoch { epoch, end_offset }),
                    }
                }
                Some(_) => {}
            }
        }
        let slice = match log.read(fetch_offset, max_bytes) {
            Ok(slice) => slice,
            Err(e) => {
                return FollowerRead {
                    fetch: answer(e.kafka_error_code(), None),
                    diverging_epoch: None,
                }
            }
        };
        // The log end before the read: appends after it must not keep the follower
        // from counting as caught up (as in Kafka).
        let advanced = tracker.on_follower_fetch(replica_id, fetch_offset, log_end_offset, now_ms);
        drop((log, role));
        self.advance_high_watermark(advanced);
        FollowerRead {
            fetch: answer(0, Some(slice).filter(|s| s.len > 0)),
            diverging_epoch: None,
        }
    }

    /// A follower appends batches fetched from the leader, unchanged. Its HW becomes the
    /// leader's, capped at its own log end, and segments wholly below the leader's log
    /// start offset (and the HW) are deleted.
    pub fn append_as_follower(
        &self,
        records: &Bytes,
        leader_high_watermark: i64,
        leader_log_start_offset: i64,
    ) -> AppendResult {
        if self.leader().is_none() {
            return AppendResult::error(ErrorCode::NotLeaderOrFollower, None);
        }
        if self.offline.get() {
            return AppendResult::error(
                ErrorCode::KafkaStorageError,
                Some("partition is offline after a failed fdatasync".into()),
            );
        }
        let mut log = self.log.borrow_mut();
        let (base_offset, last_offset) = if records.is_empty() {
            (-1, -1)
        } else {
            match log.append_replicated(records) {
                Ok(info) => (info.base_offset, info.last_offset),
                Err(e) => {
                    return AppendResult::error(
                        error_code(e.kafka_error_code()),
                        Some(e.to_string()),
                    )
                }
            }
        };
        let high_watermark = leader_high_watermark.clamp(log.log_start_offset(), log.log_end_offset());
        log.delete_segments_below(leader_log_start_offset.min(high_watermark));
        let log_start_offset = log.log_start_offset();
        drop(log);
        if high_watermark != self.high_watermark.get() {
            self.high_watermark.set(high_watermark);
            self.high_watermark_moved.notify(usize::MAX);
        }
        if last_offset >= 0 {
            self.appended.notify(usize::MAX);
        }
        AppendResult {
            error_code: 0,
            error_message: None,
            base_offset,
            last_offset,
            log_start_offset,
        }
    }

    /// A follower removes everything at or after `offset` (see
    /// [`PartitionLog::truncate_to`]); returns its new log end offset. Leaders never
    /// truncate: their log is the reference.
    pub fn truncate_to(&self, offset: i64) -> Result<i64, ErrorCode> {
        self.truncate_as_follower(|log| log.truncate_to(offset))
    }

    /// A follower whose log ends below the leader's log start offset starts over there.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> Result<i64, ErrorCode> {
        self.truncate_as_follower(|log| log.truncate_fully_and_start_at(offset).map(|()| offset))
    }

    fn truncate_as_follower(
        &self,
        truncate: impl FnOnce(&mut PartitionLog) -> std::io::Result<i64>,
    ) -> Result<i64, ErrorCode> {
        if self.leader().is_none() {
            return Err(ErrorCode::NotLeaderOrFollower);
        }
        let mut log = self.log.borrow_mut();
        let log_end_offset = truncate(&mut log).map_err(|e| {
            tracing::error!(dir = %self.dir.display(), "truncation failed, taking the partition offline: {e}");
            self.offline.set(true);
            ErrorCode::KafkaStorageError
        })?;
        let high_watermark = self
            .high_watermark
            .get()
            .clamp(log.log_start_offset(), log_end_offset);
        self.high_watermark.set(high_watermark);
        Ok(log_end_offset)
    }

    /// OffsetForLeaderEpoch: see [`PartitionLog::end_offset_for_epoch`].
    pub fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        self.log.borrow().end_offset_for_epoch(epoch)
    }

    /// The latest leader epoch in the log (a follower's `last_fetched_epoch`).
    pub fn latest_epoch(&self) -> Option<i32> {
        self.log.borrow().latest_epoch()
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.get()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.borrow().log_end_offset()
    }

    /// The ISR change to propose to the controller now, if any (the leader only, one
    /// proposal at a time): first drop followers not caught up for `lag_max_ms`, else
    /// add replicas that caught up. The proposal counts for the HW until committed.
    pub fn isr_changes_wanted(&self, now_ms: u64, lag_max_ms: u64) -> Option<Vec<i32>> {
        let mut role = self.role.borrow_mut();
        let Role::Leader {
            tracker,
            epoch_start_offset,
            ..
        } = &mut *role
        else {
            return None;
        };
        if tracker.pending_isr().is_some() {
            return None;
        }
        let out = tracker.out_of_sync(now_ms, lag_max_ms);
        let new_isr: Vec<i32> = if out.is_empty() {
            let joining = tracker.caught_up_to_join(*epoch_start_offset);
            if joining.is_empty() {
                return None;
            }
            tracker.isr().iter().copied().chain(joining).collect()
        } else {
            tracker
                .isr()
                .iter()
                .copied()
                .filter(|id| !out.contains(id))
                .collect()
        };
        tracker.propose_isr(new_isr.clone());
        Some(new_isr)
    }

    /// An ISR change the controller committed for the current leader epoch. States of
    /// another epoch or leader are for `become_leader` / `become_follower`.
    pub fn on_isr_committed(&self, committed: &LeaderAndIsr) {
        let mut role = self.role.borrow_mut();
        let Role::Leader { state, tracker, .. } = &mut *role else {
            return;
        };
        if committed.leader != self.local_id || committed.leader_epoch != state.leader_epoch {
            return;
        }
        tracker.apply(committed);
        *state = committed.clone();
        let high_watermark = tracker.high_watermark();
        drop(role);
        self.advance_high_watermark(Some(high_watermark));
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

/// Wall-clock milliseconds, for the ISR lag clock.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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
