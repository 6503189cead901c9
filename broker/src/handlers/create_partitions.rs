//! CreatePartitions: grows topics, with explicit replicas for the new partitions or the
//! controller's placement; new partitions open on their owning shards.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::{CreatePartitionsRequest, CreatePartitionsResponse};

use super::{str_bytes, RequestContext};
use crate::errors::ErrorCode;
use crate::shard::TopicChange;

pub async fn handle(
    ctx: &RequestContext,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let to_grow: Vec<(
        String,
        i32,
        Option<corelog_replication::metadata::Assignment>,
    )> = request
        .topics
        .iter()
        .map(|t| {
            // Some clients send an empty list for "no assignments".
            let assignments = t
                .assignments
                .as_ref()
                .filter(|l| !l.is_empty())
                .map(|list| {
                    list.iter()
                        .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                        .collect()
                });
            (t.name.to_string(), t.count, assignments)
        })
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
