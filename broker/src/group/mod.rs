//! Consumer groups: the coordinator state each shard keeps for the groups it owns, and
//! their committed offsets.
//!
//! A group lives on the shard that owns its partition of the internal offsets topic
//! ([`offsets::offsets_partition_for`]), so committing an offset is a local append to
//! that partition followed by fdatasync, and the group's state and offsets are rebuilt
//! from it when the partition is opened.

pub mod api;
pub mod assignor;
pub mod classic;
pub mod consumer;
pub mod offsets;

use std::collections::{BTreeMap, HashMap};

use futures::channel::oneshot;
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
    /// The classic protocol (JoinGroup/SyncGroup/Heartbeat).
    Classic(classic::ClassicGroup),
    /// The next-generation protocol (KIP-848).
    Consumer(consumer::ConsumerGroup),
}

impl Group {
    pub fn has_members(&self) -> bool {
        match &self.membership {
            Membership::None => false,
            Membership::Classic(group) => !group.is_empty(),
            Membership::Consumer(group) => !group.is_empty(),
        }
    }

    pub fn is_subscribed_to(&self, topic: &str) -> bool {
        match &self.membership {
            Membership::None => false,
            // Classic subscriptions are opaque to the broker: a group with members
            // keeps all its offsets, as in Kafka.
            Membership::Classic(group) => !group.is_empty(),
            Membership::Consumer(group) => group.is_subscribed_to_topic(topic),
        }
    }

    fn next_deadline(&self) -> Option<i64> {
        match &self.membership {
            Membership::None => None,
            Membership::Classic(group) => group.next_deadline(),
            Membership::Consumer(group) => group.next_deadline(),
        }
    }

    /// A group with no members, nothing pending and no offsets is forgotten.
    fn is_dead(&self) -> bool {
        self.offsets.is_empty() && !self.has_members() && self.next_deadline().is_none()
    }

    /// Kafka's group type name, as ListGroups v5 reports it.
    pub fn type_name(&self) -> &'static str {
        match self.membership {
            Membership::Consumer(_) => "consumer",
            _ => "classic",
        }
    }

    /// The group's state name as ListGroups and DescribeGroups report it.
    pub fn state_name(&self) -> &'static str {
        match &self.membership {
            Membership::None => "Empty",
            Membership::Classic(group) => group.state().as_str(),
            Membership::Consumer(group) => group.state().as_str(),
        }
    }

    pub fn protocol_type(&self) -> &str {
        match &self.membership {
            Membership::None => "",
            Membership::Classic(group) => group.protocol_type().unwrap_or(""),
            Membership::Consumer(_) => "consumer",
        }
    }
}

/// Deletions of the offsets of `group` that `expired` selects.
fn tombstones(
    group_id: &str,
    group: &Group,
    expired: impl Fn(&CommittedOffset) -> bool,
) -> Vec<OffsetChange> {
    group
        .offsets
        .iter()
        .flat_map(|(topic, partitions)| {
            partitions
                .iter()
                .filter(|(_, committed)| expired(committed))
                .map(|(&partition, _)| OffsetChange {
                    group: group_id.to_string(),
                    topic: topic.clone(),
                    partition,
                    value: None,
                })
        })
        .collect()
}

fn error_code(code: i16) -> Option<ErrorCode> {
    (code != 0).then(|| ErrorCode::try_from_code(code).unwrap_or(ErrorCode::UnknownServerError))
}

/// A partition index and its committed offset, if any.
pub type PartitionOffset = (i32, Option<CommittedOffset>);

/// The groups a shard owns, and the JoinGroup/SyncGroup requests waiting on them.
#[derive(Default)]
pub struct GroupCoordinator {
    pub groups: HashMap<String, Group>,
    waiting: HashMap<u64, oneshot::Sender<classic::Effect>>,
    next_request_id: u64,
}

/// A parked JoinGroup or SyncGroup; resolves when the group answers it.
pub type Waiting = oneshot::Receiver<classic::Effect>;

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

    /// Forgets the groups kept in offsets partition `index` (of `count`): this broker no
    /// longer coordinates them, and their members' next requests send them to the new
    /// coordinator.
    pub fn unload_partition(&mut self, index: i32, count: i32) {
        self.groups
            .retain(|group, _| offsets::offsets_partition_for(group, count) != index);
    }

    /// Every committed offset: (group, topic, partition, offset), for lag metrics.
    pub fn committed_offsets(&self) -> Vec<(String, String, i32, i64)> {
        self.groups
            .iter()
            .flat_map(|(group, g)| {
                g.offsets.iter().flat_map(move |(topic, partitions)| {
                    partitions
                        .iter()
                        .map(move |(p, c)| (group.clone(), topic.clone(), *p, c.offset))
                })
            })
            .collect()
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
        &mut self,
        group: &str,
        member_id: &str,
        group_instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> Option<ErrorCode> {
        let code = match self.groups.get_mut(group).map(|g| &mut g.membership) {
            None | Some(Membership::None) if generation < 0 => return None,
            None | Some(Membership::None) => ErrorCode::IllegalGeneration.code(),
            Some(Membership::Classic(group)) => {
                group.validate_offset_commit(member_id, group_instance_id, generation, now_ms)
            }
            Some(Membership::Consumer(group)) => {
                group.validate_offset_commit(member_id, generation)
            }
        };
        error_code(code)
    }

    /// JoinGroup: parks the request until the group answers it (at once, or when the
    /// rebalance completes). The first join creates the group.
    pub fn join(
        &mut self,
        group_id: &str,
        request: classic::JoinRequest,
        config: &classic::GroupConfig,
        now_ms: i64,
    ) -> Result<Waiting, ErrorCode> {
        if group_id.is_empty() {
            return Err(ErrorCode::InvalidGroupId);
        }
        let group = self.groups.entry(group_id.to_string()).or_default();
        match &group.membership {
            Membership::Consumer(members) if !members.is_empty() => {
                return Err(ErrorCode::InconsistentGroupProtocol)
            }
            Membership::Classic(_) => {}
            _ => {
                group.membership = Membership::Classic(classic::ClassicGroup::new(
                    group_id.to_string(),
                    config.clone(),
                ))
            }
        }
        Ok(self.park(group_id, |group, request_id| {
            group.join(request_id, request, now_ms)
        }))
    }

    /// SyncGroup: parks the request until the leader's assignment arrives.
    pub fn sync(
        &mut self,
        group_id: &str,
        request: classic::SyncRequest,
        now_ms: i64,
    ) -> Result<Waiting, ErrorCode> {
        match self.groups.get(group_id).map(|g| &g.membership) {
            Some(Membership::Classic(_)) => Ok(self.park(group_id, |group, request_id| {
                group.sync(request_id, request, now_ms)
            })),
            _ => Err(ErrorCode::UnknownMemberId),
        }
    }

    fn park(
        &mut self,
        group_id: &str,
        call: impl FnOnce(&mut classic::ClassicGroup, u64) -> Vec<classic::Effect>,
    ) -> Waiting {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let (answer, waiting) = oneshot::channel();
        self.waiting.insert(request_id, answer);
        if let Some(Membership::Classic(group)) =
            self.groups.get_mut(group_id).map(|g| &mut g.membership)
        {
            let effects = call(group, request_id);
            self.deliver(effects);
        }
        waiting
    }

    fn deliver(&mut self, effects: Vec<classic::Effect>) {
        for effect in effects {
            if let Some(answer) = self.waiting.remove(&effect.request_id()) {
                // The client may have gone away; its member times out as usual.
                let _ = answer.send(effect);
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
        now_ms: i64,
    ) -> i16 {
        match self.groups.get_mut(group_id).map(|g| &mut g.membership) {
            Some(Membership::Classic(group)) => {
                group.heartbeat(member_id, instance_id, generation, now_ms)
            }
            _ => ErrorCode::UnknownMemberId.code(),
        }
    }

    /// LeaveGroup: the error code of each member leaving, or of the whole request.
    pub fn leave(
        &mut self,
        group_id: &str,
        members: &[(String, Option<String>)],
        now_ms: i64,
    ) -> Result<Vec<i16>, ErrorCode> {
        let Some(Membership::Classic(group)) =
            self.groups.get_mut(group_id).map(|g| &mut g.membership)
        else {
            return Err(ErrorCode::UnknownMemberId);
        };
        let (codes, effects) = group.leave(members, now_ms);
        self.deliver(effects);
        self.forget_if_dead(group_id);
        Ok(codes)
    }

    /// DeleteGroups: checks that the group may go and returns the tombstones of its
    /// offsets; the caller stores them, then calls [`GroupCoordinator::remove`].
    pub fn deletion(&self, group_id: &str) -> Result<Vec<OffsetChange>, ErrorCode> {
        let group = self
            .groups
            .get(group_id)
            .ok_or(ErrorCode::GroupIdNotFound)?;
        if group.has_members() {
            return Err(ErrorCode::NonEmptyGroup);
        }
        Ok(tombstones(group_id, group, |_| true))
    }

    pub fn remove(&mut self, group_id: &str) {
        self.groups.remove(group_id);
    }

    /// Offsets of groups without members committed longer ago than `retention_ms`
    /// (Kafka's offsets.retention.minutes), as tombstones to store.
    pub fn expired_offsets(&self, retention_ms: i64, now_ms: i64) -> Vec<OffsetChange> {
        self.groups
            .iter()
            .filter(|(_, group)| !group.has_members())
            .flat_map(|(group_id, group)| {
                tombstones(group_id, group, |c| {
                    c.commit_timestamp_ms + retention_ms < now_ms
                })
            })
            .collect()
    }

    /// A KIP-848 heartbeat. A consumer group is created by its first member's join
    /// (epoch 0).
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
        // A member the group does not know (its group was forgotten, or the broker
        // restarted: membership is not persisted) is told UNKNOWN_MEMBER_ID, which
        // clients answer by rejoining; GROUP_ID_NOT_FOUND would be fatal to them.
        let forgotten = "the member is not in the group: rejoin with epoch 0";
        let group = match self.groups.get_mut(group_id) {
            Some(group) => group,
            None if joining => self.groups.entry(group_id.to_string()).or_default(),
            None => return refuse(ErrorCode::UnknownMemberId, forgotten),
        };
        let without_members = match &group.membership {
            Membership::None => true,
            // An empty classic group (only offsets left) may become a consumer group.
            Membership::Classic(members) => members.is_empty() && members.next_deadline().is_none(),
            Membership::Consumer(_) => false,
        };
        if without_members {
            if !joining {
                return refuse(ErrorCode::UnknownMemberId, forgotten);
            }
            group.membership = Membership::Consumer(consumer::ConsumerGroup::new(
                group_id.to_string(),
                config.clone(),
            ));
        }
        let response = match &mut group.membership {
            Membership::Consumer(members) => members.heartbeat(request, topics, now_ms),
            _ => refuse(
                ErrorCode::GroupIdNotFound,
                "the group is a classic group with members",
            ),
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
            let effects = match self.groups.get_mut(&group_id).map(|g| &mut g.membership) {
                Some(Membership::Classic(members)) => members.tick(now_ms),
                Some(Membership::Consumer(members)) => {
                    members.tick(now_ms);
                    Vec::new()
                }
                _ => Vec::new(),
            };
            self.deliver(effects);
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
