//! OffsetCommit: stored durably by the group's coordinating shard.

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::{
    OffsetCommitRequest, OffsetCommitResponse, RequestKind, ResponseKind,
};

use super::{group_routing, RequestContext};

pub async fn handle(ctx: &RequestContext, request: OffsetCommitRequest) -> OffsetCommitResponse {
    // Kept to answer every partition should the coordinator be unreachable.
    let asked: Vec<_> = request
        .topics
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.partitions
                    .iter()
                    .map(|p| p.partition_index)
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    let group = request.group_id.to_string();
    match group_routing::forward(ctx, &group, RequestKind::OffsetCommit(request)).await {
        Ok(ResponseKind::OffsetCommit(response)) => response,
        Ok(_) | Err(_) => {
            let code = crate::errors::ErrorCode::CoordinatorNotAvailable.code();
            let topics = asked
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetCommitResponseTopic::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p)
                                        .with_error_code(code)
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetCommitResponse::default().with_topics(topics)
        }
    }
}
