//! SyncGroup: the leader hands out assignments; members receive theirs.

use kafka_protocol::messages::{RequestKind, SyncGroupRequest, SyncGroupResponse};

use super::{group_routing, RequestContext};

pub async fn handle(ctx: &RequestContext, request: SyncGroupRequest) -> SyncGroupResponse {
    let group = request.group_id.to_string();
    group_routing::forward(ctx, &group, RequestKind::SyncGroup(request)).await
}
