//! What shards ask of each other. Payloads are `Bytes` (refcounted, never copied) and
//! immutable `Arc`s; everything here is `Send` because it crosses cores.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use uuid::Uuid;

use kafka_protocol::messages::{RequestKind, ResponseKind};

use crate::errors::ErrorCode;
use crate::handlers::ClientInfo;
use crate::log::ReadSlice;
use crate::metadata::{MetadataImage, TopicError, TopicRecord};

pub enum ShardRequest {
    /// Produce to partitions the receiving shard owns.
    Append {
        acks: i16,
        /// How long acks=all may wait for the in-sync replicas.
        timeout: Duration,
        partitions: Vec<AppendRequest>,
    },
    /// Read from partitions the receiving shard owns; wait up to `wait` for `min_bytes`.
    Fetch {
        /// The fetching follower's broker id; -1 for consumers.
        replica_id: i32,
        queries: Vec<FetchQuery>,
        min_bytes: usize,
        max_bytes: usize,
        wait: Option<Duration>,
    },
    ListOffsets(Vec<OffsetQuery>),
    /// End offsets of leader epochs (OffsetForLeaderEpoch).
    EpochEndOffsets(Vec<EpochQuery>),
    /// Create, delete or grow topics: only sent to the controller shard.
    ChangeTopics(TopicChange),
    /// A new metadata image from the controller shard.
    ApplyImage {
        version: u64,
        image: Arc<MetadataImage>,
    },
    /// Startup is over: the receiving shard may accept clients.
    StartServing,
    /// A snapshot of the receiving shard's metrics.
    Metrics,
    /// A request for the active controller, through the controller shard's cluster member.
    Controller(Box<corelog_replication::metadata::ControllerRequest>),
    /// A group API request for groups the receiving shard coordinates.
    Group {
        version: i16,
        client: ClientInfo,
        request: Box<RequestKind>,
    },
}

pub enum ShardResponse {
    Append(Vec<AppendResult>),
    Fetch(Vec<FetchResult>),
    ListOffsets(Vec<OffsetResult>),
    EpochEndOffsets(Vec<EpochResult>),
    TopicsChanged(Vec<Result<TopicRecord, TopicError>>),
    /// Applied an image, or started serving.
    Done,
    Controller(Box<corelog_replication::metadata::ControllerResponse>),
    Group(Box<ResponseKind>),
    Metrics(Box<crate::metrics::ShardSnapshot>),
    /// The target shard is gone (shutting down).
    Unavailable,
}

pub struct AppendRequest {
    pub topic: String,
    pub partition: i32,
    pub records: Bytes,
}

#[derive(Debug, Clone)]
pub struct AppendResult {
    pub error_code: i16,
    pub error_message: Option<String>,
    pub base_offset: i64,
    pub last_offset: i64,
    pub log_start_offset: i64,
    /// The epoch the batch was appended in as leader; an acks=all wait holds to it.
    pub leader_epoch: i32,
}

impl AppendResult {
    pub fn error(code: ErrorCode, message: Option<String>) -> Self {
        AppendResult {
            error_code: code.code(),
            error_message: message,
            base_offset: -1,
            last_offset: -1,
            log_start_offset: -1,
            leader_epoch: -1,
        }
    }
}

#[derive(Clone)]
pub struct FetchQuery {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: usize,
    /// The leader epoch the fetcher believes current (-1: unchecked).
    pub current_leader_epoch: i32,
    /// A follower's epoch of its last fetched batch (-1: none), to detect divergence.
    pub last_fetched_epoch: i32,
    /// A consumer's Fetch v11+ (KIP-392): followers serve it too, up to their high
    /// watermark.
    pub any_replica: bool,
    /// Replicas in the consumer's rack when the leader is in another one (KIP-392): the
    /// leader sends the consumer to the most caught-up in-sync one instead of serving it.
    pub replicas_in_rack: Vec<i32>,
}

pub struct FetchResult {
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    /// The batches to send, as a range of a segment file (sent or copied by the
    /// connection's shard).
    pub records: Option<ReadSlice>,
    /// For a follower whose log diverges from the leader's: (epoch, end offset) to
    /// truncate to (KIP-320).
    pub diverging_epoch: Option<(i32, i64)>,
    /// The replica the consumer should fetch from instead (KIP-392); -1: this one.
    pub preferred_read_replica: i32,
}

impl FetchResult {
    pub fn error(code: ErrorCode) -> Self {
        FetchResult {
            error_code: code.code(),
            high_watermark: -1,
            log_start_offset: -1,
            records: None,
            diverging_epoch: None,
            preferred_read_replica: -1,
        }
    }

    /// Record bytes found.
    pub fn byte_len(&self) -> usize {
        self.records.as_ref().map_or(0, |r| r.len)
    }
}

pub struct OffsetQuery {
    pub topic: String,
    pub partition: i32,
    /// A timestamp, or Kafka's specials: -1 latest, -2 earliest, -3 max timestamp.
    pub timestamp: i64,
}

pub struct OffsetResult {
    pub error_code: i16,
    pub timestamp: i64,
    pub offset: i64,
}

impl OffsetResult {
    pub fn error(code: ErrorCode) -> Self {
        OffsetResult {
            error_code: code.code(),
            timestamp: -1,
            offset: -1,
        }
    }
}

pub struct EpochQuery {
    pub topic: String,
    pub partition: i32,
    /// The epoch the asker believes current (-1: unchecked), fenced if it is stale.
    pub current_leader_epoch: i32,
    pub leader_epoch: i32,
}

pub struct EpochResult {
    pub error_code: i16,
    pub leader_epoch: i32,
    pub end_offset: i64,
}

impl EpochResult {
    pub fn error(code: ErrorCode) -> Self {
        EpochResult {
            error_code: code.code(),
            leader_epoch: -1,
            end_offset: -1,
        }
    }
}

/// A topic named by a request: by name, or by id (newer request versions).
#[derive(Debug, Clone)]
pub enum TopicRef {
    Name(String),
    Id(Uuid),
}

pub struct NewTopic {
    pub name: String,
    /// -1: the broker's num.partitions.
    pub partitions: i32,
    /// -1: the broker's default.replication.factor.
    pub replication_factor: i16,
    /// Explicit replicas per partition (then partitions and replication factor are -1).
    pub assignments: Option<corelog_replication::metadata::Assignment>,
    pub configs: std::collections::BTreeMap<String, String>,
}

/// How a topic's config overrides change.
pub enum ConfigEdit {
    /// AlterConfigs: the given overrides replace all existing ones.
    Replace(std::collections::BTreeMap<String, String>),
    /// IncrementalAlterConfigs: set or remove single overrides.
    Incremental(Vec<ConfigOp>),
}

pub enum ConfigOp {
    Set(String, String),
    Delete(String),
}

pub enum TopicChange {
    AlterConfigs {
        topics: Vec<(String, ConfigEdit)>,
        validate_only: bool,
    },
    Create {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    Delete(Vec<TopicRef>),
    /// Per topic: the new total count and, optionally, the new partitions' replicas.
    AddPartitions {
        topics: Vec<(
            String,
            i32,
            Option<corelog_replication::metadata::Assignment>,
        )>,
        validate_only: bool,
    },
}
