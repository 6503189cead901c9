//! IncrementalAlterConfigs: set or delete single topic config overrides.

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::alter_configs::{alter_topics, null_value, resource_responses};
use super::RequestContext;
use crate::errors::ErrorCode;
use crate::metadata::TopicError;
use crate::shard::{ConfigEdit, ConfigOp};

/// Kafka's OpType values.
const SET: i8 = 0;
const DELETE: i8 = 1;

pub async fn handle(
    ctx: &RequestContext,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let edits = request
        .resources
        .iter()
        .map(|resource| {
            let ops = resource.configs.iter().map(|config| {
                match (config.config_operation, &config.value) {
                    (SET, Some(value)) => {
                        Ok(ConfigOp::Set(config.name.to_string(), value.to_string()))
                    }
                    (SET, None) => Err(null_value(&config.name)),
                    (DELETE, _) => Ok(ConfigOp::Delete(config.name.to_string())),
                    // APPEND and SUBTRACT act on list configs; no topic config here is a list.
                    (op, _) => Err(TopicError::new(
                        ErrorCode::InvalidConfig,
                        format!(
                            "operation {op} is not supported for {}",
                            config.name.as_str()
                        ),
                    )),
                }
            });
            ops.collect::<Result<Vec<_>, _>>()
                .map(ConfigEdit::Incremental)
        })
        .collect();
    let targets = request
        .resources
        .iter()
        .map(|r| (r.resource_type, r.resource_name.clone()))
        .collect();
    let outcomes = alter_topics(ctx, targets, edits, request.validate_only).await;
    let resources = request
        .resources
        .into_iter()
        .map(|r| (r.resource_type, r.resource_name));
    IncrementalAlterConfigsResponse::default().with_responses(resource_responses!(
        AlterConfigsResourceResponse,
        resources,
        outcomes
    ))
}
