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
    let answered = match ctx.shard.group_placement(&group) {
        Some((_, owner)) => {
            group_routing::forward_to(ctx, owner, RequestKind::OffsetCommit(request)).await
        }
        None => None,
    };
    match answered {
        Some(ResponseKind::OffsetCommit(response)) => response,
        _ => {
            let code = crate::errors::ErrorCode::CoordinatorNotAvailable;
            let topics = asked
                .into_iter()
                .map(|(name, partitions)| {
                    let partitions = partitions
                        .into_iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p)
                                .with_error_code(code.code())
                        })
                        .collect();
                    OffsetCommitResponseTopic::default()
                        .with_name(name)
                        .with_partitions(partitions)
                })
                .collect();
            OffsetCommitResponse::default().with_topics(topics)
        }
    }
}
