//! DeleteGroups: removes empty groups and their committed offsets.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, GroupId, RequestKind, ResponseKind,
};

use super::{group_routing, str_bytes, RequestContext};
use crate::errors::ErrorCode;

pub async fn handle(ctx: &RequestContext, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let results = group_routing::scatter(
        ctx,
        request.groups_names,
        |group| group.as_str(),
        |share| RequestKind::DeleteGroups(DeleteGroupsRequest::default().with_groups_names(share)),
        |response| match response {
            ResponseKind::DeleteGroups(response) => Some(response.results),
            _ => None,
        },
        |group| {
            DeletableGroupResult::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code())
        },
    )
    .await;
    DeleteGroupsResponse::default().with_results(results)
}
