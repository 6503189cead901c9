//! `corelog topic ...`: topic administration.

use clap::Subcommand;
use corelog_client::admin::{ConfigChange, ConfigEntry, CreatedTopic, NewTopic, EARLIEST, LATEST};
use corelog_client::{Client, TopicInfo, Topics};
use serde::Serialize;
use uuid::Uuid;

use super::output::{emit, list, OutcomeReport, Report, Table};
use super::{key_value, Common};

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create {
        name: String,
        /// Partitions (default: the broker's num.partitions).
        #[arg(short, long, default_value_t = -1)]
        partitions: i32,
        /// Replication factor (default: the broker's default.replication.factor).
        #[arg(short, long, default_value_t = -1)]
        replicas: i16,
        /// Topic config override; may be repeated.
        #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = key_value)]
        configs: Vec<(String, String)>,
        /// Only check that the broker would create it.
        #[arg(long)]
        validate_only: bool,
    },
    /// List topics.
    List,
    /// Partitions, leaders, replicas, log offsets and configs of topics.
    Describe {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Set or remove topic config overrides (IncrementalAlterConfigs).
    AlterConfig {
        name: String,
        /// A config to set; may be repeated.
        #[arg(long = "set", value_name = "KEY=VALUE", value_parser = key_value)]
        set: Vec<(String, String)>,
        /// A config override to remove; may be repeated.
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
    /// Grow a topic to a number of partitions.
    AddPartitions {
        name: String,
        /// The total number of partitions after the change.
        #[arg(short = 'n', long = "total")]
        total: i32,
    },
}

pub fn run(common: &Common, command: TopicCommand) -> anyhow::Result<()> {
    let mut client = common.connect()?;
    let format = common.format;
    match command {
        TopicCommand::Create {
            name,
            partitions,
            replicas,
            configs,
            validate_only,
        } => {
            let topic = NewTopic {
                name,
                partitions,
                replication_factor: replicas,
                configs,
            };
            emit(format, &client.create_topic(&topic, validate_only)?)
        }
        TopicCommand::List => emit(format, &list_topics(&mut client)?),
        TopicCommand::Describe { names } => {
            let described = names
                .iter()
                .map(|name| describe(&mut client, name))
                .collect::<anyhow::Result<Vec<_>>>()?;
            emit(format, &Descriptions(described))
        }
        TopicCommand::Delete { names } => {
            OutcomeReport::emit(format, "deleted topic", client.delete_topics(&names)?)
        }
        TopicCommand::AlterConfig { name, set, delete } => {
            anyhow::ensure!(
                !set.is_empty() || !delete.is_empty(),
                "nothing to change: give --set KEY=VALUE or --delete KEY"
            );
            let changes: Vec<ConfigChange> = set
                .iter()
                .map(|(k, v)| ConfigChange::Set(k.clone(), v.clone()))
                .chain(delete.iter().map(|k| ConfigChange::Delete(k.clone())))
                .collect();
            client.alter_topic_configs(&name, &changes)?;
            emit(
                format,
                &Altered {
                    topic: name,
                    set,
                    deleted: delete,
                },
            )
        }
        TopicCommand::AddPartitions { name, total } => {
            client.create_partitions(&name, total)?;
            emit(
                format,
                &Grown {
                    topic: name,
                    partitions: total,
                },
            )
        }
    }
}

impl Report for CreatedTopic {
    fn human(&self) -> String {
        let what = if self.validate_only {
            "would create"
        } else {
            "created"
        };
        format!(
            "{what} topic {} ({} partitions, replication factor {}, id {})\n",
            self.name, self.partitions, self.replication_factor, self.topic_id
        )
    }
}

#[derive(Serialize)]
struct Listing {
    name: String,
    topic_id: Uuid,
    partitions: usize,
    replication_factor: usize,
    internal: bool,
}

#[derive(Serialize)]
#[serde(transparent)]
struct Listings(Vec<Listing>);

fn list_topics(client: &mut Client) -> anyhow::Result<Listings> {
    let mut topics: Vec<Listing> = client
        .metadata(Topics::All)?
        .topics
        .into_iter()
        .map(|t| Listing {
            replication_factor: t.partitions.first().map_or(0, |p| p.replicas.len()),
            partitions: t.partitions.len(),
            name: t.name,
            topic_id: t.topic_id,
            internal: t.internal,
        })
        .collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Listings(topics))
}

impl Report for Listings {
    fn human(&self) -> String {
        let mut table = Table::new(&["NAME", "PARTITIONS", "REPLICAS", "INTERNAL", "ID"]);
        for t in &self.0 {
            table.row(vec![
                t.name.clone(),
                t.partitions.to_string(),
                t.replication_factor.to_string(),
                t.internal.to_string(),
                t.topic_id.to_string(),
            ]);
        }
        table.render()
    }
}

#[derive(Serialize)]
struct Description {
    name: String,
    topic_id: Uuid,
    internal: bool,
    partitions: Vec<PartitionDescription>,
    configs: Vec<ConfigEntry>,
}

#[derive(Serialize)]
struct PartitionDescription {
    partition: i32,
    leader: i32,
    leader_epoch: i32,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    offline_replicas: Vec<i32>,
    log_start_offset: i64,
    log_end_offset: i64,
}

#[derive(Serialize)]
#[serde(transparent)]
struct Descriptions(Vec<Description>);

fn describe(client: &mut Client, name: &str) -> anyhow::Result<Description> {
    let topic: TopicInfo = client.topic(name, false)?;
    let starts = log_offsets(client, &topic, EARLIEST)?;
    let ends = log_offsets(client, &topic, LATEST)?;
    let partitions = topic
        .partitions
        .into_iter()
        .zip(starts.into_iter().zip(ends))
        .map(|(p, (start, end))| PartitionDescription {
            partition: p.partition,
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            replicas: p.replicas,
            isr: p.isr,
            offline_replicas: p.offline_replicas,
            log_start_offset: start,
            log_end_offset: end,
        })
        .collect();
    Ok(Description {
        configs: client.describe_topic_configs(name)?,
        name: topic.name,
        topic_id: topic.topic_id,
        internal: topic.internal,
        partitions,
    })
}

/// ListOffsets of every partition of `topic` at `timestamp`, in partition order.
pub(super) fn log_offsets(
    client: &mut Client,
    topic: &TopicInfo,
    timestamp: i64,
) -> anyhow::Result<Vec<i64>> {
    let queries: Vec<(String, i32, i64)> = topic
        .partitions
        .iter()
        .map(|p| (topic.name.clone(), p.partition, timestamp))
        .collect();
    Ok(client
        .list_offsets(&queries)?
        .into_iter()
        .map(|answer| answer.offset)
        .collect())
}

impl Report for Descriptions {
    fn human(&self) -> String {
        self.0
            .iter()
            .map(describe_human)
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn describe_human(topic: &Description) -> String {
    let mut partitions = Table::new(&[
        "PARTITION",
        "LEADER",
        "EPOCH",
        "REPLICAS",
        "ISR",
        "LOG-START",
        "LOG-END",
    ]);
    for p in &topic.partitions {
        partitions.row(vec![
            p.partition.to_string(),
            p.leader.to_string(),
            p.leader_epoch.to_string(),
            list(&p.replicas),
            list(&p.isr),
            p.log_start_offset.to_string(),
            p.log_end_offset.to_string(),
        ]);
    }
    let mut configs = Table::new(&["CONFIG", "VALUE", "SOURCE"]);
    for c in &topic.configs {
        let value = if c.sensitive {
            "(sensitive)".to_string()
        } else {
            c.value.clone().unwrap_or_else(|| "-".into())
        };
        configs.row(vec![c.name.clone(), value, c.source.to_string()]);
    }
    format!(
        "topic {} (id {}{})\n{}\n{}",
        topic.name,
        topic.topic_id,
        if topic.internal { ", internal" } else { "" },
        partitions.render(),
        configs.render()
    )
}

#[derive(Serialize)]
struct Altered {
    topic: String,
    set: Vec<(String, String)>,
    deleted: Vec<String>,
}

impl Report for Altered {
    fn human(&self) -> String {
        let set = self.set.iter().map(|(k, v)| format!(" set {k}={v}"));
        let deleted = self.deleted.iter().map(|k| format!(" deleted {k}"));
        format!(
            "altered configs of topic {}:{}\n",
            self.topic,
            set.chain(deleted).collect::<Vec<_>>().join(",")
        )
    }
}

#[derive(Serialize)]
struct Grown {
    topic: String,
    partitions: i32,
}

impl Report for Grown {
    fn human(&self) -> String {
        format!(
            "topic {} now has {} partitions\n",
            self.topic, self.partitions
        )
    }
}
