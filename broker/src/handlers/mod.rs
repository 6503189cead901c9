//! One module per Kafka API. The [`served_apis!`] table below is the single list of what
//! corelog serves: ApiVersions advertises exactly these keys with the version range the
//! kafka-protocol crate implements for each, and dispatch routes exactly these, so what is
//! advertised can never drift from what is served.

mod alter_configs;
mod api_versions;
mod consumer_group_describe;
mod consumer_group_heartbeat;
mod create_partitions;
mod create_topics;
mod delete_groups;
mod delete_topics;
mod describe_cluster;
mod describe_configs;
mod describe_groups;
pub mod fetch;
mod find_coordinator;
mod group_routing;
mod heartbeat;
mod incremental_alter_configs;
mod join_group;
mod leave_group;
mod list_groups;
mod list_offsets;
mod metadata;
mod offset_commit;
mod offset_delete;
mod offset_fetch;
mod offset_for_leader_epoch;
mod produce;
mod sync_group;

use std::collections::BTreeMap;
use std::rc::Rc;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Message, StrBytes, VersionRange};

use crate::shard::{Shard, ShardRequest, ShardResponse};

/// What a handler sees of the request beyond its body.
pub struct RequestContext {
    pub shard: Rc<Shard>,
    pub api_version: i16,
    pub client: ClientInfo,
    /// Where the request stands among its connection's, whose answers leave in order.
    pub place: crate::server::QueuePlace,
}

/// Who sent a request, as group descriptions report it. `Send`, as group requests travel
/// to the shard owning the group.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    pub client_id: StrBytes,
    /// Kafka's form: `/` followed by the peer's address.
    pub client_host: std::sync::Arc<str>,
}

macro_rules! served_apis {
    ($($variant:ident($request:ty) => $module:ident),* $(,)?) => {
        /// Every API served, with the versions served.
        pub fn served_apis() -> impl Iterator<Item = (ApiKey, VersionRange)> {
            [$((ApiKey::$variant, <$request as Message>::VERSIONS)),*].into_iter()
        }

        /// Runs the handler of a decoded request. `None` for APIs not in the table (the
        /// connection layer only passes versions that are served).
        pub async fn dispatch(ctx: &RequestContext, request: RequestKind) -> Option<ResponseKind> {
            match request {
                $(RequestKind::$variant(request) => {
                    Some(ResponseKind::$variant($module::handle(ctx, request).await))
                })*
                _ => None,
            }
        }
    };
}

served_apis! {
    Produce(ProduceRequest) => produce,
    Fetch(FetchRequest) => fetch,
    ListOffsets(ListOffsetsRequest) => list_offsets,
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest) => offset_for_leader_epoch,
    Metadata(MetadataRequest) => metadata,
    ApiVersions(ApiVersionsRequest) => api_versions,
    CreateTopics(CreateTopicsRequest) => create_topics,
    DeleteTopics(DeleteTopicsRequest) => delete_topics,
    CreatePartitions(CreatePartitionsRequest) => create_partitions,
    DescribeConfigs(DescribeConfigsRequest) => describe_configs,
    DescribeCluster(DescribeClusterRequest) => describe_cluster,
    FindCoordinator(FindCoordinatorRequest) => find_coordinator,
    OffsetCommit(OffsetCommitRequest) => offset_commit,
    OffsetFetch(OffsetFetchRequest) => offset_fetch,
    OffsetDelete(OffsetDeleteRequest) => offset_delete,
    ConsumerGroupHeartbeat(ConsumerGroupHeartbeatRequest) => consumer_group_heartbeat,
    ConsumerGroupDescribe(ConsumerGroupDescribeRequest) => consumer_group_describe,
    JoinGroup(JoinGroupRequest) => join_group,
    SyncGroup(SyncGroupRequest) => sync_group,
    Heartbeat(HeartbeatRequest) => heartbeat,
    LeaveGroup(LeaveGroupRequest) => leave_group,
    ListGroups(ListGroupsRequest) => list_groups,
    DescribeGroups(DescribeGroupsRequest) => describe_groups,
    DeleteGroups(DeleteGroupsRequest) => delete_groups,
    AlterConfigs(AlterConfigsRequest) => alter_configs,
    IncrementalAlterConfigs(IncrementalAlterConfigsRequest) => incremental_alter_configs,
}

/// The served version range of an API, if it is served at all.
pub fn served_versions(api: ApiKey) -> Option<VersionRange> {
    served_apis()
        .find(|(key, _)| *key == api)
        .map(|(_, range)| range)
}

pub use api_versions::api_versions_response;

fn str_bytes(text: impl Into<String>) -> StrBytes {
    StrBytes::from_string(text.into())
}

/// Creates `names` with the broker's defaults (auto-creation) and returns the image that
/// includes them. A name another request created meanwhile is not an error.
async fn auto_create_topics(
    shard: &Rc<Shard>,
    names: Vec<String>,
) -> std::sync::Arc<crate::metadata::MetadataImage> {
    let topics = names
        .into_iter()
        .map(|name| crate::shard::NewTopic {
            name,
            partitions: -1,
            replication_factor: -1,
            assignments: None,
            configs: Default::default(),
        })
        .collect();
    let change = crate::shard::TopicChange::Create {
        topics,
        validate_only: false,
    };
    for outcome in shard.request_topic_change(change).await {
        if let Err(e) = outcome {
            if e.code != crate::errors::ErrorCode::TopicAlreadyExists {
                tracing::warn!("auto-creating a topic failed: {}", e.message);
            }
        }
    }
    shard.image()
}

/// Finds a request's topic by name, or by id for request versions that use ids, with the
/// error code Kafka gives for each kind of miss.
fn resolve_topic_ref(
    image: &crate::metadata::MetadataImage,
    by_id: bool,
    name: &TopicName,
    id: &uuid::Uuid,
) -> Result<std::sync::Arc<crate::metadata::TopicMeta>, crate::errors::ErrorCode> {
    use crate::errors::ErrorCode;
    if by_id {
        image
            .topic_by_id(id)
            .cloned()
            .ok_or(ErrorCode::UnknownTopicId)
    } else {
        image
            .topic(name.as_str())
            .cloned()
            .ok_or(ErrorCode::UnknownTopicOrPartition)
    }
}

/// KIP-951 leader hints: a partition answered NOT_LEADER_OR_FOLLOWER or
/// FENCED_LEADER_EPOCH names its leader as this broker's image knows it, and the response
/// carries that leader's endpoint, so a client moves without a metadata round trip.
struct LeaderHints {
    image: std::sync::Arc<crate::metadata::MetadataImage>,
    by_id: bool,
    leaders: std::collections::BTreeSet<i32>,
}

impl LeaderHints {
    fn new(image: std::sync::Arc<crate::metadata::MetadataImage>, by_id: bool) -> LeaderHints {
        LeaderHints {
            image,
            by_id,
            leaders: Default::default(),
        }
    }

    /// (leader id, leader epoch) for a partition answered with `error_code`, when the
    /// error calls for a hint and a live leader is known; remembers the leader.
    fn hint(
        &mut self,
        error_code: i16,
        name: &TopicName,
        id: &uuid::Uuid,
        partition: i32,
    ) -> Option<(i32, i32)> {
        use crate::errors::ErrorCode;
        if error_code != ErrorCode::NotLeaderOrFollower.code()
            && error_code != ErrorCode::FencedLeaderEpoch.code()
        {
            return None;
        }
        let topic = resolve_topic_ref(&self.image, self.by_id, name, id).ok()?;
        let state = topic.partition(partition)?;
        self.image.broker(state.leader)?;
        self.leaders.insert(state.leader);
        Some((state.leader, state.leader_epoch))
    }

    /// The hinted leaders' endpoints, for the response.
    fn endpoints<T: EndpointOf>(&self) -> Vec<T> {
        self.leaders
            .iter()
            .filter_map(|id| self.image.broker(*id))
            .map(T::of)
            .collect()
    }
}

/// A response's node endpoint for a broker: Produce and Fetch each have their own type,
/// of the same shape.
trait EndpointOf {
    fn of(broker: &corelog_replication::metadata::BrokerRegistration) -> Self;
}

macro_rules! endpoint_of {
    ($($endpoint:ty),*) => {$(
        impl EndpointOf for $endpoint {
            fn of(broker: &corelog_replication::metadata::BrokerRegistration) -> Self {
                <$endpoint>::default()
                    .with_node_id(BrokerId(broker.id))
                    .with_host(str_bytes(broker.kafka.host.clone()))
                    .with_port(i32::from(broker.kafka.port))
                    .with_rack(broker.rack.clone().map(str_bytes))
            }
        }
    )*};
}

endpoint_of!(produce_response::NodeEndpoint, fetch_response::NodeEndpoint);

/// Where a partition's answer goes in a response: (topic index, partition index).
type Slot = (usize, usize);

/// Per-partition work grouped by owning shard, each item remembering its response slot.
type ByShard<T> = BTreeMap<usize, Vec<(Slot, T)>>;

/// Sends every shard its share of a request at once and returns each result with its
/// slot. `unpack` takes the results out of the shard's answer; `failed` stands in for
/// results of a shard that could not answer.
async fn scatter<T, R>(
    shard: &Rc<Shard>,
    by_shard: ByShard<T>,
    request: impl Fn(Vec<T>) -> ShardRequest,
    unpack: impl Fn(ShardResponse) -> Option<Vec<R>>,
    failed: impl Fn() -> R,
) -> Vec<(Slot, R)> {
    let calls = by_shard.into_iter().map(|(owner, items)| {
        let (slots, items): (Vec<Slot>, Vec<T>) = items.into_iter().unzip();
        let call = shard.on_shard(owner, request(items));
        let (unpack, failed) = (&unpack, &failed);
        async move {
            let results =
                unpack(call.await).unwrap_or_else(|| slots.iter().map(|_| failed()).collect());
            slots.into_iter().zip(results).collect::<Vec<_>>()
        }
    });
    futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Calls `each` with every error code in a response, request-level and per partition
/// or resource, for metrics (no allocation: this runs for every request). APIs not listed
/// report none.
pub fn visit_error_codes(response: &ResponseKind, mut each: impl FnMut(i16)) {
    match response {
        ResponseKind::Produce(r) => r
            .responses
            .iter()
            .flat_map(|t| &t.partition_responses)
            .for_each(|p| each(p.error_code)),
        ResponseKind::Fetch(r) => {
            each(r.error_code);
            r.responses
                .iter()
                .flat_map(|t| &t.partitions)
                .for_each(|p| each(p.error_code));
        }
        ResponseKind::ListOffsets(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| each(p.error_code)),
        ResponseKind::Metadata(r) => r.topics.iter().for_each(|t| each(t.error_code)),
        ResponseKind::CreateTopics(r) => r.topics.iter().for_each(|t| each(t.error_code)),
        ResponseKind::DeleteTopics(r) => r.responses.iter().for_each(|t| each(t.error_code)),
        ResponseKind::OffsetCommit(r) => r
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .for_each(|p| each(p.error_code)),
        ResponseKind::JoinGroup(r) => each(r.error_code),
        ResponseKind::SyncGroup(r) => each(r.error_code),
        ResponseKind::Heartbeat(r) => each(r.error_code),
        ResponseKind::ConsumerGroupHeartbeat(r) => each(r.error_code),
        _ => {}
    }
}
