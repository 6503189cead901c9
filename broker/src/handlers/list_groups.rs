//! ListGroups: every shard lists the groups it coordinates.

use kafka_protocol::messages::{ListGroupsRequest, ListGroupsResponse, RequestKind, ResponseKind};

use super::{group_routing, RequestContext};

pub async fn handle(ctx: &RequestContext, request: ListGroupsRequest) -> ListGroupsResponse {
    let shards = 0..ctx.shard.count;
    let calls = shards.map(|shard| {
        group_routing::forward_to(ctx, shard, RequestKind::ListGroups(request.clone()))
    });
    let mut response = ListGroupsResponse::default();
    for answer in futures::future::join_all(calls).await {
        match answer {
            Some(ResponseKind::ListGroups(listed)) => response.groups.extend(listed.groups),
            _ => response.error_code = crate::errors::ErrorCode::CoordinatorNotAvailable.code(),
        }
    }
    response
}
