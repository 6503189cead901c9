//! FindCoordinator: a group's coordinator is the leader of the `__consumer_offsets`
//! partition keeping it. Transactions are not served yet, so transaction keys get an error.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext};
use crate::errors::ErrorCode;
use crate::group::offsets::OFFSETS_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;
/// FindCoordinator v4 (KIP-699) batches keys.
const FIRST_BATCHED_VERSION: i16 = 4;

pub async fn handle(
    ctx: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let image = ctx.shard.image();
    let answer = |key: StrBytes| -> Coordinator {
        let coordinator = Coordinator::default().with_key(key.clone());
        if request.key_type != KEY_TYPE_GROUP {
            return coordinator
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code())
                .with_error_message(Some(str_bytes("transactions are not supported yet")));
        }
        let leader = ctx
            .shard
            .group_partition(key.as_str())
            .and_then(|partition| image.topic(OFFSETS_TOPIC)?.partition(partition))
            .and_then(|state| image.broker(state.leader));
        match leader {
            Some(broker) => coordinator
                .with_node_id(BrokerId(broker.id))
                .with_host(str_bytes(broker.kafka.host.clone()))
                .with_port(broker.kafka.port as i32),
            None => coordinator
                .with_node_id(BrokerId(-1))
                .with_port(-1)
                .with_error_code(ErrorCode::CoordinatorNotAvailable.code())
                .with_error_message(Some(str_bytes(
                    "the group's offsets partition has no leader yet",
                ))),
        }
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
