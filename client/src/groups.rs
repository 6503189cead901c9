//! Consumer groups: coordinators, listing and describing, committed offsets, and
//! membership through KIP-848's ConsumerGroupHeartbeat (the broker assigns partitions).

use bytes::{Buf, Bytes};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use uuid::Uuid;

use crate::admin::{missing, Outcomes};
use crate::client::{retrying, Client};
use crate::error::{check, Error, Result};
use crate::Connection;

/// FindCoordinator's key type of groups.
const GROUP_KEY: i8 = 0;

#[derive(Debug, Serialize)]
pub struct GroupListing {
    pub group_id: String,
    /// `consumer` (KIP-848) or `classic`; empty from brokers before ListGroups v5.
    pub group_type: String,
    pub state: String,
    pub protocol_type: String,
}

#[derive(Debug, Serialize)]
pub struct GroupDescription {
    pub group_id: String,
    pub group_type: &'static str,
    pub state: String,
    /// The server assignor (consumer groups) or the chosen protocol (classic groups).
    pub assignor: String,
    /// The group epoch (consumer groups only).
    pub group_epoch: Option<i32>,
    pub coordinator: i32,
    pub members: Vec<GroupMember>,
}

#[derive(Debug, Serialize)]
pub struct GroupMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    /// Consumer groups only.
    pub member_epoch: Option<i32>,
    pub assignment: Vec<AssignedPartitions>,
}

#[derive(Debug, Serialize)]
pub struct AssignedPartitions {
    pub topic: String,
    pub partitions: Vec<i32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub metadata: Option<String>,
}

/// A member of a consumer group as its requests identify it.
#[derive(Clone, Debug)]
pub struct Member {
    pub member_id: String,
    pub member_epoch: i32,
}

/// Partitions assigned to a member, by topic id.
pub type Assignment = Vec<(Uuid, Vec<i32>)>;

/// Member epoch of a heartbeat that leaves the group.
pub const LEAVE_EPOCH: i32 = -1;

/// What a ConsumerGroupHeartbeat sends besides the member.
pub struct Heartbeat<'a> {
    /// Topics subscribed to: required when joining, `None` when unchanged.
    pub subscription: Option<&'a [String]>,
    /// The partitions the member owns now (`None` when unchanged), acknowledging an
    /// assignment.
    pub owned: Option<&'a [(Uuid, Vec<i32>)]>,
    pub rebalance_timeout_ms: i32,
}

#[derive(Debug)]
pub struct HeartbeatAnswer {
    pub member_id: String,
    pub member_epoch: i32,
    pub heartbeat_interval_ms: i32,
    /// The member's new assignment, by topic id, when it changed.
    pub assignment: Option<Assignment>,
}

impl Client {
    /// The node id of the broker coordinating `group`.
    pub fn coordinator(&mut self, group: &str) -> Result<i32> {
        if let Some(&node) = self.coordinators.get(group) {
            return Ok(node);
        }
        let timeout = self.options().timeout;
        let (node_id, addr) = retrying(timeout, || find_coordinator(self.bootstrap(), group))?;
        self.remember_address(node_id, addr);
        self.coordinators.insert(group.to_string(), node_id);
        Ok(node_id)
    }

    /// Runs `call` on the coordinator of `group`, retrying while it is loading.
    fn on_coordinator<T>(
        &mut self,
        group: &str,
        mut call: impl FnMut(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let node = self.coordinator(group)?;
        let timeout = self.options().timeout;
        retrying(timeout, || self.with_node(node, &mut call))
    }

    /// Groups on every broker, by id.
    pub fn list_groups(&mut self) -> Result<Vec<GroupListing>> {
        let mut listed = Vec::new();
        for node in self.broker_ids()? {
            let response =
                self.with_node(node, |c| c.request(.., |_| ListGroupsRequest::default()))?;
            check(response.error_code, None, || {
                format!("list groups on broker {node}")
            })?;
            listed.extend(response.groups.into_iter().map(|g| GroupListing {
                group_id: g.group_id.to_string(),
                group_type: g.group_type.to_string(),
                state: g.group_state.to_string(),
                protocol_type: g.protocol_type.to_string(),
            }));
        }
        listed.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        Ok(listed)
    }

    /// Describes a group: as a consumer group (ConsumerGroupDescribe) when it is one,
    /// else as a classic group (DescribeGroups).
    pub fn describe_group(&mut self, group: &str) -> Result<GroupDescription> {
        let coordinator = self.coordinator(group)?;
        let consumer = self.on_coordinator(group, |c| describe_consumer_group(c, group))?;
        let mut description = match consumer {
            Some(description) => description,
            None => self.on_coordinator(group, |c| describe_classic_group(c, group))?,
        };
        description.coordinator = coordinator;
        Ok(description)
    }

    pub fn delete_groups(&mut self, groups: &[String]) -> Result<Outcomes> {
        let mut outcomes = Vec::with_capacity(groups.len());
        for group in groups {
            let response = self.on_coordinator(group, |c| {
                c.request(.., |_| {
                    DeleteGroupsRequest::default().with_groups_names(vec![GroupId(text(group))])
                })
            })?;
            let outcome = response
                .results
                .iter()
                .find(|r| r.group_id.as_str() == group)
                .ok_or_else(|| missing("DeleteGroups", group))
                .and_then(|r| check(r.error_code, None, || format!("delete group {group}")));
            outcomes.push((group.clone(), outcome));
        }
        Ok(outcomes)
    }

    /// The offsets `group` committed, for `topics` (every topic when `None`). Partitions
    /// without a commit are left out.
    pub fn committed_offsets(
        &mut self,
        group: &str,
        topics: Option<&[(String, Vec<i32>)]>,
        member: Option<&Member>,
    ) -> Result<Vec<CommittedOffset>> {
        self.on_coordinator(group, |c| offset_fetch(c, group, topics, member))
    }

    /// Commits `(topic, partition, offset)` for `group`: as `member` of it, or, with no
    /// member, as an admin (generation -1), which the broker allows only while the group
    /// has no members.
    pub fn commit_offsets(
        &mut self,
        group: &str,
        member: Option<&Member>,
        offsets: &[(String, i32, i64)],
    ) -> Result<()> {
        let request = offset_commit_request(group, member, offsets);
        let response = self.on_coordinator(group, |c| c.request(2.., |_| request.clone()))?;
        for topic in &response.topics {
            for partition in &topic.partitions {
                check(partition.error_code, None, || {
                    format!(
                        "commit offset of group {group} for {}-{}",
                        topic.name.as_str(),
                        partition.partition_index
                    )
                })?;
            }
        }
        Ok(())
    }

    /// One ConsumerGroupHeartbeat of `member` (epoch 0 joins, [`LEAVE_EPOCH`] leaves).
    pub fn heartbeat(
        &mut self,
        group: &str,
        member: &Member,
        heartbeat: &Heartbeat,
    ) -> Result<HeartbeatAnswer> {
        let request = heartbeat_request(group, member, heartbeat);
        let node = self.coordinator(group)?;
        let response = self.with_node(node, |c| c.request(.., |_| request))?;
        check(response.error_code, response.error_message.as_ref(), || {
            format!("heartbeat in group {group}")
        })?;
        Ok(HeartbeatAnswer {
            member_id: response
                .member_id
                .map_or_else(|| member.member_id.clone(), |id| id.to_string()),
            member_epoch: response.member_epoch,
            heartbeat_interval_ms: response.heartbeat_interval_ms,
            assignment: response.assignment.map(|a| {
                a.topic_partitions
                    .into_iter()
                    .map(|t| (t.topic_id, t.partitions))
                    .collect()
            }),
        })
    }
}

fn text(value: &str) -> StrBytes {
    StrBytes::from_string(value.to_string())
}

/// FindCoordinator for one group: the coordinator's node id and address.
fn find_coordinator(connection: &mut Connection, group: &str) -> Result<(i32, String)> {
    let response = connection.request(.., |version| {
        let request = FindCoordinatorRequest::default().with_key_type(GROUP_KEY);
        // v4 asks about a list of keys.
        if version >= 4 {
            request.with_coordinator_keys(vec![text(group)])
        } else {
            request.with_key(text(group))
        }
    })?;
    let context = || format!("find the coordinator of group {group}");
    match response.coordinators.first() {
        Some(c) => {
            check(c.error_code, c.error_message.as_ref(), context)?;
            Ok((c.node_id.0, format!("{}:{}", c.host.as_str(), c.port)))
        }
        None => {
            check(
                response.error_code,
                response.error_message.as_ref(),
                context,
            )?;
            Ok((
                response.node_id.0,
                format!("{}:{}", response.host.as_str(), response.port),
            ))
        }
    }
}

/// ConsumerGroupDescribe; `None` when the group is not a consumer group (or the broker
/// does not know KIP-848).
fn describe_consumer_group(
    connection: &mut Connection,
    group: &str,
) -> Result<Option<GroupDescription>> {
    if connection
        .version_for::<ConsumerGroupDescribeRequest>(..)
        .is_err()
    {
        return Ok(None);
    }
    let response = connection.request(.., |_| {
        ConsumerGroupDescribeRequest::default().with_group_ids(vec![GroupId(text(group))])
    })?;
    let described = response
        .groups
        .into_iter()
        .find(|g| g.group_id.as_str() == group)
        .ok_or_else(|| missing("ConsumerGroupDescribe", group))?;
    if described.error_code == ResponseError::GroupIdNotFound.code() {
        return Ok(None);
    }
    check(
        described.error_code,
        described.error_message.as_ref(),
        || format!("describe group {group}"),
    )?;
    let members = described
        .members
        .into_iter()
        .map(|m| GroupMember {
            member_id: m.member_id.to_string(),
            instance_id: m.instance_id.map(|i| i.to_string()),
            client_id: m.client_id.to_string(),
            client_host: m.client_host.to_string(),
            member_epoch: Some(m.member_epoch),
            assignment: m
                .assignment
                .topic_partitions
                .into_iter()
                .map(|t| AssignedPartitions {
                    topic: t.topic_name.to_string(),
                    partitions: t.partitions,
                })
                .collect(),
        })
        .collect();
    Ok(Some(GroupDescription {
        group_id: group.to_string(),
        group_type: "consumer",
        state: described.group_state.to_string(),
        assignor: described.assignor_name.to_string(),
        group_epoch: Some(described.group_epoch),
        coordinator: -1,
        members,
    }))
}

fn describe_classic_group(connection: &mut Connection, group: &str) -> Result<GroupDescription> {
    let response = connection.request(.., |_| {
        DescribeGroupsRequest::default().with_groups(vec![GroupId(text(group))])
    })?;
    let described = response
        .groups
        .into_iter()
        .find(|g| g.group_id.as_str() == group)
        .ok_or_else(|| missing("DescribeGroups", group))?;
    check(
        described.error_code,
        described.error_message.as_ref(),
        || format!("describe group {group}"),
    )?;
    // Kafka describes a group it does not know as Dead rather than failing.
    if described.group_state.as_str() == "Dead" {
        return Err(Error::Kafka {
            context: format!("describe group {group}"),
            code: ResponseError::GroupIdNotFound,
            message: Some("the group does not exist".into()),
        });
    }
    let members = described
        .members
        .into_iter()
        .map(|m| GroupMember {
            member_id: m.member_id.to_string(),
            instance_id: m.group_instance_id.map(|i| i.to_string()),
            client_id: m.client_id.to_string(),
            client_host: m.client_host.to_string(),
            member_epoch: None,
            // Only consumers' assignments have a known layout.
            assignment: if described.protocol_type.as_str() == "consumer" {
                decode_consumer_assignment(m.member_assignment).unwrap_or_default()
            } else {
                Vec::new()
            },
        })
        .collect();
    Ok(GroupDescription {
        group_id: group.to_string(),
        group_type: "classic",
        state: described.group_state.to_string(),
        assignor: described.protocol_data.to_string(),
        group_epoch: None,
        coordinator: -1,
        members,
    })
}

/// The topics and partitions of a classic consumer's assignment (Kafka's
/// `ConsumerProtocolAssignment`: version, then [topic, [partition]]); `None` when it does
/// not parse.
fn decode_consumer_assignment(mut data: Bytes) -> Option<Vec<AssignedPartitions>> {
    fn i16_len(data: &mut Bytes) -> Option<usize> {
        (data.remaining() >= 2)
            .then(|| data.get_i16())
            .and_then(|n| usize::try_from(n).ok())
    }
    fn i32_count(data: &mut Bytes) -> Option<usize> {
        (data.remaining() >= 4)
            .then(|| data.get_i32())
            .and_then(|n| usize::try_from(n).ok())
    }
    if data.is_empty() {
        return Some(Vec::new());
    }
    i16_len(&mut data)?; // the version
    let topics = i32_count(&mut data)?;
    let mut assignment = Vec::new();
    for _ in 0..topics {
        let len = i16_len(&mut data)?;
        let topic = String::from_utf8(data.get(..len)?.to_vec()).ok()?;
        data.advance(len);
        let count = i32_count(&mut data)?;
        if data.remaining() < count * 4 {
            return None;
        }
        let partitions = (0..count).map(|_| data.get_i32()).collect();
        assignment.push(AssignedPartitions { topic, partitions });
    }
    Some(assignment)
}

fn offset_fetch(
    connection: &mut Connection,
    group: &str,
    topics: Option<&[(String, Vec<i32>)]>,
    member: Option<&Member>,
) -> Result<Vec<CommittedOffset>> {
    let response = connection.request(1.., |version| {
        offset_fetch_request(version, group, topics, member)
    })?;
    let context = || format!("fetch offsets of group {group}");
    // v8 answers per group.
    let (error_code, topics): (i16, Vec<(TopicName, Vec<PartitionCommit>)>) =
        match response.groups.into_iter().next() {
            Some(g) => (
                g.error_code,
                g.topics
                    .into_iter()
                    .map(|t| (t.name, t.partitions.into_iter().map(Into::into).collect()))
                    .collect(),
            ),
            None => (
                response.error_code,
                response
                    .topics
                    .into_iter()
                    .map(|t| (t.name, t.partitions.into_iter().map(Into::into).collect()))
                    .collect(),
            ),
        };
    check(error_code, None, context)?;
    let mut committed = Vec::new();
    for (topic, partitions) in topics {
        for p in partitions {
            check(p.error_code, None, context)?;
            if p.offset >= 0 {
                committed.push(CommittedOffset {
                    topic: topic.to_string(),
                    partition: p.partition,
                    offset: p.offset,
                    metadata: p.metadata.map(|m| m.to_string()),
                });
            }
        }
    }
    Ok(committed)
}

/// A partition of an OffsetFetch answer, whose layout differs before and from v8.
struct PartitionCommit {
    partition: i32,
    offset: i64,
    metadata: Option<StrBytes>,
    error_code: i16,
}

/// Both layouts carry the same fields.
macro_rules! partition_commit_from {
    ($($layout:ty),*) => {$(
        impl From<$layout> for PartitionCommit {
            fn from(p: $layout) -> Self {
                PartitionCommit {
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p.metadata,
                    error_code: p.error_code,
                }
            }
        }
    )*};
}

partition_commit_from!(
    offset_fetch_response::OffsetFetchResponsePartitions,
    offset_fetch_response::OffsetFetchResponsePartition
);

fn offset_fetch_request(
    version: i16,
    group: &str,
    topics: Option<&[(String, Vec<i32>)]>,
    member: Option<&Member>,
) -> OffsetFetchRequest {
    if version >= 8 {
        let topics = topics.map(|topics| {
            topics
                .iter()
                .map(|(name, partitions)| {
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(TopicName(text(name)))
                        .with_partition_indexes(partitions.clone())
                })
                .collect()
        });
        let mut request_group = offset_fetch_request::OffsetFetchRequestGroup::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(topics);
        // v9 lets a member of a consumer group read its offsets as such.
        if let (Some(member), true) = (member, version >= 9) {
            request_group = request_group
                .with_member_id(Some(text(&member.member_id)))
                .with_member_epoch(member.member_epoch);
        }
        OffsetFetchRequest::default().with_groups(vec![request_group])
    } else {
        let topics = topics.map(|topics| {
            topics
                .iter()
                .map(|(name, partitions)| {
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(TopicName(text(name)))
                        .with_partition_indexes(partitions.clone())
                })
                .collect()
        });
        OffsetFetchRequest::default()
            .with_group_id(GroupId(text(group)))
            .with_topics(topics)
    }
}

fn offset_commit_request(
    group: &str,
    member: Option<&Member>,
    offsets: &[(String, i32, i64)],
) -> OffsetCommitRequest {
    let mut topics: Vec<offset_commit_request::OffsetCommitRequestTopic> = Vec::new();
    for (topic, partition, offset) in offsets {
        let partition = offset_commit_request::OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(*offset);
        match topics.iter_mut().find(|t| t.name.as_str() == topic) {
            Some(entry) => entry.partitions.push(partition),
            None => topics.push(
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(text(topic)))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_generation_id_or_member_epoch(member.map_or(-1, |m| m.member_epoch))
        .with_member_id(text(member.map_or("", |m| &m.member_id)))
        .with_topics(topics)
}

fn heartbeat_request(
    group: &str,
    member: &Member,
    heartbeat: &Heartbeat,
) -> ConsumerGroupHeartbeatRequest {
    let owned = heartbeat.owned.map(|owned| {
        owned
            .iter()
            .map(|(topic_id, partitions)| {
                consumer_group_heartbeat_request::TopicPartitions::default()
                    .with_topic_id(*topic_id)
                    .with_partitions(partitions.clone())
            })
            .collect()
    });
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(text(group)))
        .with_member_id(text(&member.member_id))
        .with_member_epoch(member.member_epoch)
        .with_rebalance_timeout_ms(heartbeat.rebalance_timeout_ms)
        .with_subscribed_topic_names(
            heartbeat
                .subscription
                .map(|topics| topics.iter().map(|t| TopicName(text(t))).collect()),
        )
        .with_topic_partitions(owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    #[test]
    fn decodes_classic_consumer_assignments() {
        let mut data = bytes::BytesMut::new();
        data.put_i16(0);
        data.put_i32(1);
        data.put_i16(4);
        data.put_slice(b"logs");
        data.put_i32(2);
        data.put_i32(0);
        data.put_i32(3);
        data.put_i32(-1); // user data: null
        let assignment = decode_consumer_assignment(data.freeze()).unwrap();
        assert_eq!(assignment.len(), 1);
        assert_eq!(assignment[0].topic, "logs");
        assert_eq!(assignment[0].partitions, vec![0, 3]);
        assert!(decode_consumer_assignment(Bytes::from_static(&[0, 0, 0, 0, 0, 9])).is_none());
    }
}
