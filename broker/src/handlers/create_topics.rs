//! CreateTopics, including validate_only and per-topic configs.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::{CreateTopicsRequest, CreateTopicsResponse};

use super::describe_configs::topic_config_entries;
use super::{str_bytes, RequestContext};
use crate::errors::ErrorCode;
use crate::metadata::{resolve_topic, TopicError};
use crate::shard::{NewTopic, TopicChange};

pub async fn handle(ctx: &RequestContext, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let shard = &ctx.shard;
    let mut refused: Vec<Option<TopicError>> = Vec::with_capacity(request.topics.len());
    let mut topics = Vec::with_capacity(request.topics.len());
    for topic in &request.topics {
        let mut configs = BTreeMap::new();
        let mut error = None;
        for config in &topic.configs {
            match &config.value {
                Some(value) => {
                    configs.insert(config.name.to_string(), value.to_string());
                }
                None => {
                    error = Some(TopicError::new(
                        ErrorCode::InvalidConfig,
                        format!("config {} has a null value", config.name.as_str()),
                    ))
                }
            }
        }
        // Explicit assignments are checked against the brokers by the controller.
        let assignments = (!topic.assignments.is_empty()).then(|| {
            topic
                .assignments
                .iter()
                .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                .collect()
        });
        if assignments.is_some() && (topic.num_partitions != -1 || topic.replication_factor != -1) {
            error = Some(TopicError::new(
                ErrorCode::InvalidRequest,
                "assignments require num_partitions and replication_factor of -1",
            ));
        }
        refused.push(error);
        topics.push(NewTopic {
            name: topic.name.to_string(),
            partitions: topic.num_partitions,
            replication_factor: topic.replication_factor,
            assignments,
            configs,
        });
    }
    // Topics refused here are not sent; the rest go to the controller shard in one change.
    let to_create: Vec<NewTopic> = topics
        .into_iter()
        .zip(&refused)
        .filter(|(_, error)| error.is_none())
        .map(|(topic, _)| topic)
        .collect();
    let mut outcomes = shard
        .request_topic_change(TopicChange::Create {
            topics: to_create,
            validate_only: request.validate_only,
        })
        .await
        .into_iter();
    let results = request
        .topics
        .into_iter()
        .zip(refused)
        .map(|(topic, refused)| {
            let outcome = match refused {
                Some(error) => Err(error),
                None => outcomes.next().unwrap_or_else(|| {
                    Err(TopicError::new(
                        ErrorCode::RequestTimedOut,
                        "controller unavailable",
                    ))
                }),
            };
            match outcome {
                Ok(record) => {
                    let resolved = resolve_topic(&shard.config, record)
                        .expect("the controller checked the configs");
                    let configs = topic_config_entries(&shard.config, &resolved, None)
                        .into_iter()
                        .map(|entry| {
                            CreatableTopicConfigs::default()
                                .with_name(entry.name)
                                .with_value(entry.value)
                                .with_read_only(entry.read_only)
                                .with_config_source(entry.config_source)
                                .with_is_sensitive(false)
                        })
                        .collect();
                    CreatableTopicResult::default()
                        .with_name(topic.name)
                        .with_topic_id(resolved.record.id)
                        .with_num_partitions(resolved.record.partitions)
                        .with_replication_factor(resolved.record.replication_factor)
                        .with_configs(Some(configs))
                }
                Err(error) => CreatableTopicResult::default()
                    .with_name(topic.name)
                    .with_error_code(error.code.code())
                    .with_error_message(Some(str_bytes(error.message)))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(results)
}
