//! Topic changes: checked here (names, counts, every config value, which only brokers
//! know how to resolve), decided by the active controller, and answered once this broker
//! has applied the outcome. Served by the controller shard, which holds the cluster member.

use std::collections::BTreeMap;
use std::rc::Rc;

use corelog_replication::metadata::{
    ControllerError, ControllerRequest, ControllerResponse, NewTopic as ClusterTopic,
};

use super::messages::{ConfigEdit, ConfigOp, NewTopic, TopicChange, TopicRef};
use super::{Shard, ShardRequest, ShardResponse, CONTROLLER_SHARD};
use crate::errors::ErrorCode;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::{
    resolve_topic, validate_topic_name, MetadataImage, TopicError, TopicRecord, MAX_PARTITIONS,
};
use kafka_protocol::error::ParseResponseErrorCode;

type Outcome = Result<TopicRecord, TopicError>;

impl Shard {
    /// Asks the controller shard for a topic change, from any shard.
    pub async fn request_topic_change(self: &Rc<Self>, change: TopicChange) -> Vec<Outcome> {
        match self
            .on_shard(CONTROLLER_SHARD, ShardRequest::ChangeTopics(change))
            .await
        {
            ShardResponse::TopicsChanged(outcomes) => outcomes,
            _ => Vec::new(),
        }
    }

    pub(super) async fn change_topics(self: &Rc<Self>, change: TopicChange) -> Vec<Outcome> {
        let Some(member) = self.cluster.get() else {
            return Vec::new();
        };
        let image = self.image();
        // Items refused here keep their place; the rest go to the controller in one request.
        let (checked, request): (Vec<Result<usize, TopicError>>, ControllerRequest) = match change {
            TopicChange::Create {
                topics,
                validate_only,
            } => {
                let mut sent = Vec::new();
                let checked = topics
                    .into_iter()
                    .map(|topic| {
                        let topic = self.check_new_topic(topic)?;
                        sent.push(topic);
                        Ok(sent.len() - 1)
                    })
                    .collect();
                (
                    checked,
                    ControllerRequest::CreateTopics {
                        topics: sent,
                        validate_only,
                    },
                )
            }
            TopicChange::AddPartitions {
                topics,
                validate_only,
            } => {
                let mut sent = Vec::new();
                let checked = topics
                    .into_iter()
                    .map(|(name, count, assignments)| {
                        refuse_internal(&name)?;
                        if count > MAX_PARTITIONS {
                            return Err(TopicError::new(
                                ErrorCode::InvalidPartitions,
                                format!("{count} partitions requested; at most {MAX_PARTITIONS}"),
                            ));
                        }
                        sent.push((name, count, assignments));
                        Ok(sent.len() - 1)
                    })
                    .collect();
                (
                    checked,
                    ControllerRequest::CreatePartitions {
                        topics: sent,
                        validate_only,
                    },
                )
            }
            TopicChange::AlterConfigs {
                topics,
                validate_only,
            } => {
                let mut sent = Vec::new();
                let checked = topics
                    .into_iter()
                    .map(|(name, edit)| {
                        let configs = self.check_config_edit(&image, &name, edit)?;
                        sent.push((name, configs));
                        Ok(sent.len() - 1)
                    })
                    .collect();
                (
                    checked,
                    ControllerRequest::AlterConfigs {
                        topics: sent,
                        validate_only,
                    },
                )
            }
            TopicChange::Delete(refs) => {
                let mut sent = Vec::new();
                let checked = refs
                    .into_iter()
                    .map(|topic| {
                        let found = match &topic {
                            TopicRef::Name(name) => image.topic(name),
                            TopicRef::Id(id) => image.topic_by_id(id),
                        };
                        let meta = found.ok_or_else(|| unknown_topic(&topic))?;
                        refuse_internal(&meta.record.name)?;
                        sent.push(meta.record.name.clone());
                        Ok(sent.len() - 1)
                    })
                    .collect();
                (checked, ControllerRequest::DeleteTopics { names: sent })
            }
        };
        let validate_only = matches!(
            request,
            ControllerRequest::CreateTopics {
                validate_only: true,
                ..
            } | ControllerRequest::CreatePartitions {
                validate_only: true,
                ..
            } | ControllerRequest::AlterConfigs {
                validate_only: true,
                ..
            }
        );
        let decided = member.request(request.clone()).await;
        // Answer once every shard serves the outcome: the client may use it at once.
        self.wait_published(member.quorum.applied_index()).await;
        let after = self.image();
        let results: Vec<Outcome> = match decided {
            Err(error) => checked.iter().map(|_| Err(error.clone())).collect(),
            Ok(response) => outcomes(&request, response, &image, &after, validate_only),
        };
        checked
            .into_iter()
            .map(|item| {
                item.and_then(|position| {
                    results.get(position).cloned().unwrap_or_else(|| {
                        Err(TopicError::new(
                            ErrorCode::UnknownServerError,
                            "the controller's answer lacks this topic",
                        ))
                    })
                })
            })
            .collect()
    }

    /// Name, partition count and configs: what the controller cannot judge.
    fn check_new_topic(&self, topic: NewTopic) -> Result<ClusterTopic, TopicError> {
        validate_topic_name(&topic.name)?;
        let partitions = match topic.partitions {
            -1 if topic.assignments.is_none() => self.config.num_partitions,
            n => n,
        };
        if topic.assignments.is_none() && !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("{partitions} partitions requested; allowed 1..={MAX_PARTITIONS}"),
            ));
        }
        // Resolving checks every config name and value before anything is stored.
        resolve_topic(
            &self.config,
            TopicRecord {
                name: topic.name.clone(),
                id: uuid::Uuid::nil(),
                partitions: partitions.max(1),
                replication_factor: 0,
                configs: topic.configs.clone(),
            },
        )?;
        Ok(ClusterTopic {
            name: topic.name,
            partitions: if topic.assignments.is_some() {
                -1
            } else {
                partitions
            },
            replication_factor: topic.replication_factor,
            assignments: topic.assignments,
            configs: topic.configs,
        })
    }

    /// Applies a config edit to the topic's current overrides and validates the result.
    fn check_config_edit(
        &self,
        image: &MetadataImage,
        name: &str,
        edit: ConfigEdit,
    ) -> Result<BTreeMap<String, String>, TopicError> {
        let mut record = image
            .topic(name)
            .map(|meta| meta.record.clone())
            .ok_or_else(|| unknown_topic(&TopicRef::Name(name.to_string())))?;
        refuse_internal(name)?;
        match edit {
            ConfigEdit::Replace(configs) => record.configs = configs,
            ConfigEdit::Incremental(ops) => {
                for op in ops {
                    match op {
                        ConfigOp::Set(key, value) => {
                            record.configs.insert(key, value);
                        }
                        ConfigOp::Delete(key) => {
                            record.configs.remove(&key);
                        }
                    }
                }
            }
        }
        Ok(resolve_topic(&self.config, record)?.record.configs)
    }
}

/// Each item's outcome, in the order the request listed them, as the topic now stands
/// (`after`), or as it would (validate-only).
fn outcomes(
    request: &ControllerRequest,
    response: ControllerResponse,
    before: &MetadataImage,
    after: &MetadataImage,
    validate_only: bool,
) -> Vec<Outcome> {
    let current = |name: &str| -> Outcome {
        after
            .topic(name)
            .map(|meta| meta.record.clone())
            .ok_or_else(|| unknown_topic(&TopicRef::Name(name.to_string())))
    };
    let refused = |e: ControllerError| -> TopicError {
        TopicError::new(
            e.code.err().unwrap_or(ErrorCode::UnknownServerError),
            e.message,
        )
    };
    match (request, response) {
        (
            ControllerRequest::CreateTopics { topics, .. },
            ControllerResponse::CreateTopics(results),
        ) => topics
            .iter()
            .zip(results)
            .map(|(topic, (_, result))| {
                let created = result.map_err(refused)?;
                if validate_only {
                    return Ok(TopicRecord {
                        name: topic.name.clone(),
                        id: created.id,
                        partitions: created.partitions,
                        replication_factor: created.replication_factor,
                        configs: topic.configs.clone(),
                    });
                }
                current(&topic.name)
            })
            .collect(),
        (
            ControllerRequest::CreatePartitions { topics, .. },
            ControllerResponse::CreatePartitions(results),
        ) => topics
            .iter()
            .zip(results)
            .map(|((name, count, _), (_, result))| {
                result.map_err(refused)?;
                let mut record = current(name)?;
                if validate_only {
                    record.partitions = *count;
                }
                Ok(record)
            })
            .collect(),
        (
            ControllerRequest::AlterConfigs { topics, .. },
            ControllerResponse::AlterConfigs(results),
        ) => topics
            .iter()
            .zip(results)
            .map(|((name, configs), (_, result))| {
                result.map_err(refused)?;
                let mut record = current(name)?;
                record.configs = configs.clone();
                Ok(record)
            })
            .collect(),
        (ControllerRequest::DeleteTopics { names }, ControllerResponse::DeleteTopics(results)) => {
            names
                .iter()
                .zip(results)
                .map(|(name, (_, result))| {
                    result.map_err(refused)?;
                    before
                        .topic(name)
                        .map(|meta| meta.record.clone())
                        .ok_or_else(|| unknown_topic(&TopicRef::Name(name.clone())))
                })
                .collect()
        }
        (_, other) => {
            tracing::error!("controller answered {other:?} to a topic change");
            Vec::new()
        }
    }
}

/// The offsets topic maps groups to partitions by count: it may be neither deleted nor
/// grown.
fn refuse_internal(name: &str) -> Result<(), TopicError> {
    if name == OFFSETS_TOPIC {
        return Err(TopicError::new(
            ErrorCode::InvalidTopicException,
            format!("{OFFSETS_TOPIC} is an internal topic"),
        ));
    }
    Ok(())
}

fn unknown_topic(topic: &TopicRef) -> TopicError {
    match topic {
        TopicRef::Name(name) => TopicError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("topic `{name}` does not exist"),
        ),
        TopicRef::Id(id) => TopicError::new(
            ErrorCode::UnknownTopicId,
            format!("topic id {id} does not exist"),
        ),
    }
}
