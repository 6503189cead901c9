//! DescribeGroups: classic groups' state and members, from their coordinating shards.

use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::{
    DescribeGroupsRequest, DescribeGroupsResponse, GroupId, RequestKind, ResponseKind,
};

use super::{group_routing, str_bytes, RequestContext};
use crate::errors::ErrorCode;

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let include_operations = request.include_authorized_operations;
    let groups = group_routing::scatter(
        ctx,
        request.groups,
        |group| group.as_str(),
        |share| {
            RequestKind::DescribeGroups(
                DescribeGroupsRequest::default()
                    .with_groups(share)
                    .with_include_authorized_operations(include_operations),
            )
        },
        |response| match response {
            ResponseKind::DescribeGroups(response) => Some(response.groups),
            _ => None,
        },
        |group| {
            DescribedGroup::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code())
        },
    )
    .await;
    DescribeGroupsResponse::default().with_groups(groups)
}
