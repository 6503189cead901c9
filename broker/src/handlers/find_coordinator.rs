//! FindCoordinator: this broker coordinates every group (the coordinating shard is found
//! internally). Transactions are not served yet, so transaction keys get an error.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext};
use crate::errors::ErrorCode;

const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator v4 (KIP-699) batches keys.
const FIRST_BATCHED_VERSION: i16 = 4;

pub async fn handle(
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let config = &ctx.shard.config;
    let answer = |key: StrBytes| -> Coordinator {
        let coordinator = Coordinator::default().with_key(key);
        if request.key_type != KEY_TYPE_GROUP {
            return coordinator
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code())
                .with_error_message(Some(str_bytes("transactions are not supported yet")));
        }
        coordinator
            .with_node_id(BrokerId(config.node_id))
            .with_host(str_bytes(config.advertised_host.clone()))
            .with_port(config.advertised_port as i32)
    };
    if ctx.api_version >= FIRST_BATCHED_VERSION {
        let coordinators = request
            .coordinator_keys
            .iter()
            .cloned()
            .map(answer)
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    // Before v4 the single answer sits in the top-level fields.
    let single = answer(request.key.clone());
    FindCoordinatorResponse::default()
        .with_error_code(single.error_code)
        .with_error_message(single.error_message)
        .with_node_id(single.node_id)
        .with_host(single.host)
        .with_port(single.port)
}
