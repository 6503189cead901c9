//! OffsetForLeaderEpoch (KIP-101, KIP-320): the end offset of a leader epoch in the
//! leader's log, so a consumer or replica that saw an older leader can tell whether its
//! position is still on the log or must be truncated.

use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse};

use super::{scatter, ByShard, RequestContext};
use crate::errors::ErrorCode;
use crate::shard::{EpochQuery, EpochResult, ShardRequest, ShardResponse};

pub async fn handle(
    ctx: &RequestContext,
    request: OffsetForLeaderEpochRequest,
) -> OffsetForLeaderEpochResponse {
    let shard = &ctx.shard;
    let image = shard.image();
    let mut topics = Vec::with_capacity(request.topics.len());
    let mut per_shard: ByShard<EpochQuery> = ByShard::new();
    for (topic_slot, topic) in request.topics.into_iter().enumerate() {
        let meta = image.topic(topic.topic.as_str());
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition_slot, p) in topic.partitions.iter().enumerate() {
            let code = match meta {
                Some(meta) if meta.partition(p.partition).is_some() => {
                    per_shard
                        .entry(shard.owner_of(&meta.record.name, p.partition))
                        .or_default()
                        .push((
                            (topic_slot, partition_slot),
                            EpochQuery {
                                topic: meta.record.name.clone(),
                                partition: p.partition,
                                current_leader_epoch: p.current_leader_epoch,
                                leader_epoch: p.leader_epoch,
                            },
                        ));
                    ErrorCode::UnknownServerError
                }
                _ => ErrorCode::UnknownTopicOrPartition,
            };
            partitions.push(end_offset(p.partition, &EpochResult::error(code)));
        }
        topics.push(
            OffsetForLeaderTopicResult::default()
                .with_topic(topic.topic)
                .with_partitions(partitions),
        );
    }
    let results = scatter(
        shard,
        per_shard,
        ShardRequest::EpochEndOffsets,
        |response| match response {
            ShardResponse::EpochEndOffsets(results) => Some(results),
            _ => None,
        },
        || EpochResult::error(ErrorCode::RequestTimedOut),
    )
    .await;
    for ((topic_slot, partition_slot), mut result) in results {
        // v0 answers carry no epoch (the encoder refuses one).
        if ctx.api_version == 0 {
            result.leader_epoch = -1;
        }
        let entry = &mut topics[topic_slot].partitions[partition_slot];
        *entry = end_offset(entry.partition, &result);
    }
    OffsetForLeaderEpochResponse::default().with_topics(topics)
}

fn end_offset(partition: i32, result: &EpochResult) -> EpochEndOffset {
    EpochEndOffset::default()
        .with_partition(partition)
        .with_error_code(result.error_code)
        .with_leader_epoch(result.leader_epoch)
        .with_end_offset(result.end_offset)
}
