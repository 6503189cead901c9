//! DescribeConfigs for topics (overrides and defaults) and for this broker.

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::{str_bytes, RequestContext};
use crate::config::{BrokerConfig, BROKER_SETTINGS};
use crate::errors::ErrorCode;
use crate::metadata::{topic_setting_default, TopicMeta, TOPIC_SETTINGS};

const RESOURCE_TOPIC: i8 = 2;
const RESOURCE_BROKER: i8 = 4;
/// Kafka's ConfigSource values.
const SOURCE_TOPIC_OVERRIDE: i8 = 1;
const SOURCE_STATIC_BROKER: i8 = 4;
const SOURCE_DEFAULT: i8 = 5;

/// One config as reported, shared with CreateTopics' response.
pub struct ConfigEntry {
    pub name: StrBytes,
    pub value: Option<StrBytes>,
    pub read_only: bool,
    pub config_source: i8,
}

pub async fn handle(
    ctx: &RequestContext,
    request: DescribeConfigsRequest,
) -> DescribeConfigsResponse {
    let config = &ctx.shard.config;
    let image = ctx.shard.image();
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let keys = resource.configuration_keys.as_deref();
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            let entries = match resource.resource_type {
                RESOURCE_TOPIC => match image.topic(resource.resource_name.as_str()) {
                    Some(topic) => Ok(topic_config_entries(config, topic, keys)),
                    None => Err((
                        ErrorCode::UnknownTopicOrPartition,
                        format!("topic `{}` does not exist", resource.resource_name.as_str()),
                    )),
                },
                RESOURCE_BROKER => {
                    let name = resource.resource_name.as_str();
                    if name.is_empty() || name == config.node_id.to_string() {
                        Ok(broker_config_entries(config, keys))
                    } else {
                        Err((
                            ErrorCode::InvalidRequest,
                            format!("this is broker {}, not `{name}`", config.node_id),
                        ))
                    }
                }
                other => Err((
                    ErrorCode::InvalidRequest,
                    format!("resource type {other} is not supported"),
                )),
            };
            match entries {
                Ok(entries) => result.with_configs(
                    entries
                        .into_iter()
                        .map(|e| {
                            DescribeConfigsResourceResult::default()
                                .with_name(e.name)
                                .with_value(e.value)
                                .with_read_only(e.read_only)
                                .with_config_source(e.config_source)
                        })
                        .collect(),
                ),
                Err((code, message)) => result
                    .with_error_code(code.code())
                    .with_error_message(Some(str_bytes(message))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

fn wanted(keys: Option<&[StrBytes]>, name: &str) -> bool {
    keys.is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
}

pub fn topic_config_entries(
    config: &BrokerConfig,
    topic: &TopicMeta,
    keys: Option<&[StrBytes]>,
) -> Vec<ConfigEntry> {
    TOPIC_SETTINGS
        .iter()
        .filter(|setting| wanted(keys, setting.name))
        .map(|setting| {
            let (value, source) = match topic.record.configs.get(setting.name) {
                Some(value) => (value.clone(), SOURCE_TOPIC_OVERRIDE),
                None => (topic_setting_default(config, setting), SOURCE_DEFAULT),
            };
            ConfigEntry {
                name: str_bytes(setting.name),
                value: Some(str_bytes(value)),
                read_only: false,
                config_source: source,
            }
        })
        .collect()
}

fn broker_config_entries(config: &BrokerConfig, keys: Option<&[StrBytes]>) -> Vec<ConfigEntry> {
    BROKER_SETTINGS
        .iter()
        .filter(|spec| wanted(keys, spec.name))
        .map(|spec| ConfigEntry {
            name: str_bytes(spec.name),
            value: config.value_of(spec.name).map(str_bytes),
            // Broker settings change only with a restart.
            read_only: true,
            config_source: SOURCE_STATIC_BROKER,
        })
        .collect()
}
