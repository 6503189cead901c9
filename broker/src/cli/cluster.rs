//! `corelog cluster info`: the cluster, its brokers and what they serve.

use clap::Subcommand;
use corelog_client::admin::ClusterDescription;
use corelog_client::kafka_protocol::messages::ApiKey;
use corelog_client::Topics;
use serde::Serialize;

use super::output::{emit, Report, Table};
use super::Common;

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// Cluster id, controller, brokers, topic counts.
    Info {
        /// Also the API versions the bootstrap broker serves.
        #[arg(short, long)]
        verbose: bool,
    },
}

#[derive(Serialize)]
struct Info {
    #[serde(flatten)]
    cluster: ClusterDescription,
    topics: usize,
    partitions: usize,
    /// With --verbose.
    #[serde(skip_serializing_if = "Option::is_none")]
    api_versions: Option<Vec<ApiRange>>,
}

#[derive(Serialize)]
struct ApiRange {
    api: String,
    key: i16,
    min_version: i16,
    max_version: i16,
}

pub fn run(common: &Common, command: ClusterCommand) -> anyhow::Result<()> {
    let ClusterCommand::Info { verbose } = command;
    let mut client = common.connect()?;
    let cluster = client.describe_cluster()?;
    let metadata = client.metadata(Topics::All)?;
    let api_versions = verbose.then(|| {
        client
            .bootstrap()
            .api_versions()
            .iter()
            .map(|(key, range)| ApiRange {
                api: ApiKey::try_from(key)
                    .map_or_else(|_| format!("Unknown{key}"), |api| format!("{api:?}")),
                key,
                min_version: range.min,
                max_version: range.max,
            })
            .collect()
    });
    let info = Info {
        cluster,
        topics: metadata.topics.len(),
        partitions: metadata.topics.iter().map(|t| t.partitions.len()).sum(),
        api_versions,
    };
    emit(common.format, &info)
}

impl Report for Info {
    fn human(&self) -> String {
        let c = &self.cluster;
        let mut brokers = Table::new(&["BROKER", "HOST", "PORT", "RACK", "CONTROLLER"]);
        for b in &c.brokers {
            brokers.row(vec![
                b.node_id.to_string(),
                b.host.clone(),
                b.port.to_string(),
                b.rack.clone().unwrap_or_else(|| "-".into()),
                if b.node_id == c.controller_id {
                    "yes"
                } else {
                    ""
                }
                .into(),
            ]);
        }
        let mut text = format!(
            "cluster {} (controller {}, {} topics, {} partitions)\n{}",
            c.cluster_id,
            c.controller_id,
            self.topics,
            self.partitions,
            brokers.render()
        );
        if let Some(apis) = &self.api_versions {
            let mut table = Table::new(&["API", "KEY", "VERSIONS"]);
            for a in apis {
                table.row(vec![
                    a.api.clone(),
                    a.key.to_string(),
                    format!("{}-{}", a.min_version, a.max_version),
                ]);
            }
            text.push('\n');
            text.push_str(&table.render());
        }
        text
    }
}
