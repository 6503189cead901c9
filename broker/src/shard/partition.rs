//! One partition as a shard serves it: its log, its replica role (leader tracking its
//! followers and the high watermark, or follower of another broker), and what waits on it
//! (long-polling fetches, acks=all producers waiting for fdatasync and the ISR).

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use bytes::Bytes;
use event_listener::{Event, EventListener};
use uuid::Uuid;

use corelog_replication::isr::{LeaderAndIsr, ReplicaTracker};

use super::messages::{AppendResult, EpochResult, FetchQuery, FetchResult, OffsetResult};
use crate::errors::ErrorCode;
use crate::log::checkpoint::{PartitionKey, PartitionOffsets, ShardCheckpoint};
use crate::log::{
    AppendInfo, FlushError, FlushJob, LogConfig, PartitionLog, RecordBatchHeader, RecoveryStart,
};
use crate::metadata::{base64_url, replace_file, TopicMeta};
use crate::metrics::{PartitionCounters, PartitionSnapshot, ShardMetrics};

fn error_code(code: i16) -> ErrorCode {
    ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError)
}

/// Kafka's file in each partition dir naming the topic id, so a directory left behind by a
/// deleted topic is never served as part of a new topic with the same name.
const PARTITION_METADATA: &str = "partition.metadata";

pub struct Partition {
    pub topic_id: Uuid,
    index: i32,
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
    /// The shard's recovery points and high watermarks, this partition's among them.
    checkpoint: Rc<RefCell<ShardCheckpoint>>,
    role: RefCell<Role>,
    /// Offsets below it are on every in-sync replica: consumers read up to here.
    high_watermark: Cell<i64>,
    /// Fired when the high watermark moves or the role changes.
    high_watermark_moved: Event,
}

/// Ends a sync's `flushing` mark and wakes its waiters however the sync ends: also when
/// the waiter running it is dropped mid-sync (a produce timeout), which would otherwise
/// leave every later waiter waiting for a sync that never finishes.
struct FlushingGuard<'a>(&'a Partition);

impl Drop for FlushingGuard<'_> {
    fn drop(&mut self) {
        self.0.flushing.set(false);
        self.0.flushed.notify(usize::MAX);
    }
}

/// What this broker is for the partition, as the last metadata image said.
enum Role {
    /// Not yet told (just opened).
    Unassigned,
    Leader {
        state: LeaderAndIsr,
        tracker: ReplicaTracker,
    },
    /// Following the leader of this epoch.
    Follower { leader_epoch: i32 },
}

/// A partition whose log is open but which no shard serves yet: what
/// [`Partition::open`] does on the blocking pool, handed to [`Partition::serve`].
pub struct OpenedPartition {
    topic_id: Uuid,
    index: i32,
    dir: PathBuf,
    log: PartitionLog,
    min_insync_replicas: i32,
    high_watermark: i64,
}

impl OpenedPartition {
    pub fn recovery_stats(&self) -> crate::log::RecoveryStats {
        self.log.recovery_stats()
    }
}

impl Partition {
    /// Opens (creating or recovering) the partition's log: file work only, so it runs on
    /// the blocking pool and a big topic creation or restart never stalls the shard.
    /// `checkpointed` is what the shard's checkpoint held for it at startup;
    /// `leader_epoch` is the epoch this broker leads it in, if it does, recorded here so
    /// that taking the lead writes no file on the shard.
    pub fn open(
        data_dir: &Path,
        topic: &TopicMeta,
        index: i32,
        clean_shutdown: bool,
        checkpointed: Option<PartitionOffsets>,
        leader_epoch: Option<i32>,
    ) -> anyhow::Result<OpenedPartition> {
        let dir = data_dir.join(format!("{}-{index}", topic.record.name));
        let id_line = format!(
            "version: 0\ntopic_id: {}\n",
            base64_url(topic.record.id.as_bytes())
        );
        let recorded = match std::fs::read_to_string(dir.join(PARTITION_METADATA)) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e.into()),
        };
        let current = recorded.as_deref() == Some(id_line.as_str());
        // Written without fsync, so a crash may leave it empty or cut: only a whole record
        // of another topic id means an older topic's data.
        if !current && recorded.as_deref().is_some_and(is_partition_metadata) {
            tracing::warn!(dir = %dir.display(), "removing partition data of an older topic with the same name");
            std::fs::remove_dir_all(&dir)?;
        }
        let start = if clean_shutdown {
            RecoveryStart::CleanShutdown
        } else {
            RecoveryStart::RecoveryPoint(checkpointed.map_or(0, |offsets| offsets.recovery_point))
        };
        let mut log = PartitionLog::open(&dir, topic.log_config.clone(), start)?;
        if let Some(epoch) = leader_epoch {
            log.start_leader_epoch(epoch)?;
        }
        // Without a checkpoint it starts at 0: consumers wait for the followers' fetches.
        // Recovery may have cut the tail the checkpoint covered.
        let high_watermark = checkpointed
            .map_or(0, |offsets| offsets.high_watermark)
            .clamp(log.log_start_offset(), log.log_end_offset());
        if !current {
            replace_file(&dir.join(PARTITION_METADATA), id_line.as_bytes())?;
        }
        Ok(OpenedPartition {
            topic_id: topic.record.id,
            index,
            dir,
            log,
            min_insync_replicas: topic.min_insync_replicas,
            high_watermark,
        })
    }

    /// The shard's side of an opened partition, in no role until the image assigns one.
    pub fn serve(
        opened: OpenedPartition,
        checkpoint: Rc<RefCell<ShardCheckpoint>>,
        metrics: Rc<ShardMetrics>,
    ) -> Partition {
        Partition {
            topic_id: opened.topic_id,
            index: opened.index,
            dir: opened.dir,
            log: RefCell::new(opened.log),
            min_insync_replicas: Cell::new(opened.min_insync_replicas),
            appended: Event::new(),
            flushed: Event::new(),
            flushing: Cell::new(false),
            offline: Cell::new(false),
            counters: PartitionCounters::default(),
            metrics,
            checkpoint,
            role: RefCell::new(Role::Unassigned),
            high_watermark: Cell::new(opened.high_watermark),
            high_watermark_moved: Event::new(),
        }
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
        let (leader_epoch, isr_size) = match &*self.role.borrow() {
            Role::Leader { state, .. } => (state.leader_epoch, state.isr.len() as i32),
            _ => {
                return AppendResult::error(
                    ErrorCode::NotLeaderOrFollower,
                    Some("this broker does not lead the partition".into()),
                )
            }
        };
        if acks == -1 && isr_size < self.min_insync_replicas.get() {
            return AppendResult::error(
                ErrorCode::NotEnoughReplicas,
                Some(format!(
                    "min.insync.replicas is {} but the ISR has {isr_size}",
                    self.min_insync_replicas.get()
                )),
            );
        }
        let mut log = self.log.borrow_mut();
        match log.append(records, leader_epoch, now_ms) {
            Ok(info) => {
                let log_end_offset = log.log_end_offset();
                drop(log);
                self.on_leader_append(log_end_offset);
                self.on_appended(records, &info);
                let log = self.log.borrow();
                AppendResult {
                    error_code: 0,
                    error_message: None,
                    base_offset: info.base_offset,
                    last_offset: info.last_offset,
                    log_start_offset: log.log_start_offset(),
                    leader_epoch,
                }
            }
            Err(e) => AppendResult::error(error_code(e.kafka_error_code()), Some(e.to_string())),
        }
    }

    /// What a long-polling fetch waits for: appends for followers (they read to the log
    /// end), the high watermark for consumers.
    pub fn listen_readable(&self, follower: bool) -> EventListener {
        if follower {
            self.appended.listen()
        } else {
            self.high_watermark_moved.listen()
        }
    }

    pub fn is_leader(&self) -> bool {
        matches!(*self.role.borrow(), Role::Leader { .. })
    }

    /// Leadership and epoch checks of a fetch or an epoch query: only the leader answers
    /// (and, when `followers_serve`, a follower: KIP-392 consumer reads), and a stale or
    /// future epoch from the asker is refused (KIP-320).
    fn check_leader_epoch(
        &self,
        current_leader_epoch: i32,
        followers_serve: bool,
    ) -> Result<(), ErrorCode> {
        let epoch = match &*self.role.borrow() {
            Role::Leader { state, .. } => state.leader_epoch,
            Role::Follower { leader_epoch } if followers_serve => *leader_epoch,
            _ => return Err(ErrorCode::NotLeaderOrFollower),
        };
        match current_leader_epoch {
            e if e < 0 || e == epoch => Ok(()),
            e if e < epoch => Err(ErrorCode::FencedLeaderEpoch),
            _ => Err(ErrorCode::UnknownLeaderEpoch),
        }
    }

    /// A consumer's read: batches wholly below the high watermark (a follower's, when a
    /// follower serves it). A leader asked to send the consumer to an in-sync replica in
    /// its rack answers with that replica and no records.
    pub fn read_for_consumer(&self, query: &FetchQuery, max_bytes: usize) -> FetchResult {
        if let Err(code) = self.check_leader_epoch(query.current_leader_epoch, query.any_replica) {
            return FetchResult::error(code);
        }
        let redirect = match &*self.role.borrow() {
            Role::Leader { tracker, .. } => tracker.most_caught_up(&query.replicas_in_rack),
            _ => None,
        };
        if let Some(replica) = redirect {
            return FetchResult {
                preferred_read_replica: replica,
                ..self.empty_read()
            };
        }
        self.read(query.offset, max_bytes, self.high_watermark.get())
    }

    /// A follower's read: up to the log end, unless its log diverges from ours (then
    /// where to truncate to). Its fetch offset is its log end: the high watermark may move.
    pub fn read_for_follower(
        &self,
        replica_id: i32,
        query: &FetchQuery,
        max_bytes: usize,
        now_ms: i64,
    ) -> FetchResult {
        if let Err(code) = self.check_leader_epoch(query.current_leader_epoch, false) {
            return FetchResult::error(code);
        }
        if query.last_fetched_epoch >= 0 {
            let diverging = {
                let log = self.log.borrow();
                match log.end_offset_for_epoch(query.last_fetched_epoch) {
                    Some((epoch, end))
                        if epoch == query.last_fetched_epoch && end >= query.offset =>
                    {
                        None
                    }
                    Some(found) => Some(found),
                    None => Some((-1, -1)),
                }
            };
            if let Some((epoch, end_offset)) = diverging.filter(|(epoch, _)| *epoch >= 0) {
                let log = self.log.borrow();
                return FetchResult {
                    error_code: 0,
                    high_watermark: self.high_watermark.get(),
                    log_start_offset: log.log_start_offset(),
                    records: None,
                    diverging_epoch: Some((epoch, end_offset)),
                    preferred_read_replica: -1,
                };
            }
        }
        let log_end_offset = self.log.borrow().log_end_offset();
        let advanced = match &mut *self.role.borrow_mut() {
            Role::Leader { tracker, .. } => tracker.on_follower_fetch(
                replica_id,
                query.offset,
                log_end_offset,
                now_ms.max(0) as u64,
            ),
            _ => None,
        };
        if let Some(high_watermark) = advanced {
            self.set_high_watermark(high_watermark);
        }
        self.read(query.offset, max_bytes, i64::MAX)
    }

    /// The batches from `offset` below `upper`, as a file range the connection's shard sends.
    fn read(&self, offset: i64, max_bytes: usize, upper: i64) -> FetchResult {
        let log = self.log.borrow();
        let high_watermark = self.high_watermark.get();
        let log_start_offset = log.log_start_offset();
        match log.read_bounded(offset, max_bytes, upper) {
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
                    diverging_epoch: None,
                    preferred_read_replica: -1,
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
            diverging_epoch: None,
            preferred_read_replica: -1,
        }
    }

    pub fn list_offset(&self, timestamp: i64) -> OffsetResult {
        let log = self.log.borrow();
        let found = match timestamp {
            // Latest, and KIP-1005's latest-tiered (nothing is tiered): what consumers
            // can read, the high watermark.
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

    /// Waits until `last_offset`, appended while leading in `leader_epoch`, may be
    /// acknowledged to an acks=all producer: fdatasynced here and held by every in-sync
    /// replica (the high watermark is past it). Fails once this broker no longer leads in
    /// that epoch: a later leader may have replaced the batch, even if this broker leads
    /// again by then. The caller bounds the wait.
    pub async fn wait_acknowledged(
        &self,
        last_offset: i64,
        leader_epoch: i32,
    ) -> Result<(), ErrorCode> {
        match self.wait_durable(last_offset).await {
            Ok(true) => {}
            // A leader turned follower cut the offset away.
            Ok(false) => return Err(ErrorCode::NotLeaderOrFollower),
            Err(e) => {
                tracing::error!(dir = %self.dir.display(), "fdatasync failed: {e}");
                return Err(ErrorCode::KafkaStorageError);
            }
        }
        loop {
            let listener = self.high_watermark_moved.listen();
            if self.leader_epoch() != Some(leader_epoch) {
                return Err(ErrorCode::NotLeaderOrFollower);
            }
            if self.high_watermark.get() > last_offset {
                return Ok(());
            }
            listener.await;
        }
    }

    /// The epoch this broker leads the partition in, if it leads it.
    fn leader_epoch(&self) -> Option<i32> {
        match &*self.role.borrow() {
            Role::Leader { state, .. } => Some(state.leader_epoch),
            _ => None,
        }
    }

    fn set_high_watermark(&self, high_watermark: i64) {
        if high_watermark != self.high_watermark.get() {
            self.high_watermark.set(high_watermark);
            self.high_watermark_moved.notify(usize::MAX);
        }
    }

    fn on_leader_append(&self, log_end_offset: i64) {
        let advanced = match &mut *self.role.borrow_mut() {
            Role::Leader { tracker, .. } => tracker.on_leader_append(log_end_offset),
            _ => None,
        };
        if let Some(high_watermark) = advanced {
            self.set_high_watermark(high_watermark);
        }
    }

    /// Takes the leader role the controller gave this broker; true when it newly leads
    /// (a new epoch). A new epoch starts in the epoch cache at the log end, and followers'
    /// positions are learned afresh from their fetches.
    pub fn become_leader(&self, local_id: i32, state: &LeaderAndIsr, now_ms: u64) -> bool {
        let mut role = self.role.borrow_mut();
        if let Role::Leader {
            state: current,
            tracker,
        } = &mut *role
        {
            if current.leader_epoch == state.leader_epoch {
                tracker.apply(state);
                *current = state.clone();
                drop(role);
                self.refresh_high_watermark();
                return false;
            }
        }
        let log_end_offset = {
            let mut log = self.log.borrow_mut();
            if let Err(e) = log.start_leader_epoch(state.leader_epoch) {
                tracing::error!(dir = %self.dir.display(), "cannot record the leader epoch: {e}");
            }
            log.log_end_offset()
        };
        let high_watermark = self.high_watermark.get().min(log_end_offset);
        *role = Role::Leader {
            state: state.clone(),
            tracker: ReplicaTracker::new(local_id, state, log_end_offset, high_watermark, now_ms),
        };
        drop(role);
        tracing::info!(dir = %self.dir.display(), epoch = state.leader_epoch, isr = ?state.isr, "leading");
        self.refresh_high_watermark();
        self.high_watermark_moved.notify(usize::MAX);
        true
    }

    fn refresh_high_watermark(&self) {
        let high_watermark = match &*self.role.borrow() {
            Role::Leader { tracker, .. } => tracker.high_watermark(),
            _ => return,
        };
        self.set_high_watermark(high_watermark);
    }

    /// Follows the leader the controller named; true when this broker led it before.
    /// Waiting acks=all producers are woken to fail: their batches may be truncated.
    pub fn become_follower(&self, state: &LeaderAndIsr) -> bool {
        let was_leader = self.is_leader();
        *self.role.borrow_mut() = Role::Follower {
            leader_epoch: state.leader_epoch,
        };
        if was_leader {
            tracing::info!(dir = %self.dir.display(), leader = state.leader, epoch = state.leader_epoch, "following");
        }
        self.high_watermark_moved.notify(usize::MAX);
        was_leader
    }

    /// Lands batches fetched from the leader, byte for byte, and takes its high watermark
    /// (bounded by what this replica holds).
    pub fn append_as_follower(
        &self,
        records: &Bytes,
        leader_high_watermark: i64,
        leader_log_start_offset: i64,
    ) -> Result<(), String> {
        if !matches!(*self.role.borrow(), Role::Follower { .. }) {
            return Err("not a follower".into());
        }
        let info = self
            .log
            .borrow_mut()
            .append_replicated(records)
            .map_err(|e| e.to_string())?;
        self.on_appended(records, &info);
        self.update_follower_high_watermark(leader_high_watermark, leader_log_start_offset);
        Ok(())
    }

    /// Counts an append, by the leader or a follower, and wakes the fetches waiting for it.
    fn on_appended(&self, records: &Bytes, info: &AppendInfo) {
        self.metrics
            .count(&self.counters.bytes_in, records.len() as u64);
        self.metrics.count(
            &self.counters.records_in,
            (info.last_offset - info.base_offset + 1) as u64,
        );
        self.appended.notify(usize::MAX);
    }

    pub fn update_follower_high_watermark(
        &self,
        leader_high_watermark: i64,
        _leader_log_start_offset: i64,
    ) {
        let log_end_offset = self.log.borrow().log_end_offset();
        self.set_high_watermark(leader_high_watermark.min(log_end_offset).max(0));
    }

    /// Drops this follower's batches past where its log parts from the leader's (see
    /// [`crate::log::PartitionLog::truncate_to_divergence`]); returns the new log end.
    pub fn truncate_to_divergence(&self, epoch: i32, leader_end: i64) -> std::io::Result<i64> {
        self.lower_checkpoint_before_truncation()?;
        let end = self
            .log
            .borrow_mut()
            .truncate_to_divergence(epoch, leader_end)?;
        if self.high_watermark.get() > end {
            self.set_high_watermark(end);
        }
        Ok(end)
    }

    /// Starts this follower's log over at the leader's log start.
    pub fn truncate_fully_and_start_at(&self, offset: i64) -> std::io::Result<()> {
        self.lower_checkpoint_before_truncation()?;
        self.log.borrow_mut().truncate_fully_and_start_at(offset)?;
        self.set_high_watermark(offset);
        Ok(())
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.log.borrow().latest_epoch()
    }

    pub fn log_end_offset(&self) -> i64 {
        self.log.borrow().log_end_offset()
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log.borrow().log_start_offset()
    }

    /// OffsetForLeaderEpoch on the leader.
    pub fn epoch_end_offset(&self, current_leader_epoch: i32, leader_epoch: i32) -> EpochResult {
        if let Err(code) = self.check_leader_epoch(current_leader_epoch, false) {
            return EpochResult::error(code);
        }
        let (leader_epoch, end_offset) = self
            .log
            .borrow()
            .end_offset_for_epoch(leader_epoch)
            .unwrap_or((-1, -1));
        EpochResult {
            error_code: 0,
            leader_epoch,
            end_offset,
        }
    }

    /// The ISR change this leader wants, if none is pending: followers lagging for
    /// `lag_max_ms` out, caught-up replicas in. Marks it pending until the controller
    /// answers ([`Self::isr_change_failed`]) or a new image shows it.
    pub fn isr_change_wanted(
        &self,
        now_ms: u64,
        lag_max_ms: u64,
    ) -> Option<(LeaderAndIsr, Vec<i32>)> {
        let mut role = self.role.borrow_mut();
        let Role::Leader { state, tracker } = &mut *role else {
            return None;
        };
        if tracker.pending_isr().is_some() {
            return None;
        }
        let epoch_start = self
            .log
            .borrow()
            .epoch_start_offset(state.leader_epoch)
            .unwrap_or(0);
        let out = tracker.out_of_sync(now_ms, lag_max_ms);
        let join = tracker.caught_up_to_join(epoch_start);
        if out.is_empty() && join.is_empty() {
            return None;
        }
        let mut isr: Vec<i32> = state
            .isr
            .iter()
            .copied()
            .filter(|id| !out.contains(id))
            .collect();
        isr.extend(join);
        tracker.propose_isr(isr.clone());
        Some((state.clone(), isr))
    }

    pub fn isr_change_failed(&self) {
        if let Role::Leader { tracker, .. } = &mut *self.role.borrow_mut() {
            tracker.abandon_pending_isr();
        }
    }

    /// Waits until everything up to `last_offset` is fdatasynced. Concurrent waiters share
    /// one sync: whoever finds no sync running starts one covering everything written so
    /// far, the others wait for it and check again. False when the offset is no longer in
    /// the log (a leader turned follower truncated it): no sync would ever cover it.
    async fn wait_durable(&self, last_offset: i64) -> std::io::Result<bool> {
        loop {
            {
                let log = self.log.borrow();
                if log.flushed_offset() > last_offset {
                    return Ok(true);
                }
                if log.log_end_offset() <= last_offset {
                    return Ok(false);
                }
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
        let _flushing = FlushingGuard(self);
        let started = std::time::Instant::now();
        let (job, outcome) = corelog_io::spawn_blocking(move || {
            let outcome = job.run();
            (job, outcome)
        })
        .await;
        self.metrics.fsync_latency.record(started.elapsed());
        match &outcome {
            Ok(()) => self.log.borrow_mut().complete_flush(&job),
            Err(FlushError::Sync(e)) => {
                tracing::error!(dir = %self.dir.display(), "fdatasync failed, taking the partition offline: {e}");
                self.offline.set(true);
            }
            // Nothing was synced and nothing lost: the next flush retries.
            Err(FlushError::Open(_)) => {}
        }
        outcome.map_err(Into::into)
    }

    /// The periodic flush: fdatasync what acks=0/1 appends left in the page cache (on the
    /// blocking pool, and only when something changed: an idle partition costs nothing),
    /// then note the new recovery point for the shard's checkpoint.
    pub async fn flush_and_checkpoint(&self) -> std::io::Result<()> {
        if self.flushing.get() {
            return Ok(());
        }
        self.sync_once().await?;
        self.note_checkpoint();
        Ok(())
    }

    fn checkpoint_key(&self) -> PartitionKey {
        (self.topic_id, self.index)
    }

    /// Puts the current recovery point and high watermark in the shard's checkpoint.
    fn note_checkpoint(&self) {
        let offsets = PartitionOffsets {
            recovery_point: self.log.borrow().recovery_point(),
            high_watermark: self.high_watermark.get(),
        };
        self.checkpoint
            .borrow_mut()
            .set(self.checkpoint_key(), offsets);
    }

    /// Before a truncation: the checkpoint on disk must not let the next open trust
    /// what is being cut, so it is lowered to the log start (a full recovery of this
    /// partition should a crash come before the next flush round) and written now.
    fn lower_checkpoint_before_truncation(&self) -> std::io::Result<()> {
        let offsets = PartitionOffsets {
            recovery_point: self.log.borrow().log_start_offset(),
            high_watermark: self.high_watermark.get(),
        };
        let mut checkpoint = self.checkpoint.borrow_mut();
        checkpoint.set(self.checkpoint_key(), offsets);
        checkpoint.write_now()
    }

    /// See [`PartitionLog::seal_for_close`]. An offline partition (a failed fdatasync)
    /// cannot be closed cleanly: its log may have lost pages.
    pub fn seal_for_close(&self) -> std::io::Result<Option<FlushJob>> {
        if self.offline.get() {
            return Err(std::io::Error::other(format!(
                "{} is offline after a failed fdatasync",
                self.dir.display()
            )));
        }
        self.log.borrow_mut().seal_for_close()
    }

    /// Once the files of a sealed log are on disk: records it, with its high watermark,
    /// for the shard's checkpoint.
    pub fn closed_durably(&self, job: Option<FlushJob>) {
        if let Some(job) = job {
            self.log.borrow_mut().complete_flush(&job);
        }
        self.note_checkpoint();
    }

    pub fn enforce_retention(&self, now_ms: i64) {
        let deleted = self.log.borrow_mut().enforce_retention(now_ms);
        if deleted > 0 {
            tracing::info!(dir = %self.dir.display(), deleted, "retention deleted segments");
        }
    }

    /// Removes the partition's data for good (its topic was deleted). The directory is
    /// renamed out of the way at once (a topic created again under the name starts
    /// empty) and removed on the blocking pool: removing thousands of files can take
    /// seconds. Readers still holding a segment keep reading the unlinked file.
    pub fn delete(&self) {
        self.checkpoint.borrow_mut().remove(self.checkpoint_key());
        let doomed = deleted_dir_name(&self.dir, self.topic_id);
        if let Err(e) = std::fs::rename(&self.dir, &doomed) {
            tracing::error!(dir = %self.dir.display(), "cannot delete partition data: {e}");
            return;
        }
        corelog_io::spawn_local(async move {
            let removal = doomed.clone();
            if let Err(e) =
                corelog_io::spawn_blocking(move || std::fs::remove_dir_all(removal)).await
            {
                tracing::error!(dir = %doomed.display(), "cannot delete partition data: {e}");
            }
        })
        .detach();
    }
}

impl FetchResult {
    fn with_offsets(mut self, high_watermark: i64, log_start_offset: i64) -> Self {
        self.high_watermark = high_watermark;
        self.log_start_offset = log_start_offset;
        self
    }
}

/// Where a deleted partition's directory waits for its removal: Kafka's
/// `<topic>-<partition>.<id>-delete`. No partition directory ends in `-delete` (they end
/// in the partition number), so a restart finds and removes what a crash left behind
/// ([`remove_deleted_dirs`]).
fn deleted_dir_name(dir: &Path, topic_id: Uuid) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(format!(".{}{DELETED_SUFFIX}", topic_id.simple()));
    PathBuf::from(name)
}

const DELETED_SUFFIX: &str = "-delete";

/// Removes the directories of deleted partitions that a stop or crash left in `data_dir`.
pub fn remove_deleted_dirs(data_dir: &Path) -> std::io::Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(data_dir)? {
        let entry = entry?;
        let is_deleted = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(DELETED_SUFFIX));
        if is_deleted && entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// A whole `partition.metadata` record: a version line and a topic id line.
fn is_partition_metadata(text: &str) -> bool {
    let mut lines = text.lines();
    lines.next() == Some("version: 0")
        && lines
            .next()
            .and_then(|line| line.strip_prefix("topic_id: "))
            .is_some_and(|id| id.len() == 22)
        && text.ends_with('\n')
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
