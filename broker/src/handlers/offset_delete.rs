//! OffsetDelete: removes a group's offsets for topics its members do not consume.

use kafka_protocol::messages::{
    OffsetDeleteRequest, OffsetDeleteResponse, RequestKind, ResponseKind,
};

use super::{group_routing, RequestContext};
use crate::errors::ErrorCode;

pub async fn handle(ctx: &RequestContext, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = request.group_id.to_string();
    match group_routing::forward(ctx, &group, RequestKind::OffsetDelete(request)).await {
        Ok(ResponseKind::OffsetDelete(response)) => response,
        _ => OffsetDeleteResponse::default()
            .with_error_code(ErrorCode::CoordinatorNotAvailable.code()),
    }
}
