//! Heartbeat: keeps a classic group member's session alive.

use kafka_protocol::messages::{HeartbeatRequest, HeartbeatResponse, RequestKind};

use super::{group_routing, RequestContext};

pub async fn handle(ctx: &RequestContext, request: HeartbeatRequest) -> HeartbeatResponse {
    let group = request.group_id.to_string();
    group_routing::forward(ctx, &group, RequestKind::Heartbeat(request)).await
}
