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

use super::offsets::{encode_batch, CommittedOffset, OffsetChange, OFFSETS_TOPIC};
use crate::errors::ErrorCode;
use crate::handlers::ClientInfo;
use crate::shard::{now_ms, Shard};

pub async fn serve(
    shard: &Rc<Shard>,
    version: i16,
    _client: ClientInfo,
    request: RequestKind,
) -> ResponseKind {
    match request {
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

/// Appends offset changes of `group` to its offsets partition and waits until they are
/// fdatasynced: an acknowledged commit survives a crash. Applies them in memory after.
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
    if let Err(e) = partition.wait_durable(appended.last_offset).await {
        tracing::error!(group, "storing offsets failed: {e}");
        return Err(ErrorCode::CoordinatorNotAvailable);
    }
    shard.groups.borrow_mut().apply(changes);
    Ok(())
}

async fn offset_commit(shard: &Rc<Shard>, request: OffsetCommitRequest) -> OffsetCommitResponse {
    let group = request.group_id.to_string();
    let refused = shard.groups.borrow().validate_commit(
        &group,
        request.member_id.as_str(),
        request.group_instance_id.as_ref().map(StrBytes::as_str),
        request.generation_id_or_member_epoch,
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

/// OffsetFetch: v0-7 name one group, v8+ a list of them (this shard's share of it).
fn offset_fetch(
    shard: &Rc<Shard>,
    version: i16,
    request: OffsetFetchRequest,
) -> OffsetFetchResponse {
    let groups = shard.groups.borrow();
    if version < 8 {
        let group = request.group_id.as_str();
        let wanted = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        let topics = groups
            .fetch_offsets(group, wanted)
            .into_iter()
            .map(|(topic, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic)))
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, committed)| {
                                let (offset, epoch, metadata) = fetched_fields(committed);
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(Some(metadata))
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default().with_topics(topics);
    }
    let results = request
        .groups
        .into_iter()
        .map(|group| {
            let wanted = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name.to_string(), t.partition_indexes))
                    .collect()
            });
            let topics = groups
                .fetch_offsets(group.group_id.as_str(), wanted)
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(TopicName(StrBytes::from_string(topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, committed)| {
                                    let (offset, epoch, metadata) = fetched_fields(committed);
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(index)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(epoch)
                                        .with_metadata(Some(metadata))
                                })
                                .collect(),
                        )
                })
                .collect();
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
    let (group_error, subscribed) = {
        let groups = shard.groups.borrow();
        match groups.groups.get(&group) {
            None => (Some(ErrorCode::GroupIdNotFound), Vec::new()),
            Some(g) => (None, g.subscribed_topics()),
        }
    };
    if let Some(code) = group_error {
        return OffsetDeleteResponse::default().with_error_code(code.code());
    }
    let mut changes = Vec::new();
    let topics = request
        .topics
        .iter()
        .map(|topic| {
            let in_use = subscribed.iter().any(|t| t == topic.name.as_str());
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
