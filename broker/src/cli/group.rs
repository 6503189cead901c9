//! `corelog group ...`: consumer groups, their members and their lag.

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use corelog_client::admin::LATEST;
use corelog_client::groups::{GroupDescription, GroupListing};
use corelog_client::Client;
use serde::Serialize;

use super::consume::{start_offsets, Start};
use super::output::{emit, list, or_dash, OutcomeReport, Report, Table};
use super::Common;

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List groups.
    List,
    /// Members, assignments, committed offsets and lag of groups.
    Describe {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete groups (only groups without members) and their committed offsets.
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Set a group's committed offsets for a topic (only while it has no members).
    Seek {
        group: String,
        #[arg(long)]
        topic: String,
        /// A partition to reposition; may be repeated (default: all).
        #[arg(short, long = "partition")]
        partitions: Vec<i32>,
        #[command(flatten)]
        target: SeekTarget,
    },
}

#[derive(Args)]
#[group(required = true, multiple = false)]
pub struct SeekTarget {
    /// To the start of each partition's log.
    #[arg(long)]
    to_earliest: bool,
    /// To the end of each partition's log.
    #[arg(long)]
    to_latest: bool,
    /// To this offset.
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// To the first record at or after this time (ms since the epoch).
    #[arg(long, value_name = "MS")]
    to_timestamp: Option<i64>,
}

impl SeekTarget {
    fn start(&self) -> Start {
        match (self.to_offset, self.to_timestamp) {
            (Some(offset), _) => Start::Offset(offset),
            (_, Some(ms)) => Start::Timestamp(ms),
            _ if self.to_earliest => Start::Beginning,
            _ => Start::End,
        }
    }
}

pub fn run(common: &Common, command: GroupCommand) -> anyhow::Result<()> {
    let mut client = common.connect()?;
    let format = common.format;
    match command {
        GroupCommand::List => emit(format, &Listings(client.list_groups()?)),
        GroupCommand::Describe { groups } => {
            let described = groups
                .iter()
                .map(|group| describe(&mut client, group))
                .collect::<anyhow::Result<Vec<_>>>()?;
            emit(format, &Descriptions(described))
        }
        GroupCommand::Delete { groups } => {
            OutcomeReport::emit(format, "deleted group", client.delete_groups(&groups)?)
        }
        GroupCommand::Seek {
            group,
            topic,
            partitions,
            target,
        } => emit(
            format,
            &seek(&mut client, &group, &topic, partitions, target.start())?,
        ),
    }
}

#[derive(Serialize)]
#[serde(transparent)]
struct Listings(Vec<GroupListing>);

impl Report for Listings {
    fn human(&self) -> String {
        let mut table = Table::new(&["GROUP", "TYPE", "STATE", "PROTOCOL-TYPE"]);
        for g in &self.0 {
            table.row(vec![
                g.group_id.clone(),
                g.group_type.clone(),
                g.state.clone(),
                g.protocol_type.clone(),
            ]);
        }
        table.render()
    }
}

#[derive(Serialize)]
struct Description {
    #[serde(flatten)]
    group: GroupDescription,
    offsets: Vec<PartitionLag>,
}

/// A partition the group committed an offset for or has assigned to a member.
#[derive(Serialize)]
struct PartitionLag {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    log_end_offset: i64,
    /// Records not yet consumed: log end - committed offset.
    lag: Option<i64>,
    member_id: Option<String>,
}

#[derive(Serialize)]
#[serde(transparent)]
struct Descriptions(Vec<Description>);

fn describe(client: &mut Client, group: &str) -> anyhow::Result<Description> {
    let description = client.describe_group(group)?;
    // Committed offsets and assignments, by partition.
    let mut partitions: BTreeMap<(String, i32), (Option<i64>, Option<String>)> = BTreeMap::new();
    for committed in client.committed_offsets(group, None, None)? {
        partitions.insert(
            (committed.topic, committed.partition),
            (Some(committed.offset), None),
        );
    }
    for member in &description.members {
        for assigned in &member.assignment {
            for &partition in &assigned.partitions {
                let entry = partitions
                    .entry((assigned.topic.clone(), partition))
                    .or_default();
                entry.1 = Some(member.member_id.clone());
            }
        }
    }
    let queries: Vec<(String, i32, i64)> = partitions
        .keys()
        .map(|(topic, partition)| (topic.clone(), *partition, LATEST))
        .collect();
    let ends = client.list_offsets(&queries)?;
    let offsets = partitions
        .into_iter()
        .zip(ends)
        .map(
            |(((topic, partition), (committed, member_id)), end)| PartitionLag {
                topic,
                partition,
                committed_offset: committed,
                log_end_offset: end.offset,
                lag: committed.map(|c| (end.offset - c).max(0)),
                member_id,
            },
        )
        .collect();
    Ok(Description {
        group: description,
        offsets,
    })
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

fn describe_human(d: &Description) -> String {
    let g = &d.group;
    let mut text = format!(
        "group {} ({}, {}, coordinator {}, assignor {}{})\n",
        g.group_id,
        g.group_type,
        g.state,
        g.coordinator,
        if g.assignor.is_empty() {
            "-"
        } else {
            &g.assignor
        },
        g.group_epoch
            .map(|e| format!(", epoch {e}"))
            .unwrap_or_default()
    );
    if !g.members.is_empty() {
        let mut members = Table::new(&["MEMBER", "EPOCH", "CLIENT", "HOST", "ASSIGNMENT"]);
        for m in &g.members {
            let assignment = m
                .assignment
                .iter()
                .map(|a| format!("{}:{}", a.topic, list(&a.partitions)))
                .collect::<Vec<_>>()
                .join(" ");
            members.row(vec![
                m.member_id.clone(),
                or_dash(m.member_epoch),
                m.client_id.clone(),
                m.client_host.clone(),
                assignment,
            ]);
        }
        text.push_str(&members.render());
    }
    let mut offsets = Table::new(&[
        "TOPIC",
        "PARTITION",
        "COMMITTED",
        "LOG-END",
        "LAG",
        "MEMBER",
    ]);
    for o in &d.offsets {
        offsets.row(vec![
            o.topic.clone(),
            o.partition.to_string(),
            or_dash(o.committed_offset),
            o.log_end_offset.to_string(),
            or_dash(o.lag),
            or_dash(o.member_id.as_ref()),
        ]);
    }
    text.push_str(&offsets.render());
    text
}

#[derive(Serialize)]
struct Sought {
    group: String,
    topic: String,
    offsets: Vec<SoughtPartition>,
}

#[derive(Serialize)]
struct SoughtPartition {
    partition: i32,
    offset: i64,
}

fn seek(
    client: &mut Client,
    group: &str,
    topic: &str,
    mut partitions: Vec<i32>,
    target: Start,
) -> anyhow::Result<Sought> {
    if partitions.is_empty() {
        partitions = client
            .topic(topic, false)?
            .partitions
            .iter()
            .map(|p| p.partition)
            .collect();
    }
    let offsets = start_offsets(client, topic, &partitions, target)?;
    let commits: Vec<(String, i32, i64)> = partitions
        .iter()
        .zip(&offsets)
        .map(|(&p, &offset)| (topic.to_string(), p, offset))
        .collect();
    // No member: the broker accepts this only while the group has none.
    client.commit_offsets(group, None, &commits)?;
    Ok(Sought {
        group: group.to_string(),
        topic: topic.to_string(),
        offsets: partitions
            .into_iter()
            .zip(offsets)
            .map(|(partition, offset)| SoughtPartition { partition, offset })
            .collect(),
    })
}

impl Report for Sought {
    fn human(&self) -> String {
        let mut table = Table::new(&["PARTITION", "OFFSET"]);
        for o in &self.offsets {
            table.row(vec![o.partition.to_string(), o.offset.to_string()]);
        }
        format!(
            "group {} now starts {} at:\n{}",
            self.group,
            self.topic,
            table.render()
        )
    }
}
