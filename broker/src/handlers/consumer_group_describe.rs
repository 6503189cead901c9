//! ConsumerGroupDescribe (KIP-848): consumer groups' epochs, members and assignments.

use kafka_protocol::messages::consumer_group_describe_response::DescribedGroup;
use kafka_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, GroupId, RequestKind, ResponseKind,
};

use super::{group_routing, str_bytes, RequestContext};
use crate::errors::ErrorCode;

pub async fn handle(
    ctx: &RequestContext,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    let include_operations = request.include_authorized_operations;
    let groups = group_routing::scatter(
        ctx,
        request.group_ids,
        |group| group.as_str(),
        |share| {
            RequestKind::ConsumerGroupDescribe(
                ConsumerGroupDescribeRequest::default()
                    .with_group_ids(share)
                    .with_include_authorized_operations(include_operations),
            )
        },
        |response| match response {
            ResponseKind::ConsumerGroupDescribe(response) => Some(response.groups),
            _ => None,
        },
        |group| {
            DescribedGroup::default()
                .with_group_id(GroupId(str_bytes(group)))
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code())
        },
    )
    .await;
    ConsumerGroupDescribeResponse::default().with_groups(groups)
}
