//! Consumer groups: the coordinator state each shard keeps for the groups it owns, and
//! their committed offsets.
//!
//! A group lives on the shard that owns its partition of the internal offsets topic
//! ([`offsets::offsets_partition_for`]), so committing an offset is a local append to
//! that partition followed by fdatasync, and the group's state and offsets are rebuilt
//! from it when the partition is opened.

pub mod api;
pub mod assignor;
pub mod consumer;
pub mod offsets;

use std::collections::{BTreeMap, HashMap};

use offsets::{CommittedOffset, OffsetChange};

use crate::errors::ErrorCode;

/// Everything a shard knows about one group.
#[derive(Default)]
pub struct Group {
    /// Committed offsets: topic -> partition -> offset.
    pub offsets: HashMap<String, BTreeMap<i32, CommittedOffset>>,
}

impl Group {
    pub fn has_members(&self) -> bool {
        false
    }

    /// Topics the group's members consume, whose offsets may not be deleted.
    pub fn subscribed_topics(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A partition index and its committed offset, if any.
pub type PartitionOffset = (i32, Option<CommittedOffset>);

/// The groups a shard owns.
#[derive(Default)]
pub struct GroupCoordinator {
    pub groups: HashMap<String, Group>,
}

impl GroupCoordinator {
    /// Applies stored or newly committed offset changes, in log order.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = OffsetChange>) {
        for change in changes {
            match change.value {
                Some(value) => {
                    let group = self.groups.entry(change.group).or_default();
                    group
                        .offsets
                        .entry(change.topic)
                        .or_default()
                        .insert(change.partition, value);
                }
                None => {
                    let Some(group) = self.groups.get_mut(&change.group) else {
                        continue;
                    };
                    let Some(partitions) = group.offsets.get_mut(&change.topic) else {
                        continue;
                    };
                    partitions.remove(&change.partition);
                    if partitions.is_empty() {
                        group.offsets.remove(&change.topic);
                    }
                }
            }
        }
    }

    /// Offsets of `group` for the asked partitions (every committed one when `None`).
    pub fn fetch_offsets(
        &self,
        group: &str,
        wanted: Option<Vec<(String, Vec<i32>)>>,
    ) -> Vec<(String, Vec<PartitionOffset>)> {
        let stored = self.groups.get(group).map(|g| &g.offsets);
        let committed = |topic: &str, partition: i32| {
            stored
                .and_then(|s| s.get(topic))
                .and_then(|p| p.get(&partition))
                .cloned()
        };
        match wanted {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .into_iter()
                        .map(|p| (p, committed(&topic, p)))
                        .collect();
                    (topic, found)
                })
                .collect(),
            None => stored
                .into_iter()
                .flatten()
                .map(|(topic, partitions)| {
                    let found = partitions
                        .iter()
                        .map(|(p, c)| (*p, Some(c.clone())))
                        .collect();
                    (topic.clone(), found)
                })
                .collect(),
        }
    }

    /// Whether an offset commit from this member and generation is accepted; the error
    /// code otherwise. Commits with generation -1 and no member come from consumers that
    /// assign partitions themselves, and are accepted while the group has no members.
    pub fn validate_commit(
        &self,
        group: &str,
        member_id: &str,
        _group_instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ErrorCode> {
        let has_members = self.groups.get(group).is_some_and(Group::has_members);
        match (has_members, generation < 0 && member_id.is_empty()) {
            (false, true) => None,
            (false, false) => Some(ErrorCode::IllegalGeneration),
            (true, true) => Some(ErrorCode::UnknownMemberId),
            (true, false) => Some(ErrorCode::IllegalGeneration),
        }
    }
}
