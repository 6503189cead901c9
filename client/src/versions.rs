//! API version negotiation: for each API, the highest version both the broker and this
//! client speak.

use std::collections::BTreeMap;

use kafka_protocol::messages::ApiVersionsResponse;
use kafka_protocol::protocol::VersionRange;

/// The version ranges a broker advertised in ApiVersions, by API key.
#[derive(Clone, Debug, Default)]
pub struct ApiVersions {
    ranges: BTreeMap<i16, VersionRange>,
}

impl ApiVersions {
    pub fn from_response(response: &ApiVersionsResponse) -> ApiVersions {
        let ranges = response
            .api_keys
            .iter()
            .map(|api| {
                let range = VersionRange {
                    min: api.min_version,
                    max: api.max_version,
                };
                (api.api_key, range)
            })
            .collect();
        ApiVersions { ranges }
    }

    /// The broker's range for an API, if it serves it.
    pub fn range(&self, api_key: i16) -> Option<VersionRange> {
        self.ranges.get(&api_key).copied()
    }

    /// Every advertised API with its range, by key.
    pub fn iter(&self) -> impl Iterator<Item = (i16, VersionRange)> + '_ {
        self.ranges.iter().map(|(key, range)| (*key, *range))
    }

    /// The highest version of `api_key` within both the broker's range and `client`.
    /// On failure, the broker's range (`None` when it does not serve the API).
    pub fn negotiate(
        &self,
        api_key: i16,
        client: VersionRange,
    ) -> Result<i16, Option<VersionRange>> {
        let broker = self.range(api_key).ok_or(None)?;
        let common = broker.intersect(&client);
        if common.is_empty() {
            Err(Some(broker))
        } else {
            Ok(common.max)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::api_versions_response::ApiVersion;

    fn broker(apis: &[(i16, i16, i16)]) -> ApiVersions {
        let response = ApiVersionsResponse::default().with_api_keys(
            apis.iter()
                .map(|&(key, min, max)| {
                    ApiVersion::default()
                        .with_api_key(key)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        );
        ApiVersions::from_response(&response)
    }

    fn range(min: i16, max: i16) -> VersionRange {
        VersionRange { min, max }
    }

    #[test]
    fn picks_the_highest_common_version() {
        let versions = broker(&[(1, 4, 18), (3, 0, 9)]);
        assert_eq!(versions.negotiate(1, range(4, 16)), Ok(16));
        assert_eq!(versions.negotiate(1, range(0, 20)), Ok(18));
        assert_eq!(versions.negotiate(3, range(9, 12)), Ok(9));
    }

    #[test]
    fn refuses_apis_the_broker_lacks_or_ranges_that_miss() {
        let versions = broker(&[(1, 4, 18)]);
        assert_eq!(versions.negotiate(44, range(0, 1)), Err(None));
        assert_eq!(versions.negotiate(1, range(0, 3)), Err(Some(range(4, 18))));
    }
}
