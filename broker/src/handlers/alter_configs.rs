//! AlterConfigs (replace a topic's overrides) and, through [`alter_topics`], the shared
//! path of IncrementalAlterConfigs. Broker settings are static: changing them is refused.

use kafka_protocol::messages::alter_configs_response::AlterConfigsResourceResponse;
use kafka_protocol::messages::{AlterConfigsRequest, AlterConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::RequestContext;
use crate::errors::ErrorCode;
use crate::metadata::TopicError;
use crate::shard::{ConfigEdit, TopicChange};

pub const RESOURCE_TOPIC: i8 = 2;

/// Applies the per-resource `edits` of an AlterConfigs or IncrementalAlterConfigs
/// request and builds the per-resource answers: the same fields in two response types.
macro_rules! alter_and_answer {
    ($ctx:expr, $request:expr, $edits:expr, $response:ty) => {{
        let targets = $request
            .resources
            .iter()
            .map(|r| (r.resource_type, r.resource_name.clone()))
            .collect();
        let outcomes =
            super::alter_configs::alter_topics($ctx, targets, $edits, $request.validate_only).await;
        $request
            .resources
            .into_iter()
            .zip(outcomes)
            .map(|(resource, outcome)| {
                let response = <$response>::default()
                    .with_resource_type(resource.resource_type)
                    .with_resource_name(resource.resource_name);
                match outcome {
                    Ok(()) => response,
                    Err(e) => response
                        .with_error_code(e.code.code())
                        .with_error_message(Some(super::str_bytes(e.message))),
                }
            })
            .collect()
    }};
}
pub(crate) use alter_and_answer;

pub async fn handle(ctx: &RequestContext, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let edits = request
        .resources
        .iter()
        .map(|resource| {
            let mut configs = std::collections::BTreeMap::new();
            for config in &resource.configs {
                let Some(value) = &config.value else {
                    return Err(null_value(&config.name));
                };
                configs.insert(config.name.to_string(), value.to_string());
            }
            Ok(ConfigEdit::Replace(configs))
        })
        .collect();
    AlterConfigsResponse::default().with_responses(alter_and_answer!(
        ctx,
        request,
        edits,
        AlterConfigsResourceResponse
    ))
}

pub fn null_value(name: &StrBytes) -> TopicError {
    TopicError::new(
        ErrorCode::InvalidConfig,
        format!("config {} has a null value", name.as_str()),
    )
}

/// Applies config edits to topics in one change on the controller shard; returns one
/// outcome per `(resource type, name)` target, in order.
pub async fn alter_topics(
    ctx: &RequestContext,
    targets: Vec<(i8, StrBytes)>,
    edits: Vec<Result<ConfigEdit, TopicError>>,
    validate_only: bool,
) -> Vec<Result<(), TopicError>> {
    let mut outcomes: Vec<Option<Result<(), TopicError>>> = Vec::with_capacity(targets.len());
    let mut topics = Vec::new();
    for ((resource_type, name), edit) in targets.into_iter().zip(edits) {
        let refused = match (resource_type, edit) {
            (RESOURCE_TOPIC, Ok(edit)) => {
                topics.push((name.to_string(), edit));
                None
            }
            (RESOURCE_TOPIC, Err(e)) => Some(e),
            (_, _) => Some(TopicError::new(
                ErrorCode::InvalidRequest,
                "only topic configs can be changed; broker settings take effect at start (--set, --config)",
            )),
        };
        outcomes.push(refused.map(Err));
    }
    let mut changed = ctx
        .shard
        .request_topic_change(TopicChange::AlterConfigs {
            topics,
            validate_only,
        })
        .await
        .into_iter();
    outcomes
        .into_iter()
        .map(|refused| match refused {
            Some(outcome) => outcome,
            None => match changed.next() {
                Some(outcome) => outcome.map(|_| ()),
                None => Err(TopicError::new(
                    ErrorCode::RequestTimedOut,
                    "controller unavailable",
                )),
            },
        })
        .collect()
}
