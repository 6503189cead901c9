//! DeleteTopics, by name (v1-v5) or by name or id (v6).

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse, TopicName};

use super::{str_bytes, RequestContext};
use crate::shard::{TopicChange, TopicRef};

pub async fn handle(ctx: &RequestContext, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let refs: Vec<TopicRef> = if request.topics.is_empty() {
        request
            .topic_names
            .iter()
            .map(|name| TopicRef::Name(name.to_string()))
            .collect()
    } else {
        request
            .topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => TopicRef::Name(name.to_string()),
                None => TopicRef::Id(t.topic_id),
            })
            .collect()
    };
    let outcomes = ctx
        .shard
        .request_topic_change(TopicChange::Delete(refs.clone()))
        .await;
    let responses = refs
        .into_iter()
        .zip(outcomes)
        .map(|(asked, outcome)| {
            let (name, id) = match asked {
                TopicRef::Name(name) => (Some(name), uuid::Uuid::nil()),
                TopicRef::Id(id) => (None, id),
            };
            let result = DeletableTopicResult::default()
                .with_name(name.map(|n| TopicName(str_bytes(n))))
                .with_topic_id(id);
            match outcome {
                Ok(record) => result
                    .with_name(Some(TopicName(str_bytes(record.name))))
                    .with_topic_id(record.id),
                Err(error) => result
                    .with_error_code(error.code.code())
                    .with_error_message(Some(str_bytes(error.message))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
