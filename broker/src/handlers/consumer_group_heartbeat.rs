//! ConsumerGroupHeartbeat (KIP-848): join, stay and reconcile in a consumer group.

use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, RequestKind,
};

use super::{group_routing, RequestContext};

pub async fn handle(
    ctx: &RequestContext,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let group = request.group_id.to_string();
    group_routing::forward(ctx, &group, RequestKind::ConsumerGroupHeartbeat(request)).await
}
