//! Produce: group partitions by owning shard, append there (validated, offsets assigned in
//! place; for acks=all, fdatasynced and replicated to the ISR, bounded by the request's
//! timeout), answer in the request's order.

use kafka_protocol::messages::produce_response::{
    LeaderIdAndEpoch, PartitionProduceResponse, TopicProduceResponse,
};
use kafka_protocol::messages::{BrokerId, ProduceRequest, ProduceResponse};

use super::{
    auto_create_topics, resolve_topic_ref, scatter, str_bytes, ByShard, LeaderHints, RequestContext,
};
use crate::errors::ErrorCode;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::shard::{AppendRequest, AppendResult, ShardRequest, ShardResponse};

/// Bound on how long an acks=all produce may wait for its replicas.
const MAX_TIMEOUT_MS: i32 = 60_000;
/// Produce v13 (KIP-516) names topics by id instead of by name.
const FIRST_VERSION_WITH_TOPIC_IDS: i16 = 13;
/// Produce v10 (KIP-951) answers a misdirected produce with the leader and its endpoint.
const FIRST_VERSION_WITH_LEADER_HINTS: i16 = 10;

pub async fn handle(ctx: &RequestContext, request: ProduceRequest) -> ProduceResponse {
    let shard = &ctx.shard;
    let by_id = ctx.api_version >= FIRST_VERSION_WITH_TOPIC_IDS;
    let acks = request.acks;
    let timeout =
        std::time::Duration::from_millis(request.timeout_ms.clamp(0, MAX_TIMEOUT_MS) as u64);
    let mut image = shard.image();
    if !by_id && shard.config.auto_create_topics {
        let missing: Vec<String> = request
            .topic_data
            .iter()
            .map(|t| t.name.0.to_string())
            .filter(|name| image.topic(name).is_none())
            .filter(|name| crate::metadata::validate_topic_name(name).is_ok())
            .collect();
        if !missing.is_empty() {
            image = auto_create_topics(shard, missing).await;
        }
    }

    // Results start as errors and are filled in by the owning shards.
    let mut responses: Vec<TopicProduceResponse> = Vec::with_capacity(request.topic_data.len());
    let mut per_shard: ByShard<AppendRequest> = ByShard::new();
    for (topic_slot, topic) in request.topic_data.into_iter().enumerate() {
        let resolved = resolve_topic_ref(&image, by_id, &topic.name, &topic.topic_id);
        let mut partitions = Vec::with_capacity(topic.partition_data.len());
        for (partition_slot, data) in topic.partition_data.into_iter().enumerate() {
            let failure = match (&resolved, data.records) {
                (Err(code), _) => Some((*code, None)),
                (Ok(meta), _) if data.index < 0 || data.index >= meta.record.partitions => {
                    Some((ErrorCode::UnknownTopicOrPartition, None))
                }
                (Ok(meta), _) if meta.record.name == OFFSETS_TOPIC => Some((
                    ErrorCode::InvalidTopicException,
                    Some(format!(
                        "cannot produce to the internal topic {OFFSETS_TOPIC}"
                    )),
                )),
                _ if ![0, 1, -1].contains(&acks) => Some((
                    ErrorCode::InvalidRequiredAcks,
                    Some(format!("acks must be 0, 1 or -1, got {acks}")),
                )),
                (Ok(_), None) => Some((ErrorCode::InvalidRecord, Some("null record set".into()))),
                (Ok(meta), Some(records)) => {
                    let owner = shard.owner_of(&meta.record.name, data.index);
                    per_shard.entry(owner).or_default().push((
                        (topic_slot, partition_slot),
                        AppendRequest {
                            topic: meta.record.name.clone(),
                            partition: data.index,
                            records,
                        },
                    ));
                    None
                }
            };
            let (code, message) = failure.unwrap_or((ErrorCode::UnknownServerError, None));
            partitions.push(partition_response(
                data.index,
                &AppendResult::error(code, message),
            ));
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_topic_id(topic.topic_id)
                .with_partition_responses(partitions),
        );
    }

    let results = scatter(
        shard,
        per_shard,
        |partitions| ShardRequest::Append {
            acks,
            timeout,
            partitions,
        },
        |response| match response {
            ShardResponse::Append(results) => Some(results),
            _ => None,
        },
        || AppendResult::error(ErrorCode::RequestTimedOut, None),
    )
    .await;
    for ((topic_slot, partition_slot), result) in results {
        let entry = &mut responses[topic_slot].partition_responses[partition_slot];
        *entry = partition_response(entry.index, &result);
    }
    let mut response = ProduceResponse::default().with_responses(responses);
    if ctx.api_version >= FIRST_VERSION_WITH_LEADER_HINTS {
        add_leader_hints(&mut response, LeaderHints::new(shard.image(), by_id));
    }
    response
}

/// KIP-951: the leader (from the image as it is now, after the appends) of each partition
/// refused for not being led here, and the leaders' endpoints.
fn add_leader_hints(response: &mut ProduceResponse, mut hints: LeaderHints) {
    for topic in &mut response.responses {
        for partition in &mut topic.partition_responses {
            let hint = hints.hint(
                partition.error_code,
                &topic.name,
                &topic.topic_id,
                partition.index,
            );
            if let Some((leader, epoch)) = hint {
                partition.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
    }
    response.node_endpoints = hints.endpoints();
}

fn partition_response(index: i32, result: &AppendResult) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_index(index)
        .with_error_code(result.error_code)
        .with_error_message(result.error_message.clone().map(str_bytes))
        .with_base_offset(result.base_offset)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(result.log_start_offset)
}
