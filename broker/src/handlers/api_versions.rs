//! ApiVersions: the versions advertised come from the same table dispatch uses.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use super::{served_apis, RequestContext};

pub async fn handle(_ctx: &RequestContext, _request: ApiVersionsRequest) -> ApiVersionsResponse {
    api_versions_response()
}

pub fn api_versions_response() -> ApiVersionsResponse {
    let api_keys = served_apis()
        .map(|(key, range)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(range.min)
                .with_max_version(range.max)
        })
        .collect();
    ApiVersionsResponse::default().with_api_keys(api_keys)
}
