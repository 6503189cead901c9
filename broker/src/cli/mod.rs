//! The admin command line: `corelog topic|produce|consume|group|cluster ...`, speaking the
//! Kafka protocol (through corelog-client) to any broker, corelog or not.

mod cluster;
mod consume;
mod group;
mod output;
mod produce;
mod topic;

use std::time::Duration;

use clap::{Args, Subcommand};
use corelog_client::{Client, Options};

use output::Format;

#[derive(Subcommand)]
pub enum Command {
    /// Create, list, describe, reconfigure, grow and delete topics.
    Topic {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: topic::TopicCommand,
    },
    /// Produce lines of stdin as records.
    Produce(produce::ProduceArgs),
    /// Print records, alone or as a member of a consumer group.
    Consume(consume::ConsumeArgs),
    /// List, describe (with lag), reposition and delete consumer groups.
    Group {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: group::GroupCommand,
    },
    /// Describe the cluster.
    Cluster {
        #[command(flatten)]
        common: Common,
        #[command(subcommand)]
        command: cluster::ClusterCommand,
    },
}

/// Options of every admin command.
#[derive(Args)]
pub struct Common {
    /// Brokers to bootstrap from: host:port[,host:port...].
    #[arg(
        long,
        env = "CORELOG_BROKERS",
        default_value = "127.0.0.1:9092",
        value_delimiter = ',',
        global = true
    )]
    brokers: Vec<String>,
    /// Human tables, or one JSON document with every field.
    #[arg(long, value_enum, default_value_t = Format::Table, global = true)]
    format: Format,
    /// Bound on connecting and on each request's answer.
    #[arg(long, default_value_t = 10_000, global = true, value_name = "MS")]
    request_timeout_ms: u64,
}

impl Common {
    fn connect(&self) -> anyhow::Result<Client> {
        let options = Options {
            timeout: Duration::from_millis(self.request_timeout_ms),
            client_id: "corelog-cli".into(),
        };
        Ok(Client::connect(&self.brokers, options)?)
    }
}

pub fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Topic { common, command } => topic::run(&common, command),
        Command::Produce(args) => produce::run(args),
        Command::Consume(args) => consume::run(args),
        Command::Group { common, command } => group::run(&common, command),
        Command::Cluster { common, command } => cluster::run(&common, command),
    }
}

/// Parses `key=value`.
fn key_value(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("expected key=value, got {text:?}"))
}
