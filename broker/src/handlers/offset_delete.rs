//! OffsetDelete: removes a group's offsets for topics its members do not consume.

use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse, RequestKind};

use super::{group_routing, RequestContext};

pub async fn handle(ctx: &RequestContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = request.group_id.to_string();
    group_routing::forward(ctx, &group, RequestKind::OffsetDelete(request)).await
}
