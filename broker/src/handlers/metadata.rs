//! Metadata: brokers (this one), topics with ids and partitions. Unknown topics asked for
//! by name are created when auto-creation is on and the client allows it.

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};

use super::{auto_create_topics, str_bytes, RequestContext};
use crate::errors::ErrorCode;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::{validate_topic_name, TopicMeta};

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
            .map(|t| topic_entry(t, config.node_id))
            .collect(),
        Some(wanted) if wanted.is_empty() && ctx.api_version == 0 => image
            .topics
            .values()
            .map(|t| topic_entry(t, config.node_id))
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
                        Some(topic) => topic_entry(topic, config.node_id),
                        None => missing_entry(t.name.clone(), t.topic_id),
                    }
                })
                .collect()
        }
    };
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(BrokerId(config.node_id))
            .with_host(str_bytes(config.advertised_host.clone()))
            .with_port(config.advertised_port as i32)])
        .with_cluster_id(Some(str_bytes(shard.cluster_id.to_string())))
        .with_controller_id(BrokerId(config.node_id))
        .with_topics(topics)
}

/// Every partition is led by this node until replication exists.
fn topic_entry(topic: &TopicMeta, node_id: i32) -> MetadataResponseTopic {
    let node = BrokerId(node_id);
    let partitions = (0..topic.record.partitions)
        .map(|index| {
            MetadataResponsePartition::default()
                .with_partition_index(index)
                .with_leader_id(node)
                .with_leader_epoch(0)
                .with_replica_nodes(vec![node])
                .with_isr_nodes(vec![node])
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
