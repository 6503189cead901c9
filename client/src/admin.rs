//! Topic, config and cluster administration, and offsets by time.

use std::collections::BTreeMap;

use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use uuid::Uuid;

use crate::client::{BrokerInfo, Client};
use crate::error::{check, Error, Result};

/// How long the broker may take over a topic change before answering.
const ADMIN_TIMEOUT_MS: i32 = 30_000;

/// Kafka's config resource type of topics.
const TOPIC_RESOURCE: i8 = 2;

/// ListOffsets timestamps with special meanings.
pub const EARLIEST: i64 = -2;
pub const LATEST: i64 = -1;

pub struct NewTopic {
    pub name: String,
    /// -1: the broker's default.
    pub partitions: i32,
    /// -1: the broker's default.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

#[derive(Debug, Serialize)]
pub struct CreatedTopic {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub validate_only: bool,
}

#[derive(Debug, Serialize)]
pub struct ConfigEntry {
    pub name: String,
    pub value: Option<String>,
    /// Kafka's name of where the value comes from (`DYNAMIC_TOPIC_CONFIG`, ...).
    pub source: &'static str,
    pub read_only: bool,
    pub sensitive: bool,
}

#[derive(Debug, Serialize)]
pub struct ClusterDescription {
    pub cluster_id: String,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
}

/// A change to one topic config, as IncrementalAlterConfigs applies it.
pub enum ConfigChange {
    Set(String, String),
    Delete(String),
}

/// One answer of ListOffsets.
#[derive(Clone, Debug, Serialize)]
pub struct PartitionOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
}

/// A topic name or group id with the outcome of an operation on it.
pub type Outcomes = Vec<(String, Result<()>)>;

fn name(text: &str) -> TopicName {
    TopicName(StrBytes::from_string(text.to_string()))
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

impl Client {
    pub fn create_topic(&mut self, topic: &NewTopic, validate_only: bool) -> Result<CreatedTopic> {
        let configs = topic
            .configs
            .iter()
            .map(|(key, value)| {
                create_topics_request::CreatableTopicConfig::default()
                    .with_name(text(key))
                    .with_value(Some(text(value)))
            })
            .collect();
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_validate_only(validate_only)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(name(&topic.name))
                .with_num_partitions(topic.partitions)
                .with_replication_factor(topic.replication_factor)
                .with_configs(configs)]);
        let response = self.bootstrap().request(2.., |_| request)?;
        self.forget_topics();
        let result = response
            .topics
            .into_iter()
            .find(|t| t.name.as_str() == topic.name)
            .ok_or_else(|| missing("CreateTopics", &topic.name))?;
        check(result.error_code, result.error_message.as_ref(), || {
            format!("create topic {}", topic.name)
        })?;
        Ok(CreatedTopic {
            name: topic.name.clone(),
            topic_id: result.topic_id,
            partitions: result.num_partitions,
            replication_factor: result.replication_factor,
            validate_only,
        })
    }

    pub fn delete_topics(&mut self, names: &[String]) -> Result<Outcomes> {
        let response = self.bootstrap().request(1.., |version| {
            let request = DeleteTopicsRequest::default().with_timeout_ms(ADMIN_TIMEOUT_MS);
            // v6 names topics in a struct that may carry an id instead.
            if version >= 6 {
                request.with_topics(
                    names
                        .iter()
                        .map(|n| {
                            delete_topics_request::DeleteTopicState::default()
                                .with_name(Some(name(n)))
                        })
                        .collect(),
                )
            } else {
                request.with_topic_names(names.iter().map(|n| name(n)).collect())
            }
        })?;
        self.forget_topics();
        Ok(names
            .iter()
            .map(|topic| {
                let outcome = response
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|n| n.as_str() == topic))
                    .ok_or_else(|| missing("DeleteTopics", topic))
                    .and_then(|r| {
                        check(r.error_code, r.error_message.as_ref(), || {
                            format!("delete topic {topic}")
                        })
                    });
                (topic.clone(), outcome)
            })
            .collect())
    }

    /// Grows a topic to `total` partitions.
    pub fn create_partitions(&mut self, topic: &str, total: i32) -> Result<()> {
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(ADMIN_TIMEOUT_MS)
            .with_topics(vec![
                create_partitions_request::CreatePartitionsTopic::default()
                    .with_name(name(topic))
                    .with_count(total),
            ]);
        let response = self.bootstrap().request(.., |_| request)?;
        self.forget_topics();
        let result = response
            .results
            .iter()
            .find(|r| r.name.as_str() == topic)
            .ok_or_else(|| missing("CreatePartitions", topic))?;
        check(result.error_code, result.error_message.as_ref(), || {
            format!("add partitions to {topic}")
        })
    }

    pub fn describe_topic_configs(&mut self, topic: &str) -> Result<Vec<ConfigEntry>> {
        let request = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(text(topic))
                .with_configuration_keys(None),
        ]);
        let response = self.bootstrap().request(1.., |_| request)?;
        let result = response
            .results
            .into_iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| missing("DescribeConfigs", topic))?;
        check(result.error_code, result.error_message.as_ref(), || {
            format!("describe configs of topic {topic}")
        })?;
        Ok(result
            .configs
            .into_iter()
            .map(|c| ConfigEntry {
                name: c.name.to_string(),
                value: c.value.map(|v| v.to_string()),
                source: config_source_name(c.config_source),
                read_only: c.read_only,
                sensitive: c.is_sensitive,
            })
            .collect())
    }

    /// Sets and deletes topic config overrides with IncrementalAlterConfigs.
    pub fn alter_topic_configs(&mut self, topic: &str, changes: &[ConfigChange]) -> Result<()> {
        let configs = changes
            .iter()
            .map(|change| {
                let config = incremental_alter_configs_request::AlterableConfig::default();
                match change {
                    ConfigChange::Set(key, value) => config
                        .with_name(text(key))
                        .with_config_operation(0)
                        .with_value(Some(text(value))),
                    ConfigChange::Delete(key) => {
                        config.with_name(text(key)).with_config_operation(1)
                    }
                }
            })
            .collect();
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(TOPIC_RESOURCE)
                .with_resource_name(text(topic))
                .with_configs(configs),
        ]);
        let response = self.bootstrap().request(.., |_| request)?;
        let result = response
            .responses
            .iter()
            .find(|r| r.resource_name.as_str() == topic)
            .ok_or_else(|| missing("IncrementalAlterConfigs", topic))?;
        check(result.error_code, result.error_message.as_ref(), || {
            format!("alter configs of topic {topic}")
        })
    }

    /// ListOffsets for `(topic, partition, timestamp)` queries, each sent to the leader of
    /// its partition. Answers come in the order of the queries.
    pub fn list_offsets(&mut self, queries: &[(String, i32, i64)]) -> Result<Vec<PartitionOffset>> {
        let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
        for (i, (topic, partition, _)) in queries.iter().enumerate() {
            by_leader
                .entry(self.leader(topic, *partition)?)
                .or_default()
                .push(i);
        }
        let mut answers = vec![None; queries.len()];
        for (leader, indexes) in by_leader {
            let asked: Vec<&(String, i32, i64)> = indexes.iter().map(|&i| &queries[i]).collect();
            let found = self.with_node(leader, |node| list_offsets_on(node, &asked))?;
            for (i, answer) in indexes.into_iter().zip(found) {
                answers[i] = Some(answer);
            }
        }
        Ok(answers.into_iter().flatten().collect())
    }

    pub fn describe_cluster(&mut self) -> Result<ClusterDescription> {
        let response = self
            .bootstrap()
            .request(.., |_| DescribeClusterRequest::default())?;
        check(response.error_code, response.error_message.as_ref(), || {
            "describe cluster".into()
        })?;
        Ok(ClusterDescription {
            cluster_id: response.cluster_id.to_string(),
            controller_id: response.controller_id.0,
            brokers: response
                .brokers
                .into_iter()
                .map(|b| BrokerInfo {
                    node_id: b.broker_id.0,
                    host: b.host.to_string(),
                    port: b.port,
                    rack: b.rack.map(|r| r.to_string()),
                })
                .collect(),
        })
    }
}

/// One ListOffsets request to one broker for `queries`; answers in query order.
fn list_offsets_on(
    node: &mut crate::Connection,
    queries: &[&(String, i32, i64)],
) -> Result<Vec<PartitionOffset>> {
    let mut topics: Vec<list_offsets_request::ListOffsetsTopic> = Vec::new();
    for (topic, partition, timestamp) in queries.iter().copied() {
        let partition = list_offsets_request::ListOffsetsPartition::default()
            .with_partition_index(*partition)
            .with_timestamp(*timestamp);
        match topics.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(entry) => entry.partitions.push(partition),
            None => topics.push(
                list_offsets_request::ListOffsetsTopic::default()
                    .with_name(name(topic))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(topics);
    let response = node.request(1.., |_| request)?;
    queries
        .iter()
        .map(|(topic, partition, _)| {
            let answer = response
                .topics
                .iter()
                .filter(|t| t.name.as_str() == topic)
                .flat_map(|t| &t.partitions)
                .find(|p| p.partition_index == *partition)
                .ok_or_else(|| missing("ListOffsets", &format!("{topic}-{partition}")))?;
            check(answer.error_code, None, || {
                format!("list offsets of {topic}-{partition}")
            })?;
            Ok(PartitionOffset {
                topic: topic.clone(),
                partition: *partition,
                offset: answer.offset,
                timestamp: answer.timestamp,
            })
        })
        .collect()
}

/// An answer that leaves out what was asked about.
pub(crate) fn missing(api: &str, what: &str) -> Error {
    Error::Invalid(format!("the {api} answer says nothing about {what}"))
}

/// Kafka's `ConfigSource` names.
fn config_source_name(source: i8) -> &'static str {
    match source {
        1 => "DYNAMIC_TOPIC_CONFIG",
        2 => "DYNAMIC_BROKER_CONFIG",
        3 => "DYNAMIC_DEFAULT_BROKER_CONFIG",
        4 => "STATIC_BROKER_CONFIG",
        5 => "DEFAULT_CONFIG",
        6 => "DYNAMIC_BROKER_LOGGER_CONFIG",
        7 => "CLIENT_METRICS_CONFIG",
        8 => "GROUP_CONFIG",
        _ => "UNKNOWN",
    }
}
