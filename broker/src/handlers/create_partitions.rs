//! CreatePartitions: grows topics; new partitions open on their owning shards.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, RequestContext};
use crate::errors::ErrorCode;
use crate::shard::TopicChange;

pub async fn handle(
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let node_id = ctx.shard.config.node_id;
    let bad_assignment =
        |topic: &kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic| {
            topic.assignments.as_ref().is_some_and(|list| {
                list.iter()
                    .any(|a| a.broker_ids.len() != 1 || a.broker_ids[0].0 != node_id)
            })
        };
    let to_grow: Vec<(String, i32)> = request
        .topics
        .iter()
        .filter(|t| !bad_assignment(t))
        .map(|t| (t.name.to_string(), t.count))
        .collect();
    let mut outcomes = ctx
        .shard
        .request_topic_change(TopicChange::AddPartitions {
            topics: to_grow,
            validate_only: request.validate_only,
        })
        .await
        .into_iter();
    let results = request
        .topics
        .iter()
        .map(|topic| {
            let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            if bad_assignment(topic) {
                return result
                    .with_error_code(ErrorCode::InvalidReplicaAssignment.code())
                    .with_error_message(Some(str_bytes(format!(
                        "assignments may only name broker {node_id}, once"
                    ))));
            }
            match outcomes.next() {
                Some(Ok(_)) => result,
                Some(Err(error)) => result
                    .with_error_code(error.code.code())
                    .with_error_message(Some(str_bytes(error.message))),
                None => result.with_error_code(ErrorCode::RequestTimedOut.code()),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}
