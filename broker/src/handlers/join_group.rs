//! JoinGroup: joins a classic group; answered when the rebalance completes.

use kafka_protocol::messages::{JoinGroupRequest, JoinGroupResponse, RequestKind};

use super::{group_routing, RequestContext};

pub async fn handle(ctx: &RequestContext, request: JoinGroupRequest) -> JoinGroupResponse {
    let group = request.group_id.to_string();
    group_routing::forward(ctx, &group, RequestKind::JoinGroup(request)).await
}
