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
    pub membership: Membership,
}

/// Which group protocol the group's members speak, with its state.
#[derive(Default)]
pub enum Membership {
    /// No members: only committed offsets (consumers assigning partitions themselves).
    #[default]
    None,
    /// The next-generation protocol (KIP-848).
    Consumer(consumer::ConsumerGroup),
}

impl Group {
    pub fn has_members(&self) -> bool {
        match &self.membership {
            Membership::None => false,
            Membership::Consumer(group) => !group.is_empty(),
        }
    }

    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        match &self.membership {
            Membership::None => false,
            Membership::Consumer(group) => group.is_subscribed_to_topic(topic),
        }
    }

    /// A group with neither members nor offsets is forgotten.
    fn is_dead(&self) -> bool {
        self.offsets.is_empty() && !self.has_members()
    }
}

impl Group {
    fn next_deadline(&self) -> Option<i64> {
        match &self.membership {
            Membership::None => None,
            Membership::Consumer(group) => group.next_deadline(),
        }
    }
}

fn error_code(code: i16) -> Option<ErrorCode> {
    (code != 0).then(|| ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError))
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

    /// Whether an offset commit from this member and generation (member epoch for
    /// consumer groups) is accepted; the error code otherwise. Commits with generation -1
    /// come from consumers that assign partitions themselves, and are accepted while the
    /// group has no members.
    pub fn validate_commit(
        &self,
        group: &str,
        member_id: &str,
        _group_instance_id: Option<&str>,
        generation: i32,
    ) -> Option<ErrorCode> {
        let code = match self.groups.get(group).map(|g| &g.membership) {
            None | Some(Membership::None) if generation < 0 => return None,
            None | Some(Membership::None) => ErrorCode::IllegalGeneration.code(),
            Some(Membership::Consumer(group)) => {
                group.validate_offset_commit(member_id, generation)
            }
        };
        error_code(code)
    }

    /// A KIP-848 heartbeat. A consumer group is created by its first member's join
    /// (epoch 0); other heartbeats to a group that does not exist get GROUP_ID_NOT_FOUND.
    pub fn consumer_heartbeat(
        &mut self,
        group_id: &str,
        request: consumer::HeartbeatRequest,
        topics: &impl consumer::TopicLookup,
        config: &consumer::ConsumerGroupConfig,
        now_ms: i64,
    ) -> consumer::HeartbeatResponse {
        let refuse = |code: ErrorCode, message: &str| consumer::HeartbeatResponse {
            error_code: code.code(),
            error_message: Some(message.to_string()),
            member_id: request.member_id.clone(),
            heartbeat_interval_ms: config.heartbeat_interval_ms,
            ..Default::default()
        };
        if group_id.is_empty() {
            return refuse(ErrorCode::InvalidRequest, "the group id is empty");
        }
        let joining = request.member_epoch == consumer::JOIN_GROUP_MEMBER_EPOCH;
        let group = match self.groups.get_mut(group_id) {
            Some(group) => group,
            None if joining => self.groups.entry(group_id.to_string()).or_default(),
            None => return refuse(ErrorCode::GroupIdNotFound, "the group does not exist"),
        };
        if matches!(group.membership, Membership::None) {
            if !joining {
                return refuse(ErrorCode::GroupIdNotFound, "the group has no members");
            }
            group.membership = Membership::Consumer(consumer::ConsumerGroup::new(
                group_id.to_string(),
                config.clone(),
            ));
        }
        let response = match &mut group.membership {
            Membership::Consumer(members) => members.heartbeat(request, topics, now_ms),
            Membership::None => unreachable!("set above"),
        };
        self.forget_if_dead(group_id);
        response
    }

    /// Expires members whose sessions lapsed, in every group whose deadline has come.
    pub fn tick(&mut self, now_ms: i64) {
        let due: Vec<String> = self
            .groups
            .iter()
            .filter(|(_, g)| g.next_deadline().is_some_and(|d| d <= now_ms))
            .map(|(id, _)| id.clone())
            .collect();
        for group_id in due {
            if let Some(group) = self.groups.get_mut(&group_id) {
                if let Membership::Consumer(members) = &mut group.membership {
                    members.tick(now_ms);
                }
            }
            self.forget_if_dead(&group_id);
        }
    }

    /// Topics changed: consumer groups recompute their target assignments.
    pub fn on_metadata_change(&mut self, topics: &impl consumer::TopicLookup) {
        for group in self.groups.values_mut() {
            if let Membership::Consumer(members) = &mut group.membership {
                members.on_metadata_change(topics);
            }
        }
    }

    fn forget_if_dead(&mut self, group_id: &str) {
        if self.groups.get(group_id).is_some_and(Group::is_dead) {
            self.groups.remove(group_id);
        }
    }
}
