//! OffsetFetch: one group (v0-7) or several (v8+), each answered by its coordinating shard.

use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::{
    GroupId, OffsetFetchRequest, OffsetFetchResponse, RequestKind, ResponseKind,
};

use super::{group_routing, str_bytes, RequestContext};
use crate::errors::ErrorCode;

/// OffsetFetch v8 (KIP-709) asks for several groups at once.
const FIRST_MULTI_GROUP_VERSION: i16 = 8;

pub async fn handle(ctx: &RequestContext, mut request: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.api_version < FIRST_MULTI_GROUP_VERSION {
        let group = request.group_id.to_string();
        return group_routing::forward(ctx, &group, RequestKind::OffsetFetch(request)).await;
    }
    let require_stable = request.require_stable;
    let groups = group_routing::scatter(
        ctx,
        std::mem::take(&mut request.groups),
        |group| group.group_id.as_str(),
        |share| {
            RequestKind::OffsetFetch(
                OffsetFetchRequest::default()
                    .with_groups(share)
                    .with_require_stable(require_stable),
            )
        },
        |response| match response {
            ResponseKind::OffsetFetch(response) => Some(response.groups),
            _ => None,
        },
        |group| {
            OffsetFetchResponseGroup::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code())
        },
    )
    .await;
    OffsetFetchResponse::default().with_groups(groups)
}
