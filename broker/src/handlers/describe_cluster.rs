//! DescribeCluster: the live brokers and the active controller, as admin clients see the
//! cluster.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use super::{str_bytes, RequestContext};
use crate::errors::ErrorCode;

/// KIP-919's endpoint types: 1 = brokers, 2 = controllers (we are both).
const ENDPOINT_BROKERS: i8 = 1;

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let image = ctx.shard.image();
    let brokers = image
        .cluster
        .live_brokers()
        .map(|broker| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.id))
                .with_host(str_bytes(broker.kafka.host.clone()))
                .with_port(broker.kafka.port as i32)
                .with_rack(broker.rack.clone().map(str_bytes))
        })
        .collect();
    let response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(ctx.shard.cluster_id()))
        .with_controller_id(BrokerId(image.controller_id.unwrap_or(-1)))
        .with_endpoint_type(request.endpoint_type.max(ENDPOINT_BROKERS))
        .with_brokers(brokers);
    if request.endpoint_type > 2 {
        return response
            .with_error_code(ErrorCode::UnsupportedEndpointType.code())
            .with_error_message(Some(str_bytes(format!(
                "endpoint type {} is unknown",
                request.endpoint_type
            ))));
    }
    response
}
