//! DescribeCluster: this single node, as the admin clients' cluster view.

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
    let config = &ctx.shard.config;
    let response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(ctx.shard.cluster_id.to_string()))
        .with_controller_id(BrokerId(config.node_id))
        .with_endpoint_type(request.endpoint_type.max(ENDPOINT_BROKERS))
        .with_brokers(vec![DescribeClusterBroker::default()
            .with_broker_id(BrokerId(config.node_id))
            .with_host(str_bytes(config.advertised_host.clone()))
            .with_port(config.advertised_port as i32)]);
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
