//! Group API requests on the shard coordinating the group. The connection's shard
//! forwards them here whole (`ShardRequest::Group`); requests naming several groups are
//! split by coordinating shard first (see `handlers::group_routing`).

use std::rc::Rc;

use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::assignor::Assignor;
use super::consumer::{self, ConsumerGroupConfig, DescribedTopicPartitions};
use super::offsets::{encode_batch, CommittedOffset, OffsetChange, OFFSETS_TOPIC};
use super::{classic, Membership};
use crate::errors::ErrorCode;
use crate::handlers::ClientInfo;
use crate::shard::{now_ms, Shard};

pub async fn serve(
    shard: &Rc<Shard>,
    version: i16,
    client: ClientInfo,
    request: RequestKind,
) -> ResponseKind {
    match request {
        RequestKind::JoinGroup(request) => {
            ResponseKind::JoinGroup(join_group(shard, version, client, request).await)
        }
        RequestKind::SyncGroup(request) => {
            ResponseKind::SyncGroup(sync_group(shard, request).await)
        }
        RequestKind::Heartbeat(request) => ResponseKind::Heartbeat(heartbeat(shard, request)),
        RequestKind::LeaveGroup(request) => {
            ResponseKind::LeaveGroup(leave_group(shard, version, request))
        }
        RequestKind::ListGroups(request) => ResponseKind::ListGroups(list_groups(shard, request)),
        RequestKind::DescribeGroups(request) => {
            ResponseKind::DescribeGroups(describe_groups(shard, request))
        }
        RequestKind::DeleteGroups(request) => {
            ResponseKind::DeleteGroups(delete_groups(shard, request).await)
        }
        RequestKind::ConsumerGroupHeartbeat(request) => {
            ResponseKind::ConsumerGroupHeartbeat(consumer_group_heartbeat(shard, client, request))
        }
        RequestKind::ConsumerGroupDescribe(request) => {
            ResponseKind::ConsumerGroupDescribe(consumer_group_describe(shard, request))
        }
        RequestKind::OffsetCommit(request) => {
            ResponseKind::OffsetCommit(offset_commit(shard, request).await)
        }
        RequestKind::OffsetFetch(request) => {
            ResponseKind::OffsetFetch(offset_fetch(shard, version, request))
        }
        RequestKind::OffsetDelete(request) => {
            ResponseKind::OffsetDelete(offset_delete(shard, request).await)
        }
        // Only the group handlers forward here, with the requests listed above.
        _ => unreachable!("not a group request"),
    }
}

/// How long a commit waits for the offsets partition's in-sync replicas.
const OFFSET_COMMIT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Appends offset changes of `group` to its offsets partition and waits until they are
/// fdatasynced and replicated to the ISR: an acknowledged commit survives a crash and a
/// coordinator failover. Applies them in memory after.
async fn store_offsets(
    shard: &Rc<Shard>,
    group: &str,
    changes: Vec<OffsetChange>,
) -> Result<(), ErrorCode> {
    let partition = shard
        .group_placement(group)
        .and_then(|(partition, _)| shard.partition(OFFSETS_TOPIC, partition))
        .ok_or(ErrorCode::NotCoordinator)?;
    let appended = partition.append(&encode_batch(&changes, now_ms()), -1, now_ms());
    if appended.error_code != 0 {
        tracing::error!(
            group,
            "storing offsets failed: {:?}",
            appended.error_message
        );
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    // Bounded: a commit the ISR cannot take within the timeout fails, and the client retries.
    let acknowledged = futures::future::select(
        Box::pin(partition.wait_acknowledged(appended.last_offset, appended.leader_epoch)),
        Box::pin(corelog_io::sleep(OFFSET_COMMIT_TIMEOUT)),
    )
    .await;
    match acknowledged {
        futures::future::Either::Left((Ok(()), _)) => {}
        futures::future::Either::Left((Err(code), _)) => {
            tracing::warn!(group, "storing offsets failed: {code:?}");
            return Err(ErrorCode::NotCoordinator);
        }
        futures::future::Either::Right(_) => return Err(ErrorCode::RequestTimedOut),
    }
    shard.groups.borrow_mut().apply(changes);
    Ok(())
}

async fn offset_commit(shard: &Rc<Shard>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.to_string();
    let refused = shard.groups.borrow_mut().validate_commit(
        &group,
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(StrBytes::as_str),
        request.generation_id_or_member_epoch,
        now_ms(),
    );
    let image = shard.image();
    let max_metadata = shard.config.groups.offset_metadata_max_bytes;
    let now = now_ms();
    let mut changes = Vec::new();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let known = image.topic(topic.name.as_str());
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let metadata = p
                        .committed_metadata
                        .as_ref()
                        .map(StrBytes::as_str)
                        .unwrap_or("");
                    let code = match refused {
                        Some(code) => code,
                        None if !known.is_some_and(|t| {
                            (0..t.record.partitions).contains(&p.partition_index)
                        }) =>
                        {
                            ErrorCode::UnknownTopicOrPartition
                        }
                        None if metadata.len() > max_metadata => ErrorCode::OffsetMetadataTooLarge,
                        None => {
                            changes.push(OffsetChange {
                                group: group.clone(),
                                topic: topic.name.to_string(),
                                partition: p.partition_index,
                                value: Some(CommittedOffset {
                                    offset: p.committed_offset,
                                    leader_epoch: p.committed_leader_epoch,
                                    metadata: metadata.to_string(),
                                    commit_timestamp_ms: now,
                                }),
                            });
                            return OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index);
                        }
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect::<Vec<_>>();
    let mut response = OffsetCommitResponse::default().with_topics(topics);
    if !changes.is_empty() {
        if let Err(code) = store_offsets(shard, &group, changes).await {
            // Every partition that was about to be stored failed with it.
            for partition in response
                .topics
                .iter_mut()
                .flat_map(|t| t.partitions.iter_mut())
            {
                if partition.error_code == 0 {
                    partition.error_code = code.code();
                }
            }
        }
    }
    response
}

/// The OffsetFetch layouts of v0-7 (one group) and v8+ (several) differ only in type
/// names: this answers one group's request in either.
macro_rules! fetch_group_offsets {
    ($groups:expr, $group:expr, $asked:expr, $topic:ty, $partition:ty) => {{
        let wanted = $asked.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        $groups
            .fetch_offsets($group, wanted)
            .into_iter()
            .map(|(topic, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, committed)| {
                        let (offset, epoch, metadata) = fetched_fields(committed);
                        <$partition>::default()
                            .with_partition_index(index)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(epoch)
                            .with_metadata(Some(metadata))
                    })
                    .collect();
                <$topic>::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(partitions)
            })
            .collect()
    }};
}

/// OffsetFetch: v0-7 name one group, v8+ a list of them (this shard's share of it).
fn offset_fetch(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let groups = shard.groups.borrow();
    if version < 8 {
        let group = request.group_id.as_str();
        let topics = fetch_group_offsets!(
            groups,
            group,
            request.topics,
            OffsetFetchResponseTopic,
            OffsetFetchResponsePartition
        );
        return OffsetFetchResponse::default().with_topics(topics);
    }
    let results = request
        .groups
        .into_iter()
        .map(|group| {
            let id = group.group_id.as_str();
            let topics = fetch_group_offsets!(
                groups,
                id,
                group.topics,
                OffsetFetchResponseTopics,
                OffsetFetchResponsePartitions
            );
            OffsetFetchResponseGroup::default()
                .with_group_id(group.group_id)
                .with_topics(topics)
        })
        .collect();
    OffsetFetchResponse::default().with_groups(results)
}

/// Kafka answers an offset never committed with offset -1 and empty metadata.
fn fetched_fields(committed: Option<CommittedOffset>) -> (i64, i32, StrBytes) {
    match committed {
        Some(c) => (c.offset, c.leader_epoch, StrBytes::from_string(c.metadata)),
        None => (-1, -1, StrBytes::default()),
    }
}

async fn offset_delete(shard: &Rc<Shard>, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
    let group = request.group_id.to_string();
    // Topics the group's members consume keep their offsets.
    let subscribed: Vec<bool> = {
        let groups = shard.groups.borrow();
        let Some(g) = groups.groups.get(&group) else {
            return OffsetDeleteResponse::default()
                .with_error_code(ErrorCode::GroupIdNotFound.code());
        };
        request
            .topics
            .iter()
            .map(|t| g.is_subscribed_to(t.name.as_str()))
            .collect()
    };
    let mut changes = Vec::new();
    let topics = request
        .topics
        .iter()
        .zip(subscribed)
        .map(|(topic, in_use)| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let result = OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index);
                    if in_use {
                        return result.with_error_code(ErrorCode::GroupSubscribedToTopic.code());
                    }
                    changes.push(OffsetChange {
                        group: group.clone(),
                        topic: topic.name.to_string(),
                        partition: p.partition_index,
                        value: None,
                    });
                    result
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(topic.name.clone())
                .with_partitions(partitions)
        })
        .collect();
    if !changes.is_empty() {
        if let Err(code) = store_offsets(shard, &group, changes).await {
            return OffsetDeleteResponse::default().with_error_code(code.code());
        }
    }
    OffsetDeleteResponse::default().with_topics(topics)
}

fn consumer_group_heartbeat(
    shard: &Rc<Shard>,
    client: ClientInfo,
    request: ConsumerGroupHeartbeatRequest,
) -> ConsumerGroupHeartbeatResponse {
    let settings = &shard.config.groups;
    let config = ConsumerGroupConfig {
        session_timeout_ms: settings.consumer_session_timeout_ms,
        heartbeat_interval_ms: settings.consumer_heartbeat_interval_ms,
        max_size: settings.max_size,
        default_assignor: Assignor::Uniform,
    };
    let text = |s: Option<StrBytes>| s.map(|s| s.to_string());
    let heartbeat = consumer::HeartbeatRequest {
        member_id: request.member_id.to_string(),
        member_epoch: request.member_epoch,
        instance_id: text(request.instance_id),
        rack_id: text(request.rack_id),
        rebalance_timeout_ms: request.rebalance_timeout_ms,
        subscribed_topic_names: request
            .subscribed_topic_names
            .map(|names| names.into_iter().map(|n| n.to_string()).collect()),
        subscribed_topic_regex: text(request.subscribed_topic_regex),
        server_assignor: text(request.server_assignor),
        owned_partitions: request.topic_partitions.map(|owned| {
            owned
                .into_iter()
                .map(|t| (t.topic_id, t.partitions))
                .collect()
        }),
        client_id: client.client_id.to_string(),
        client_host: client.client_host.to_string(),
    };
    let image = shard.image();
    let answer = shard.groups.borrow_mut().consumer_heartbeat(
        request.group_id.as_str(),
        heartbeat,
        &*image,
        &config,
        now_ms(),
    );
    let assignment = answer.assignment.map(|topics| {
        consumer_group_heartbeat_response::Assignment::default().with_topic_partitions(
            topics
                .into_iter()
                .map(|(topic_id, partitions)| {
                    consumer_group_heartbeat_response::TopicPartitions::default()
                        .with_topic_id(topic_id)
                        .with_partitions(partitions)
                })
                .collect(),
        )
    });
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(answer.error_code)
        .with_error_message(answer.error_message.map(StrBytes::from_string))
        .with_member_id(Some(StrBytes::from_string(answer.member_id)))
        .with_member_epoch(answer.member_epoch)
        .with_heartbeat_interval_ms(answer.heartbeat_interval_ms)
        .with_assignment(assignment)
}

fn consumer_group_describe(
    shard: &Rc<Shard>,
    request: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    use consumer_group_describe_response::{Assignment, DescribedGroup, Member, TopicPartitions};
    let image = shard.image();
    let groups = shard.groups.borrow();
    let describe_partitions = |list: Vec<DescribedTopicPartitions>| {
        Assignment::default().with_topic_partitions(
            list.into_iter()
                .map(|t| {
                    TopicPartitions::default()
                        .with_topic_id(t.topic_id)
                        .with_topic_name(TopicName(StrBytes::from_string(t.topic_name)))
                        .with_partitions(t.partitions)
                })
                .collect(),
        )
    };
    let described = request
        .group_ids
        .into_iter()
        .map(|group_id| {
            let Some(Membership::Consumer(group)) =
                groups.groups.get(group_id.as_str()).map(|g| &g.membership)
            else {
                return DescribedGroup::default()
                    .with_group_id(group_id)
                    .with_error_code(ErrorCode::GroupIdNotFound.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "no consumer group with this id",
                    )));
            };
            let description = group.describe(&*image);
            let members = description
                .members
                .into_iter()
                .map(|m| {
                    Member::default()
                        .with_member_id(StrBytes::from_string(m.member_id))
                        .with_instance_id(m.instance_id.map(StrBytes::from_string))
                        .with_rack_id(m.rack_id.map(StrBytes::from_string))
                        .with_member_epoch(m.member_epoch)
                        .with_client_id(StrBytes::from_string(m.client_id))
                        .with_client_host(StrBytes::from_string(m.client_host))
                        .with_subscribed_topic_names(
                            m.subscribed_topic_names
                                .into_iter()
                                .map(|n| TopicName(StrBytes::from_string(n)))
                                .collect(),
                        )
                        .with_subscribed_topic_regex(
                            m.subscribed_topic_regex.map(StrBytes::from_string),
                        )
                        .with_assignment(describe_partitions(m.assignment))
                        .with_target_assignment(describe_partitions(m.target_assignment))
                })
                .collect();
            DescribedGroup::default()
                .with_group_id(group_id)
                .with_group_state(StrBytes::from_static_str(description.state.as_str()))
                .with_group_epoch(description.group_epoch)
                .with_assignment_epoch(description.assignment_epoch)
                .with_assignor_name(StrBytes::from_string(description.assignor_name))
                .with_members(members)
        })
        .collect();
    ConsumerGroupDescribeResponse::default().with_groups(described)
}

fn classic_config(shard: &Shard) -> classic::GroupConfig {
    let settings = &shard.config.groups;
    classic::GroupConfig {
        initial_rebalance_delay_ms: settings.initial_rebalance_delay_ms,
        min_session_timeout_ms: settings.min_session_timeout_ms,
        max_session_timeout_ms: settings.max_session_timeout_ms,
        max_size: settings.max_size,
    }
}

fn text(value: Option<&StrBytes>) -> Option<String> {
    value.map(|v| v.to_string())
}

async fn join_group(
    shard: &Rc<Shard>,
    version: i16,
    client: ClientInfo,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let join = classic::JoinRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: text(request.group_instance_id.as_ref()),
        client_id: client.client_id.to_string(),
        client_host: client.client_host.to_string(),
        session_timeout_ms: request.session_timeout_ms,
        // JoinGroup v0 has no rebalance timeout; Kafka uses the session timeout.
        rebalance_timeout_ms: if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        protocol_type: request.protocol_type.to_string(),
        protocols: request
            .protocols
            .into_iter()
            .map(|p| (p.name.to_string(), p.metadata))
            .collect(),
        require_known_member_id: version >= 4,
        supports_skip_assignment: version >= 9,
        reason: text(request.reason.as_ref()),
    };
    let parked = shard.groups.borrow_mut().join(
        request.group_id.as_str(),
        join,
        &classic_config(shard),
        now_ms(),
    );
    let failed = |code: ErrorCode| {
        JoinGroupResponse::default()
            .with_error_code(code.code())
            .with_generation_id(-1)
            .with_member_id(request.member_id.clone())
    };
    let answer = match parked {
        Ok(waiting) => waiting.await,
        Err(code) => return failed(code),
    };
    let Ok(classic::Effect::Join { response, .. }) = answer else {
        return failed(ErrorCode::CoordinatorNotAvailable);
    };
    let members = response
        .members
        .into_iter()
        .map(|m| {
            join_group_response::JoinGroupResponseMember::default()
                .with_member_id(StrBytes::from_string(m.member_id))
                .with_group_instance_id(m.group_instance_id.map(StrBytes::from_string))
                .with_metadata(m.metadata)
        })
        .collect();
    JoinGroupResponse::default()
        .with_error_code(response.error_code)
        .with_generation_id(response.generation_id)
        .with_protocol_type(response.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(response.protocol_name.map(StrBytes::from_string))
        .with_leader(StrBytes::from_string(response.leader))
        .with_skip_assignment(response.skip_assignment)
        .with_member_id(StrBytes::from_string(response.member_id))
        .with_members(members)
}

async fn sync_group(shard: &Rc<Shard>, request: SyncGroupRequest) -> SyncGroupResponse {
    let sync = classic::SyncRequest {
        member_id: request.member_id.to_string(),
        group_instance_id: text(request.group_instance_id.as_ref()),
        generation_id: request.generation_id,
        protocol_type: text(request.protocol_type.as_ref()),
        protocol_name: text(request.protocol_name.as_ref()),
        assignments: request
            .assignments
            .into_iter()
            .map(|a| (a.member_id.to_string(), a.assignment))
            .collect(),
    };
    let parked = shard
        .groups
        .borrow_mut()
        .sync(request.group_id.as_str(), sync, now_ms());
    let answer = match parked {
        Ok(waiting) => waiting.await,
        Err(code) => return SyncGroupResponse::default().with_error_code(code.code()),
    };
    let Ok(classic::Effect::Sync { response, .. }) = answer else {
        return SyncGroupResponse::default()
            .with_error_code(ErrorCode::CoordinatorNotAvailable.code());
    };
    SyncGroupResponse::default()
        .with_error_code(response.error_code)
        .with_protocol_type(response.protocol_type.map(StrBytes::from_string))
        .with_protocol_name(response.protocol_name.map(StrBytes::from_string))
        .with_assignment(response.assignment)
}

fn heartbeat(shard: &Rc<Shard>, request: HeartbeatRequest) -> HeartbeatResponse {
    let code = shard.groups.borrow_mut().heartbeat(
        request.group_id.as_str(),
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(StrBytes::as_str),
        request.generation_id,
        now_ms(),
    );
    HeartbeatResponse::default().with_error_code(code)
}

/// LeaveGroup v0-2 names one member at the top level; v3+ a batch of members.
fn leave_group(shard: &Rc<Shard>, version: i16, request: LeaveGroupRequest) -> LeaveGroupResponse {
    let batched = version >= 3;
    let leaving: Vec<(String, Option<String>)> = if batched {
        request
            .members
            .iter()
            .map(|m| (m.member_id.to_string(), text(m.group_instance_id.as_ref())))
            .collect()
    } else {
        vec![(request.member_id.to_string(), None)]
    };
    let outcome = shard
        .groups
        .borrow_mut()
        .leave(request.group_id.as_str(), &leaving, now_ms());
    let codes = match outcome {
        Ok(codes) => codes,
        Err(code) => return LeaveGroupResponse::default().with_error_code(code.code()),
    };
    if !batched {
        return LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0));
    }
    let members = leaving
        .into_iter()
        .zip(codes)
        .map(|((member_id, instance_id), code)| {
            leave_group_response::MemberResponse::default()
                .with_member_id(StrBytes::from_string(member_id))
                .with_group_instance_id(instance_id.map(StrBytes::from_string))
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

fn list_groups(shard: &Rc<Shard>, request: ListGroupsRequest) -> ListGroupsResponse {
    let groups = shard.groups.borrow();
    // Filters compare case-insensitively, as Kafka does.
    let wanted = |filter: &[StrBytes], value: &str| {
        filter.is_empty()
            || filter
                .iter()
                .any(|f| f.as_str().eq_ignore_ascii_case(value))
    };
    let listed = groups
        .groups
        .iter()
        .filter(|(_, g)| {
            wanted(&request.states_filter, g.state_name())
                && wanted(&request.types_filter, g.type_name())
        })
        .map(|(id, g)| {
            list_groups_response::ListedGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(id.clone())))
                .with_protocol_type(StrBytes::from_string(g.protocol_type().to_string()))
                .with_group_state(StrBytes::from_static_str(g.state_name()))
                .with_group_type(StrBytes::from_static_str(g.type_name()))
        })
        .collect();
    ListGroupsResponse::default().with_groups(listed)
}

fn describe_groups(shard: &Rc<Shard>, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
    use describe_groups_response::{DescribedGroup, DescribedGroupMember};
    let groups = shard.groups.borrow();
    let described = request
        .groups
        .into_iter()
        .map(|group_id| {
            let result = DescribedGroup::default().with_group_id(group_id.clone());
            let Some(group) = groups.groups.get(group_id.as_str()) else {
                // Kafka describes a group it does not know as Dead, without an error.
                return result.with_group_state(StrBytes::from_static_str("Dead"));
            };
            let result = result
                .with_group_state(StrBytes::from_static_str(group.state_name()))
                .with_protocol_type(StrBytes::from_string(group.protocol_type().to_string()));
            match &group.membership {
                Membership::Consumer(_) => result
                    .with_error_code(ErrorCode::GroupIdNotFound.code())
                    .with_error_message(Some(StrBytes::from_static_str(
                        "a consumer group: use ConsumerGroupDescribe",
                    ))),
                Membership::None => result,
                Membership::Classic(classic) => {
                    let members = classic
                        .members()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(StrBytes::from_string(m.member_id))
                                .with_group_instance_id(
                                    m.group_instance_id.map(StrBytes::from_string),
                                )
                                .with_client_id(StrBytes::from_string(m.client_id))
                                .with_client_host(StrBytes::from_string(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect();
                    result
                        .with_protocol_data(StrBytes::from_string(
                            classic.protocol_name().unwrap_or("").to_string(),
                        ))
                        .with_members(members)
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(described)
}

async fn delete_groups(shard: &Rc<Shard>, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    for group_id in request.groups_names {
        let deletion = shard.groups.borrow().deletion(group_id.as_str());
        let outcome = match deletion {
            Ok(tombstones) if tombstones.is_empty() => Ok(()),
            Ok(tombstones) => store_offsets(shard, group_id.as_str(), tombstones).await,
            Err(code) => Err(code),
        };
        if outcome.is_ok() {
            shard.groups.borrow_mut().remove(group_id.as_str());
        }
        let code = outcome.err().map_or(0, |code| code.code());
        results.push(
            delete_groups_response::DeletableGroupResult::default()
                .with_group_id(group_id)
                .with_error_code(code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}

/// Deletes offsets of member-less groups past offsets.retention.minutes, every minute.
pub async fn run_offsets_retention(shard: Rc<Shard>) {
    let retention_ms = shard.config.groups.offsets_retention_ms;
    loop {
        corelog_io::sleep(std::time::Duration::from_secs(60)).await;
        let expired = shard
            .groups
            .borrow()
            .expired_offsets(retention_ms, now_ms());
        let mut by_group: std::collections::BTreeMap<String, Vec<OffsetChange>> =
            Default::default();
        for change in expired {
            by_group
                .entry(change.group.clone())
                .or_default()
                .push(change);
        }
        for (group, tombstones) in by_group {
            if let Err(code) = store_offsets(&shard, &group, tombstones).await {
                tracing::warn!(group, "expiring offsets failed: {code:?}");
            }
        }
    }
}
