//! A KIP-848 consumer group member (ConsumerGroupHeartbeat, broker-side assignment) on a
//! blocking connection to the group coordinator. Heartbeats come once per heartbeat
//! interval, so a round trip on the consumer's own thread costs it nothing measurable.

use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::{bail, Context, Result};
use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ConsumerGroupHeartbeatRequest, FindCoordinatorRequest, GroupId, OffsetCommitRequest,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::admin::{error_name, Admin, Layout};

/// Member epoch that leaves the group for good.
const LEAVE_EPOCH: i32 = -1;
/// Coordinator type of a consumer group in FindCoordinator.
const GROUP_KEY_TYPE: i8 = 0;
/// Kafka's default `max.poll.interval.ms`, which KIP-848 clients send as rebalance timeout.
const REBALANCE_TIMEOUT_MS: i32 = 300_000;

/// One member of a consumer group.
pub struct GroupMember {
    coordinator: Admin,
    group: String,
    heartbeat_version: i16,
    member_id: String,
    epoch: i32,
    /// Partitions the coordinator gave this member, as indices into the layout.
    pub owned: BTreeSet<usize>,
    /// How often the coordinator wants heartbeats, in milliseconds.
    pub interval_ms: u64,
    /// The topic names the member subscribes to, sent only in its first heartbeat.
    subscription: Option<Vec<String>>,
}

impl GroupMember {
    /// Finds the group's coordinator and joins (the first heartbeat, epoch 0).
    pub fn join(bootstrap: SocketAddr, group: &str, layout: &Layout) -> Result<Self> {
        let mut admin = Admin::connect(bootstrap)?;
        let version = admin.pick_version(ApiKey::FindCoordinator, 1, 3)?;
        let resp = admin.call(
            &FindCoordinatorRequest::default()
                .with_key(StrBytes::from_string(group.to_owned()))
                .with_key_type(GROUP_KEY_TYPE),
            version,
        )?;
        if resp.error_code != 0 {
            bail!("FindCoordinator {group}: {}", error_name(resp.error_code));
        }
        let addr = (resp.host.as_str(), resp.port as u16)
            .to_socket_addrs()?
            .next()
            .context("the coordinator has no address")?;
        let coordinator = if addr == bootstrap {
            admin
        } else {
            Admin::connect(addr)?
        };
        let heartbeat_version = coordinator.pick_version(ApiKey::ConsumerGroupHeartbeat, 0, 1)?;
        let mut member = GroupMember {
            coordinator,
            group: group.to_owned(),
            heartbeat_version,
            // v1 members name themselves; v0 members get a name from the coordinator.
            member_id: if heartbeat_version >= 1 {
                uuid::Uuid::new_v4().to_string()
            } else {
                String::new()
            },
            epoch: 0,
            owned: BTreeSet::new(),
            interval_ms: 5_000,
            subscription: Some(layout.topics.clone()),
        };
        member.heartbeat(layout)?;
        Ok(member)
    }

    /// Sends a heartbeat reporting `owned`; returns true when the coordinator changed the
    /// assignment (the member must stop fetching what it lost, then heartbeat again to
    /// acknowledge).
    pub fn heartbeat(&mut self, layout: &Layout) -> Result<bool> {
        let mut owned: Vec<TopicPartitions> = Vec::new();
        for &pi in &self.owned {
            let p = &layout.partitions[pi];
            let id = layout.topic_ids[p.topic];
            match owned.iter_mut().find(|t| t.topic_id == id) {
                Some(t) => t.partitions.push(p.partition),
                None => owned.push(
                    TopicPartitions::default()
                        .with_topic_id(id)
                        .with_partitions(vec![p.partition]),
                ),
            }
        }
        let joining = self.subscription.is_some();
        let req = ConsumerGroupHeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_member_epoch(self.epoch)
            .with_rebalance_timeout_ms(if joining { REBALANCE_TIMEOUT_MS } else { -1 })
            .with_subscribed_topic_names(self.subscription.as_ref().map(|names| {
                names
                    .iter()
                    .map(|n| TopicName(StrBytes::from_string(n.clone())))
                    .collect()
            }))
            .with_topic_partitions(Some(owned));
        let resp = self.coordinator.call(&req, self.heartbeat_version)?;
        if resp.error_code != 0 {
            bail!(
                "ConsumerGroupHeartbeat {} (member epoch {}): {} {}",
                self.group,
                self.epoch,
                error_name(resp.error_code),
                resp.error_message.as_deref().unwrap_or("")
            );
        }
        if self.epoch == LEAVE_EPOCH {
            return Ok(false);
        }
        self.subscription = None;
        if let Some(id) = resp.member_id.filter(|id| !id.is_empty()) {
            self.member_id = id.to_string();
        }
        self.epoch = resp.member_epoch;
        self.interval_ms = u64::try_from(resp.heartbeat_interval_ms)
            .unwrap_or(0)
            .max(10);
        let Some(assignment) = resp.assignment else {
            return Ok(false);
        };
        let mut assigned = BTreeSet::new();
        for t in &assignment.topic_partitions {
            let Some(ti) = layout.topic_ids.iter().position(|id| *id == t.topic_id) else {
                bail!("assigned topic id {} is not one of the run's", t.topic_id);
            };
            for &partition in &t.partitions {
                let pi = layout
                    .partitions
                    .iter()
                    .position(|p| p.topic == ti && p.partition == partition)
                    .with_context(|| format!("assigned partition {partition} is unknown"))?;
                assigned.insert(pi);
            }
        }
        let changed = assigned != self.owned;
        self.owned = assigned;
        Ok(changed)
    }

    /// Commits `offsets` (layout index, next offset to read) for the group.
    pub fn commit(&mut self, layout: &Layout, offsets: &[(usize, i64)]) -> Result<()> {
        let version = self.coordinator.pick_version(ApiKey::OffsetCommit, 2, 9)?;
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for &(pi, offset) in offsets {
            let p = &layout.partitions[pi];
            let name = &layout.topics[p.topic];
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(p.partition)
                .with_committed_offset(offset)
                .with_committed_leader_epoch(-1);
            match topics.iter_mut().find(|t| t.name.as_str() == name) {
                Some(t) => t.partitions.push(partition),
                None => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(StrBytes::from_string(name.clone())))
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let req = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(self.group.clone())))
            .with_generation_id_or_member_epoch(self.epoch)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_topics(topics);
        let resp = self.coordinator.call(&req, version)?;
        for t in &resp.topics {
            for p in &t.partitions {
                if p.error_code != 0 {
                    bail!(
                        "OffsetCommit {}/{}: {}",
                        t.name.as_str(),
                        p.partition_index,
                        error_name(p.error_code)
                    );
                }
            }
        }
        Ok(())
    }

    /// Leaves the group, so its partitions go to the others at once rather than after the
    /// session timeout.
    pub fn leave(mut self, layout: &Layout) -> Result<()> {
        self.epoch = LEAVE_EPOCH;
        self.owned.clear();
        self.heartbeat(layout).map(|_| ())
    }
}

/// Joins `n` members and heartbeats them until the group is settled: every partition owned
/// by exactly one member and a whole round of heartbeats without a change. Fails after
/// `timeout_ms` (e.g. members of an earlier run still hold partitions).
pub fn join_settled(
    bootstrap: SocketAddr,
    group: &str,
    layout: &Layout,
    n: usize,
    timeout_ms: u64,
) -> Result<Vec<GroupMember>> {
    let mut members = (0..n)
        .map(|_| GroupMember::join(bootstrap, group, layout))
        .collect::<Result<Vec<_>>>()?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(timeout_ms);
    loop {
        let mut changed = false;
        for m in &mut members {
            changed |= m.heartbeat(layout)?;
        }
        let owned: usize = members.iter().map(|m| m.owned.len()).sum();
        let distinct: BTreeSet<usize> = members
            .iter()
            .flat_map(|m| m.owned.iter().copied())
            .collect();
        if !changed && owned == layout.partitions.len() && distinct.len() == owned {
            return Ok(members);
        }
        if std::time::Instant::now() > deadline {
            bail!(
                "group {group} did not settle within {timeout_ms} ms ({owned} of {} partitions \
                 owned): are members of an earlier run still in it?",
                layout.partitions.len()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
