//! Metadata: live brokers, topics with ids and each partition's leader, leader epoch,
//! replicas and ISR, from this broker's copy of the committed cluster metadata. Unknown
//! topics asked for by name are created when auto-creation is on and the client allows it.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{auto_create_topics, str_bytes, RequestContext};
use crate::errors::ErrorCode;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::{validate_topic_name, MetadataImage, TopicMeta};

pub async fn handle(ctx: &RequestContext, request: MetadataRequest) -> MetadataResponse {
    let shard = &ctx.shard;
    let config = &shard.config;
    // v0 has no flag: it always asked for auto-creation.
    let allow_create = ctx.api_version < 4 || request.allow_auto_topic_creation;
    let mut image = shard.image();
    let topics = match request.topics {
        // v0 treats an empty list as "all topics"; later versions use null for that.
        None => image
            .topics
            .values()
            .map(|t| topic_entry(t, &image))
            .collect(),
        Some(wanted) if wanted.is_empty() && ctx.api_version == 0 => image
            .topics
            .values()
            .map(|t| topic_entry(t, &image))
            .collect(),
        Some(wanted) => {
            let missing: Vec<String> = wanted
                .iter()
                .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
                .filter(|name| image.topic(name).is_none() && validate_topic_name(name).is_ok())
                .collect();
            if allow_create && config.auto_create_topics && !missing.is_empty() {
                image = auto_create_topics(shard, missing).await;
            }
            wanted
                .iter()
                .map(|t| {
                    let found = match &t.name {
                        Some(name) => image.topic(name.as_str()),
                        None => image.topic_by_id(&t.topic_id),
                    };
                    match found {
                        Some(topic) => topic_entry(topic, &image),
                        None => missing_entry(t.name.clone(), t.topic_id),
                    }
                })
                .collect()
        }
    };
    let brokers = image
        .cluster
        .live_brokers()
        .map(|broker| {
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(broker.id))
                .with_host(str_bytes(broker.kafka.host.clone()))
                .with_port(broker.kafka.port as i32)
                .with_rack(broker.rack.clone().map(str_bytes))
        })
        .collect();
    MetadataResponse::default()
        .with_brokers(brokers)
        .with_cluster_id(Some(str_bytes(shard.cluster_id())))
        .with_controller_id(BrokerId(image.controller_id.unwrap_or(-1)))
        .with_topics(topics)
}

/// A partition without a live leader is reported with LEADER_NOT_AVAILABLE, so clients
/// refresh and retry; fenced replicas are listed as offline.
fn topic_entry(topic: &TopicMeta, image: &MetadataImage) -> MetadataResponseTopic {
    let ids = |list: &[i32]| list.iter().map(|&id| BrokerId(id)).collect::<Vec<_>>();
    let partitions = topic
        .cluster
        .partitions
        .iter()
        .enumerate()
        .map(|(index, state)| {
            let leader_live = image.broker(state.leader).is_some();
            let offline: Vec<i32> = state
                .replicas
                .iter()
                .copied()
                .filter(|&id| image.broker(id).is_none())
                .collect();
            MetadataResponsePartition::default()
                .with_error_code(if leader_live {
                    0
                } else {
                    ErrorCode::LeaderNotAvailable.code()
                })
                .with_partition_index(index as i32)
                .with_leader_id(BrokerId(if leader_live { state.leader } else { -1 }))
                .with_leader_epoch(state.leader_epoch)
                .with_replica_nodes(ids(&state.replicas))
                .with_isr_nodes(ids(&state.isr))
                .with_offline_replicas(ids(&offline))
        })
        .collect();
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(str_bytes(topic.record.name.clone()))))
        .with_topic_id(topic.record.id)
        .with_is_internal(topic.record.name == OFFSETS_TOPIC)
        .with_partitions(partitions)
}

fn missing_entry(name: Option<TopicName>, id: uuid::Uuid) -> MetadataResponseTopic {
    let code = match &name {
        Some(n) if validate_topic_name(n.as_str()).is_err() => ErrorCode::InvalidTopicException,
        Some(_) => ErrorCode::UnknownTopicOrPartition,
        None => ErrorCode::UnknownTopicId,
    };
    MetadataResponseTopic::default()
        .with_error_code(code.code())
        .with_name(name)
        .with_topic_id(id)
}
