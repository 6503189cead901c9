//! Topic changes, served by the controller shard only: validate, persist in the registry,
//! then broadcast the new image so every shard opens or drops its partitions.

use std::rc::Rc;
use std::sync::Arc;

use uuid::Uuid;

use super::messages::{ConfigEdit, ConfigOp, NewTopic, TopicChange, TopicRef};
use super::{Shard, ShardRequest, ShardResponse, CONTROLLER_SHARD};
use crate::errors::ErrorCode;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::{
    resolve_topic, validate_topic_name, TopicError, TopicRecord, TopicRegistry, MAX_PARTITIONS,
};

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
        let Some(registry) = &self.registry else {
            return Vec::new();
        };
        // One change at a time: each one's image must include the previous one's.
        let _serialized = self.topic_change_lock.lock().await;
        let (outcomes, changed) = {
            let mut registry = registry.borrow_mut();
            let mut changed = false;
            let outcomes: Vec<Outcome> = match change {
                TopicChange::Create {
                    topics,
                    validate_only,
                } => topics
                    .into_iter()
                    .map(|topic| {
                        let record = self.check_new_topic(&registry, topic)?;
                        persist(&mut registry, record, !validate_only, &mut changed)
                    })
                    .collect(),
                TopicChange::AddPartitions {
                    topics,
                    validate_only,
                } => topics
                    .into_iter()
                    .map(|(name, count)| {
                        let record = check_add_partitions(registry.get(&name), &name, count)?;
                        persist(&mut registry, record, !validate_only, &mut changed)
                    })
                    .collect(),
                TopicChange::AlterConfigs {
                    topics,
                    validate_only,
                } => topics
                    .into_iter()
                    .map(|(name, edit)| {
                        let record = self.check_config_edit(registry.get(&name), &name, edit)?;
                        persist(&mut registry, record, !validate_only, &mut changed)
                    })
                    .collect(),
                TopicChange::Delete(refs) => refs
                    .into_iter()
                    .map(|topic| {
                        let found = match &topic {
                            TopicRef::Name(name) => registry.get(name).cloned(),
                            TopicRef::Id(id) => registry.find_by_id(id).cloned(),
                        };
                        let record = found.ok_or_else(|| unknown_topic(&topic))?;
                        refuse_internal(&record.name)?;
                        registry.remove(&record.name).map_err(storage_error)?;
                        changed = true;
                        Ok(record)
                    })
                    .collect(),
            };
            (outcomes, changed)
        };
        if changed {
            let image = Arc::new(registry.borrow().image(&self.config));
            self.broadcast_image(image).await;
        }
        outcomes
    }

    fn check_new_topic(&self, registry: &TopicRegistry, topic: NewTopic) -> Outcome {
        validate_topic_name(&topic.name)?;
        if registry.get(&topic.name).is_some() {
            return Err(TopicError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic `{}` already exists", topic.name),
            ));
        }
        let partitions = match topic.partitions {
            -1 => self.config.num_partitions,
            n => n,
        };
        if !(1..=MAX_PARTITIONS).contains(&partitions) {
            return Err(TopicError::new(
                ErrorCode::InvalidPartitions,
                format!("{partitions} partitions requested; allowed 1..={MAX_PARTITIONS}"),
            ));
        }
        let replication_factor = match topic.replication_factor {
            -1 => self.config.default_replication_factor,
            n => n,
        };
        if replication_factor != 1 {
            return Err(TopicError::new(
                ErrorCode::InvalidReplicationFactor,
                format!(
                    "replication factor {replication_factor} is larger than the 1 available broker"
                ),
            ));
        }
        let record = TopicRecord {
            name: topic.name,
            id: Uuid::new_v4(),
            partitions,
            configs: topic.configs,
        };
        // Resolving checks every config name and value before anything is stored.
        Ok(resolve_topic(&self.config, record)?.record)
    }
}

/// Stores a checked topic record unless the request only validates.
fn persist(
    registry: &mut TopicRegistry,
    record: TopicRecord,
    store: bool,
    changed: &mut bool,
) -> Outcome {
    if store {
        registry.put(record.clone()).map_err(storage_error)?;
        *changed = true;
    }
    Ok(record)
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

impl Shard {
    /// Applies a config edit to a copy of the topic and validates the result.
    fn check_config_edit(
        &self,
        existing: Option<&TopicRecord>,
        name: &str,
        edit: ConfigEdit,
    ) -> Outcome {
        let mut record = existing
            .cloned()
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
        Ok(resolve_topic(&self.config, record)?.record)
    }
}

fn check_add_partitions(existing: Option<&TopicRecord>, name: &str, count: i32) -> Outcome {
    refuse_internal(name)?;
    let mut record = existing
        .cloned()
        .ok_or_else(|| unknown_topic(&TopicRef::Name(name.to_string())))?;
    if count <= record.partitions {
        return Err(TopicError::new(
            ErrorCode::InvalidPartitions,
            format!(
                "topic `{name}` has {} partitions; the new count must be larger, got {count}",
                record.partitions
            ),
        ));
    }
    if count > MAX_PARTITIONS {
        return Err(TopicError::new(
            ErrorCode::InvalidPartitions,
            format!("{count} partitions requested; at most {MAX_PARTITIONS}"),
        ));
    }
    record.partitions = count;
    Ok(record)
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

fn storage_error(e: std::io::Error) -> TopicError {
    tracing::error!("cannot persist topic registry: {e}");
    TopicError::new(
        ErrorCode::KafkaStorageError,
        format!("cannot persist topic metadata: {e}"),
    )
}
