//! OffsetFetch: one group (v0-7) or several (v8+), each answered by its coordinating shard.

use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::{
    OffsetFetchRequest, OffsetFetchResponse, RequestKind, ResponseKind,
};

use super::{group_routing, RequestContext};
use crate::errors::ErrorCode;

/// OffsetFetch v8 (KIP-709) asks for several groups at once.
const FIRST_MULTI_GROUP_VERSION: i16 = 8;

pub async fn handle(ctx: &RequestContext, mut request: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.api_version < FIRST_MULTI_GROUP_VERSION {
        let group = request.group_id.to_string();
        return match group_routing::forward(ctx, &group, RequestKind::OffsetFetch(request)).await {
            Ok(ResponseKind::OffsetFetch(response)) => response,
            _ => OffsetFetchResponse::default()
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code()),
        };
    }
    let groups = std::mem::take(&mut request.groups);
    let count = groups.len();
    let (by_owner, orphans) = group_routing::by_owner(ctx, groups, |g| g.group_id.as_str());
    let mut answers: Vec<Option<OffsetFetchResponseGroup>> = vec![None; count];
    for (position, group) in orphans {
        answers[position] = Some(unavailable(group.group_id));
    }
    let calls =
        by_owner.into_iter().map(|(owner, groups)| {
            let (positions, groups): (Vec<usize>, Vec<_>) = groups.into_iter().unzip();
            let ids: Vec<_> = groups.iter().map(|g| g.group_id.clone()).collect();
            let share = OffsetFetchRequest::default()
                .with_groups(groups)
                .with_require_stable(request.require_stable);
            async move {
                let results =
                    match group_routing::forward_to(ctx, owner, RequestKind::OffsetFetch(share))
                        .await
                    {
                        Ok(ResponseKind::OffsetFetch(response)) => response.groups,
                        _ => ids.into_iter().map(unavailable).collect(),
                    };
                positions.into_iter().zip(results).collect::<Vec<_>>()
            }
        });
    for (position, group) in futures::future::join_all(calls).await.into_iter().flatten() {
        answers[position] = Some(group);
    }
    OffsetFetchResponse::default().with_groups(answers.into_iter().flatten().collect())
}

fn unavailable(group_id: kafka_protocol::messages::GroupId) -> OffsetFetchResponseGroup {
    OffsetFetchResponseGroup::default()
        .with_group_id(group_id)
        .with_error_code(ErrorCode::CoordinatorNotAvailable.code())
}
