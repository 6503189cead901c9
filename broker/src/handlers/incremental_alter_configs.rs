//! IncrementalAlterConfigs: set or delete single topic config overrides.

use kafka_protocol::messages::incremental_alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse};

use super::alter_configs::{alter_and_answer, null_value};
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
    IncrementalAlterConfigsResponse::default().with_responses(alter_and_answer!(
        ctx,
        request,
        edits,
        AlterConfigsResourceResponse
    ))
}
