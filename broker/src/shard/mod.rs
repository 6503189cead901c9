//! A shard: one core's share of the broker. It owns the partitions placed on it
//! ([`crate::metadata::shard_for`]), serves their appends and reads, and forwards work for
//! other shards' partitions over the mesh. Shard 0 also owns the topic registry.
//!
//! Nothing here is shared between threads except immutable `Arc`s (the metadata image,
//! config) and `Bytes` payloads; per-shard state lives in `RefCell`s never borrowed across
//! an `.await`.

mod messages;
mod partition;
mod topics;

use std::cell::{Cell, OnceCell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corelog_io::mesh::ShardMesh;

pub use messages::{
    AppendRequest, AppendResult, ConfigEdit, ConfigOp, FetchQuery, FetchResult, NewTopic,
    OffsetQuery, OffsetResult, ShardRequest, ShardResponse, TopicChange, TopicRef,
};
pub use partition::Partition;

use crate::config::BrokerConfig;
use crate::errors::ErrorCode;
use crate::fetch_session::FetchSessionCache;
use crate::group::offsets::{offsets_partition_for, OFFSETS_TOPIC};
use crate::group::GroupCoordinator;
use crate::metadata::{shard_for, MetadataImage, TopicRegistry};
use crate::metrics::{ShardMetrics, ShardSnapshot};

/// How long a stopping broker lets connections finish their in-flight requests (a long
/// poll holds one up to its max wait).
const STOP_GRACE: Duration = Duration::from_secs(5);

/// The shard that owns the topic registry and serializes topic changes.
pub const CONTROLLER_SHARD: usize = 0;

pub struct Shard {
    pub id: usize,
    pub count: usize,
    pub config: Arc<BrokerConfig>,
    pub cluster_id: Arc<str>,
    mesh: OnceCell<Rc<ShardMesh<ShardRequest, ShardResponse>>>,
    image: RefCell<Arc<MetadataImage>>,
    image_version: Cell<u64>,
    image_applied: event_listener::Event,
    /// Partitions this shard owns: topic name -> partition index -> partition.
    partitions: RefCell<HashMap<String, Vec<Option<Rc<Partition>>>>>,
    /// Only on [`CONTROLLER_SHARD`].
    registry: Option<RefCell<TopicRegistry>>,
    /// Serializes topic changes on the controller shard, which await image broadcasts.
    topic_change_lock: futures::lock::Mutex<()>,
    pub connections: Cell<usize>,
    /// The previous run stopped cleanly: logs open without a recovery scan.
    clean_start: bool,
    /// Set when the broker stops: connections finish what they have and close.
    stopping: Cell<bool>,
    stop_requested: event_listener::Event,
    pub metrics: Rc<ShardMetrics>,
    /// Groups coordinated by this shard (those whose offsets partition it owns).
    pub groups: RefCell<GroupCoordinator>,
    /// KIP-227 sessions of the fetches this shard's connections serve.
    pub fetch_sessions: RefCell<FetchSessionCache>,
}

impl Shard {
    pub fn new(
        id: usize,
        count: usize,
        config: Arc<BrokerConfig>,
        cluster_id: Arc<str>,
        registry: Option<TopicRegistry>,
        clean_start: bool,
    ) -> Shard {
        let fetch_session_slots = config.fetch_session_cache_slots;
        Shard {
            id,
            count,
            config,
            cluster_id,
            mesh: OnceCell::new(),
            image: RefCell::new(Arc::new(MetadataImage::default())),
            image_version: Cell::new(0),
            image_applied: event_listener::Event::new(),
            partitions: RefCell::new(HashMap::new()),
            registry: registry.map(RefCell::new),
            topic_change_lock: futures::lock::Mutex::new(()),
            connections: Cell::new(0),
            clean_start,
            stopping: Cell::new(false),
            stop_requested: event_listener::Event::new(),
            groups: RefCell::new(GroupCoordinator::default()),
            fetch_sessions: RefCell::new(FetchSessionCache::new(fetch_session_slots)),
            metrics: Rc::new(ShardMetrics::default()),
        }
    }

    pub fn set_mesh(&self, mesh: Rc<ShardMesh<ShardRequest, ShardResponse>>) {
        assert!(self.mesh.set(mesh).is_ok(), "the mesh is joined once");
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.borrow().clone()
    }

    pub fn owner_of(&self, topic: &str, partition: i32) -> usize {
        shard_for(topic, partition, self.count)
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<Rc<Partition>> {
        let partitions = self.partitions.borrow();
        partitions
            .get(topic)?
            .get(usize::try_from(partition).ok()?)?
            .clone()
    }

    /// Runs `request` on shard `owner`: directly when that is this shard, over the mesh
    /// otherwise. Handlers use this one path for both.
    pub async fn on_shard(self: &Rc<Self>, owner: usize, request: ShardRequest) -> ShardResponse {
        if owner == self.id {
            return self.clone().serve(request).await;
        }
        let mesh = self.mesh.get().expect("mesh joined before serving");
        self.metrics.count(&self.metrics.cross_shard_calls, 1);
        match mesh.call(owner, request).await {
            Ok(response) => response,
            Err(gone) => {
                tracing::error!("{gone}");
                ShardResponse::Unavailable
            }
        }
    }

    /// Serves a request addressed to this shard, from itself or from another shard.
    pub async fn serve(self: Rc<Self>, request: ShardRequest) -> ShardResponse {
        match request {
            ShardRequest::Append { acks, partitions } => {
                ShardResponse::Append(self.append(acks, partitions).await)
            }
            ShardRequest::Fetch {
                queries,
                min_bytes,
                max_bytes,
                wait,
            } => {
                let deadline = wait.map(|wait| Instant::now() + wait);
                ShardResponse::Fetch(self.fetch(queries, min_bytes, max_bytes, deadline).await)
            }
            ShardRequest::ListOffsets(queries) => {
                ShardResponse::ListOffsets(queries.iter().map(|q| self.list_offset(q)).collect())
            }
            ShardRequest::ChangeTopics(change) => {
                ShardResponse::TopicsChanged(self.change_topics(change).await)
            }
            ShardRequest::ApplyImage { version, image } => {
                self.apply_image(version, image);
                ShardResponse::ImageApplied
            }
            ShardRequest::Metrics => ShardResponse::Metrics(Box::new(self.metrics_snapshot())),
            ShardRequest::Group {
                version,
                client,
                request,
            } => ShardResponse::Group(Box::new(
                crate::group::api::serve(&self, version, client, *request).await,
            )),
        }
    }

    /// Appends to this shard's partitions; with acks=all, waits until each append is
    /// fdatasynced (group commit: concurrent produces share one sync per partition).
    async fn append(&self, acks: i16, requests: Vec<AppendRequest>) -> Vec<AppendResult> {
        let now_ms = now_ms();
        let mut results = Vec::with_capacity(requests.len());
        let mut durable_waits = Vec::new();
        for request in requests {
            let result = match self.partition(&request.topic, request.partition) {
                None => AppendResult::error(ErrorCode::UnknownTopicOrPartition, None),
                Some(partition) => {
                    let result = partition.append(&request.records, acks, now_ms);
                    if acks == -1 && result.error_code == 0 {
                        durable_waits.push((results.len(), partition, result.last_offset));
                    }
                    result
                }
            };
            results.push(result);
        }
        let synced = futures::future::join_all(
            durable_waits
                .iter()
                .map(|(_, partition, last_offset)| partition.wait_durable(*last_offset)),
        )
        .await;
        for ((index, _, _), outcome) in durable_waits.iter().zip(synced) {
            if let Err(e) = outcome {
                tracing::error!("fdatasync failed: {e}");
                results[*index] = AppendResult::error(
                    ErrorCode::KafkaStorageError,
                    Some(format!("fdatasync failed: {e}")),
                );
            }
        }
        results
    }

    /// Reads this shard's share of a fetch; if fewer than `min_bytes` are available, waits
    /// for appends to any of the partitions until `deadline`.
    async fn fetch(
        &self,
        queries: Vec<FetchQuery>,
        min_bytes: usize,
        max_bytes: usize,
        deadline: Option<Instant>,
    ) -> Vec<FetchResult> {
        let partitions: Vec<Option<Rc<Partition>>> = queries
            .iter()
            .map(|q| self.partition(&q.topic, q.partition))
            .collect();
        loop {
            // Listen before reading, so an append between the read and the wait is not missed.
            let listeners: Vec<_> = match deadline {
                Some(_) => partitions
                    .iter()
                    .flatten()
                    .map(|p| p.listen_appends())
                    .collect(),
                None => Vec::new(),
            };
            let mut total = 0usize;
            let results: Vec<FetchResult> = queries
                .iter()
                .zip(&partitions)
                .map(|(query, partition)| {
                    let budget = max_bytes.saturating_sub(total);
                    let result = match partition {
                        None => FetchResult::error(ErrorCode::UnknownTopicOrPartition),
                        // Kafka returns at least one batch of the first partition with data
                        // even past max_bytes, so a consumer always makes progress.
                        Some(p) if budget > 0 || total == 0 => {
                            p.read(query.offset, query.max_bytes.min(budget.max(1)))
                        }
                        Some(p) => p.empty_read(),
                    };
                    total += result.byte_len();
                    result
                })
                .collect();
            let remaining = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            let expired = remaining.is_none_or(|r| r.is_zero());
            let failed = results.iter().any(|r| r.error_code != 0);
            if total >= min_bytes || expired || failed || listeners.is_empty() {
                return results;
            }
            let woken = futures::future::select_all(listeners);
            let timeout = Box::pin(corelog_io::sleep(remaining.unwrap_or(Duration::ZERO)));
            futures::future::select(woken, timeout).await;
        }
    }

    fn list_offset(&self, query: &OffsetQuery) -> OffsetResult {
        match self.partition(&query.topic, query.partition) {
            None => OffsetResult::error(ErrorCode::UnknownTopicOrPartition),
            Some(partition) => partition.list_offset(query.timestamp),
        }
    }

    /// Sends the current image to every shard (this one included) and waits until all
    /// have applied it, so that a topic is served everywhere once its creation is answered.
    async fn broadcast_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        let version = self.image_version.get() + 1;
        let applies = (0..self.count).map(|shard| {
            self.on_shard(
                shard,
                ShardRequest::ApplyImage {
                    version,
                    image: image.clone(),
                },
            )
        });
        futures::future::join_all(applies).await;
    }

    /// Installs a newer image: opens partitions this shard now owns, closes and deletes
    /// those of deleted topics. Images can arrive out of order; older ones are ignored.
    fn apply_image(&self, version: u64, image: Arc<MetadataImage>) {
        if version <= self.image_version.get() {
            return;
        }
        self.image_version.set(version);
        let mut partitions = self.partitions.borrow_mut();
        let mut opened = OpenedLogs::default();
        partitions.retain(|topic, owned| {
            let current = image.topic(topic);
            let keep = |p: &Rc<Partition>| current.is_some_and(|t| t.record.id == p.topic_id);
            if owned.iter().flatten().all(keep) {
                return true;
            }
            for partition in owned.drain(..).flatten() {
                partition.delete();
            }
            false
        });
        for (name, topic) in &image.topics {
            let owned = partitions.entry(name.clone()).or_default();
            let count = topic.record.partitions as usize;
            owned.resize(count.max(owned.len()), None);
            for (index, slot) in owned.iter_mut().enumerate() {
                if shard_for(name, index as i32, self.count) != self.id {
                    continue;
                }
                match slot {
                    Some(partition) => {
                        partition.update_config(&topic.log_config, topic.min_insync_replicas)
                    }
                    None => match Partition::open(
                        &self.config.data_dir,
                        topic,
                        index as i32,
                        self.clean_start,
                        self.metrics.clone(),
                    ) {
                        Ok(partition) => {
                            opened.add(&partition.recovery_stats());
                            if name == OFFSETS_TOPIC {
                                self.load_offsets(&partition);
                            }
                            *slot = Some(Rc::new(partition));
                        }
                        Err(e) => {
                            tracing::error!(topic = %name, partition = index, "cannot open partition: {e:#}")
                        }
                    },
                }
            }
        }
        opened.report(self.id);
        self.groups.borrow_mut().on_metadata_change(&*image);
        *self.image.borrow_mut() = image;
        self.image_applied.notify(usize::MAX);
    }

    /// Waits until the controller shard's first image is applied here, so this shard
    /// serves no client before its partitions are open.
    pub async fn wait_for_first_image(&self) {
        while self.image_version.get() == 0 {
            let listener = self.image_applied.listen();
            if self.image_version.get() == 0 {
                listener.await;
            }
        }
    }

    /// Flushes data acknowledged with acks=0/1 every `log.flush.interval.ms`, and records
    /// the recovery point so a restart rescans only the unflushed tail.
    pub async fn run_periodic_flush(self: Rc<Self>) {
        let interval = Duration::from_millis(self.config.log_flush_interval_ms);
        loop {
            corelog_io::sleep(interval).await;
            for partition in self.owned_partitions() {
                if let Err(e) = partition.flush_and_checkpoint().await {
                    tracing::error!("periodic flush failed: {e}");
                }
            }
        }
    }

    /// Expires group members whose sessions lapsed and completes timed group transitions.
    /// Group timeouts are seconds long; a 50 ms tick keeps them accurate enough.
    pub async fn run_group_timers(self: Rc<Self>) {
        loop {
            corelog_io::sleep(Duration::from_millis(50)).await;
            self.groups.borrow_mut().tick(now_ms());
        }
    }

    /// Deletes segments past retention every `log.retention.check.interval.ms`.
    pub async fn run_retention(self: Rc<Self>) {
        let interval = Duration::from_millis(self.config.retention_check_interval_ms);
        loop {
            corelog_io::sleep(interval).await;
            let now = now_ms();
            for partition in self.owned_partitions() {
                partition.enforce_retention(now);
                corelog_io::yield_if_needed().await;
            }
        }
    }

    /// The offsets partition keeping `group`, and the shard owning it (which coordinates
    /// the group). `None` before the offsets topic exists.
    pub fn group_placement(&self, group: &str) -> Option<(i32, usize)> {
        let image = self.image.borrow();
        let partitions = image.topic(OFFSETS_TOPIC)?.record.partitions;
        let partition = offsets_partition_for(group, partitions);
        Some((partition, shard_for(OFFSETS_TOPIC, partition, self.count)))
    }

    /// Rebuilds the committed offsets kept in one offsets partition.
    fn load_offsets(&self, partition: &Partition) {
        match partition.read_all() {
            Ok(batches) => match crate::group::offsets::decode_batches(batches) {
                Ok(changes) => self.groups.borrow_mut().apply(changes),
                Err(e) => tracing::error!("cannot decode stored offsets: {e:#}"),
            },
            Err(e) => tracing::error!("cannot read stored offsets: {e}"),
        }
    }

    /// Serving clients: the first metadata image is applied and no stop is under way.
    pub fn is_ready(&self) -> bool {
        self.image_version.get() > 0 && !self.stopping.get()
    }

    /// Resolves once the broker is stopping.
    pub async fn stopping(&self) {
        while !self.stopping.get() {
            let listener = self.stop_requested.listen();
            if self.stopping.get() {
                break;
            }
            listener.await;
        }
    }

    /// Tells connections to stop reading requests and waits (bounded) until they have
    /// answered those in flight and closed.
    pub async fn stop_serving(&self) {
        self.stopping.set(true);
        self.stop_requested.notify(usize::MAX);
        let deadline = Instant::now() + STOP_GRACE;
        while self.connections.get() > 0 && Instant::now() < deadline {
            corelog_io::sleep(crate::shutdown::POLL).await;
        }
        if self.connections.get() > 0 {
            tracing::warn!(
                shard = self.id,
                open = self.connections.get(),
                "closing connections still busy"
            );
        }
    }

    /// Flushes every owned log with its indexes for a clean stop; false if one failed.
    pub fn close_logs_cleanly(&self) -> bool {
        let mut all_closed = true;
        for partition in self.owned_partitions() {
            if let Err(e) = partition.close_cleanly() {
                tracing::error!(shard = self.id, "flush at shutdown failed: {e}");
                all_closed = false;
            }
        }
        all_closed
    }

    fn metrics_snapshot(&self) -> ShardSnapshot {
        let mut snapshot = self.metrics.snapshot(self.id, self.connections.get());
        for (topic, owned) in self.partitions.borrow().iter() {
            for (index, partition) in owned.iter().enumerate() {
                if let Some(partition) = partition {
                    snapshot
                        .partitions
                        .push(partition.metrics_snapshot(topic, index as i32));
                }
            }
        }
        snapshot.committed = self.groups.borrow().committed_offsets();
        snapshot
    }

    fn owned_partitions(&self) -> Vec<Rc<Partition>> {
        self.partitions
            .borrow()
            .values()
            .flat_map(|owned| owned.iter().flatten().cloned())
            .collect()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

impl Shard {
    /// Publishes the stored topics at start (controller shard only), opening every
    /// partition on its owner; partitions are recovered there.
    pub async fn publish_initial_image(self: &Rc<Self>) -> anyhow::Result<()> {
        let Some(registry) = &self.registry else {
            return Ok(());
        };
        if registry.borrow().get(OFFSETS_TOPIC).is_none() {
            registry
                .borrow_mut()
                .put(offsets_topic_record(&self.config))?;
        }
        let image = Arc::new(registry.borrow().image(&self.config));
        self.broadcast_image(image).await;
        Ok(())
    }
}

/// The internal topic holding committed offsets. Compaction is not implemented yet, so it
/// keeps everything (no retention) rather than lose live offsets with old segments.
fn offsets_topic_record(config: &BrokerConfig) -> crate::metadata::TopicRecord {
    let configs = [
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    crate::metadata::TopicRecord {
        name: OFFSETS_TOPIC.to_string(),
        id: uuid::Uuid::new_v4(),
        partitions: config.groups.offsets_topic_partitions,
        configs,
    }
}

/// What opening a batch of partition logs took, for one summary line per shard.
#[derive(Default)]
struct OpenedLogs {
    partitions: usize,
    segments_trusted: usize,
    segments_recovered: usize,
    bytes_truncated: u64,
}

impl OpenedLogs {
    fn add(&mut self, stats: &crate::log::RecoveryStats) {
        self.partitions += 1;
        self.segments_trusted += stats.segments_trusted;
        self.segments_recovered += stats.segments_recovered;
        self.bytes_truncated += stats.bytes_truncated;
    }

    fn report(&self, shard: usize) {
        if self.partitions > 0 {
            tracing::info!(
                shard,
                partitions = self.partitions,
                segments_trusted = self.segments_trusted,
                segments_recovered = self.segments_recovered,
                bytes_truncated = self.bytes_truncated,
                "partition logs opened"
            );
        }
    }
}
