//! LeaveGroup: members leave a classic group (batched from v3).

use kafka_protocol::messages::{LeaveGroupRequest, LeaveGroupResponse, RequestKind};

use super::{group_routing, RequestContext};

pub async fn handle(ctx: &RequestContext, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let group = request.group_id.to_string();
    group_routing::forward(ctx, &group, RequestKind::LeaveGroup(request)).await
}
