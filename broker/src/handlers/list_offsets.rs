//! ListOffsets: earliest, latest, max timestamp, and by timestamp, from the owning shards.

use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{scatter, ByShard, RequestContext};
use crate::errors::ErrorCode;
use crate::shard::{OffsetQuery, OffsetResult, ShardRequest, ShardResponse};

pub async fn handle(ctx: &RequestContext, request: ListOffsetsRequest) -> ListOffsetsResponse {
    let shard = &ctx.shard;
    let image = shard.image();
    let mut topics: Vec<ListOffsetsTopicResponse> = Vec::with_capacity(request.topics.len());
    let mut per_shard: ByShard<OffsetQuery> = ByShard::new();
    for (topic_slot, topic) in request.topics.into_iter().enumerate() {
        let meta = image.topic(topic.name.as_str());
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition_slot, p) in topic.partitions.iter().enumerate() {
            let code = match meta {
                Some(meta) if (0..meta.record.partitions).contains(&p.partition_index) => {
                    per_shard
                        .entry(shard.owner_of(&meta.record.name, p.partition_index))
                        .or_default()
                        .push((
                            (topic_slot, partition_slot),
                            OffsetQuery {
                                topic: meta.record.name.clone(),
                                partition: p.partition_index,
                                timestamp: p.timestamp,
                            },
                        ));
                    ErrorCode::UnknownServerError
                }
                _ => ErrorCode::UnknownTopicOrPartition,
            };
            partitions.push(partition_response(
                p.partition_index,
                &OffsetResult::error(code),
            ));
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    let results = scatter(
        shard,
        per_shard,
        ShardRequest::ListOffsets,
        |response| match response {
            ShardResponse::ListOffsets(results) => Some(results),
            _ => None,
        },
        || OffsetResult::error(ErrorCode::RequestTimedOut),
    )
    .await;
    for ((topic_slot, partition_slot), result) in results {
        let entry = &mut topics[topic_slot].partitions[partition_slot];
        *entry = partition_response(entry.partition_index, &result);
    }
    with_leader_epochs(
        ListOffsetsResponse::default().with_topics(topics),
        ctx.api_version,
    )
}

fn partition_response(index: i32, result: &OffsetResult) -> ListOffsetsPartitionResponse {
    ListOffsetsPartitionResponse::default()
        .with_partition_index(index)
        .with_error_code(result.error_code)
        .with_timestamp(result.timestamp)
        .with_offset(result.offset)
}

/// ListOffsets v4 added the leader epoch; older versions cannot carry one.
fn with_leader_epochs(mut response: ListOffsetsResponse, version: i16) -> ListOffsetsResponse {
    if version >= 4 {
        for partition in response
            .topics
            .iter_mut()
            .flat_map(|t| t.partitions.iter_mut())
        {
            if partition.error_code == 0 {
                partition.leader_epoch = 0;
            }
        }
    }
    response
}
