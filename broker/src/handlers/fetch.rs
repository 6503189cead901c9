//! Fetch: read from the owning shards; when less than min_bytes is available, long-poll
//! until max_wait. Consumers read up to the high watermark and wake when it moves;
//! followers (a replica id set) read up to the log end, report their position to the
//! leader with each fetch, and learn of a diverging log (KIP-320). KIP-227 sessions
//! ([`crate::fetch_session`]) wrap this: they say which partitions to read and which of
//! them to answer.
//!
//! From v11 (KIP-392) any replica serves consumers, a follower up to its own high
//! watermark, and with `replica.selector.class` set to Kafka's rack-aware selector a
//! leader sends a consumer that names its rack to an in-sync replica in that rack. A
//! partition refused for not being led here names its leader (KIP-951, v12+).
//!
//! Owning shards answer with file ranges, not bytes: the connection's shard either sends
//! them with sendfile ([`handle_zero_copy`]) or reads them into the response ([`handle`],
//! when `fetch.zero.copy.min.bytes` is -1).

use std::time::{Duration, Instant};

use futures::StreamExt;
use kafka_protocol::messages::fetch_response::{
    FetchableTopicResponse, LeaderIdAndEpoch, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};

use super::{resolve_topic_ref, ByShard, LeaderHints, RequestContext, Slot};
use crate::errors::ErrorCode;
use crate::fetch_session::FIRST_VERSION_WITH_TOPIC_IDS;
use crate::log::ReadSlice;
use crate::metadata::MetadataImage;
use crate::protocol::fetch_frame::{encode_fetch_frame, Part};
use crate::shard::{FetchQuery, FetchResult, ShardRequest, ShardResponse};

/// Bound on how long one fetch may hold a request slot of its connection.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Fetch v11 (KIP-392): consumers may read from followers and name their rack.
const FIRST_VERSION_WITH_FOLLOWER_READS: i16 = 11;
/// Fetch v12 (KIP-951) answers a misdirected fetch with the leader; v16 adds its endpoint.
const FIRST_VERSION_WITH_LEADER_HINTS: i16 = 12;
const FIRST_VERSION_WITH_NODE_ENDPOINTS: i16 = 16;

/// A fetch answer before encoding: the response without records, and each partition's
/// records as a file range (by topic and partition position).
pub struct FetchAnswer {
    pub response: FetchResponse,
    pub records: Vec<Vec<Option<ReadSlice>>>,
}

/// The copying path: records are read into the response.
pub async fn handle(ctx: &RequestContext, request: FetchRequest) -> FetchResponse {
    let FetchAnswer {
        mut response,
        records,
    } = gather(ctx, request).await;
    for (topic, slices) in response.responses.iter_mut().zip(records) {
        for (partition, slice) in topic.partitions.iter_mut().zip(slices) {
            let Some(slice) = slice else { continue };
            match slice.read_to_bytes() {
                Ok(bytes) => {
                    ctx.shard
                        .metrics
                        .count(&ctx.shard.metrics.copied_bytes, bytes.len() as u64);
                    partition.records = Some(bytes);
                }
                Err(e) => {
                    tracing::error!("fetch read failed: {e}");
                    partition.error_code = ErrorCode::KafkaStorageError.code();
                }
            }
        }
    }
    response
}

/// The zero-copy path: the response frame in parts, record ranges of at least
/// `copy_below` bytes sent from the files (smaller ones are cheaper to copy than to
/// hand to another thread).
pub async fn handle_zero_copy(
    ctx: &RequestContext,
    request: FetchRequest,
    correlation_id: i32,
    copy_below: usize,
) -> anyhow::Result<(FetchResponse, Vec<Part>)> {
    let FetchAnswer { response, records } = gather(ctx, request).await;
    let frame = encode_fetch_frame(
        ctx.api_version,
        correlation_id,
        &response,
        &records,
        copy_below,
    )?;
    let metrics = &ctx.shard.metrics;
    metrics.count(&metrics.copied_bytes, frame.copied_bytes);
    for part in &frame.parts {
        if let Part::File(slice) = part {
            metrics.count(&metrics.zero_copy_bytes, slice.len as u64);
        }
    }
    Ok((response, frame.parts))
}

async fn gather(ctx: &RequestContext, mut request: FetchRequest) -> FetchAnswer {
    let shard = &ctx.shard;
    let plan = shard
        .fetch_sessions
        .borrow_mut()
        .begin(&mut request, ctx.api_version);
    let plan = match plan {
        Ok(plan) => plan,
        Err(code) => {
            return FetchAnswer {
                response: FetchResponse::default().with_error_code(code.code()),
                records: Vec::new(),
            }
        }
    };
    let by_id = ctx.api_version >= FIRST_VERSION_WITH_TOPIC_IDS;
    let image = shard.image();
    let max_bytes = (request.max_bytes.max(1) as usize).min(shard.config.socket_request_max_bytes);
    let min_bytes = request.min_bytes.max(0) as usize;
    let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = Instant::now() + max_wait;
    // Fetch v15 (KIP-903) moved the follower's id into replica_state.
    let replica_id = if ctx.api_version >= 15 {
        request.replica_state.replica_id.0
    } else {
        request.replica_id.0
    };
    let any_replica = replica_id < 0 && ctx.api_version >= FIRST_VERSION_WITH_FOLLOWER_READS;
    let consumer_rack = Some(request.rack_id.as_str()).filter(|rack| {
        any_replica && !rack.is_empty() && shard.config.cluster.rack_aware_replica_selector
    });

    let mut responses: Vec<FetchableTopicResponse> = Vec::with_capacity(request.topics.len());
    let mut records: Vec<Vec<Option<ReadSlice>>> = request
        .topics
        .iter()
        .map(|t| (0..t.partitions.len()).map(|_| None).collect())
        .collect();
    let mut per_shard: ByShard<FetchQuery> = ByShard::new();
    for (topic_slot, topic) in request.topics.iter().enumerate() {
        let resolved = resolve_topic_ref(&image, by_id, &topic.topic, &topic.topic_id);
        let mut partitions = Vec::with_capacity(topic.partitions.len());
        for (partition_slot, fetch) in topic.partitions.iter().enumerate() {
            let error = match &resolved {
                Err(code) => *code,
                Ok(meta) if fetch.partition < 0 || fetch.partition >= meta.record.partitions => {
                    ErrorCode::UnknownTopicOrPartition
                }
                Ok(meta) => {
                    let replicas_in_rack = consumer_rack.map_or(Vec::new(), |rack| {
                        replicas_in_rack(&image, shard.config.node_id, meta, fetch.partition, rack)
                    });
                    per_shard
                        .entry(shard.owner_of(&meta.record.name, fetch.partition))
                        .or_default()
                        .push((
                            (topic_slot, partition_slot),
                            FetchQuery {
                                topic: meta.record.name.clone(),
                                partition: fetch.partition,
                                offset: fetch.fetch_offset,
                                max_bytes: fetch.partition_max_bytes.max(0) as usize,
                                current_leader_epoch: fetch.current_leader_epoch,
                                last_fetched_epoch: fetch.last_fetched_epoch,
                                any_replica,
                                replicas_in_rack,
                            },
                        ));
                    ErrorCode::UnknownServerError
                }
            };
            partitions.push(partition_data(fetch.partition, &FetchResult::error(error)));
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(topic.topic.clone())
                .with_topic_id(topic.topic_id)
                .with_partitions(partitions),
        );
    }

    // First an immediate read everywhere; then, if that is not enough, a long poll on every
    // involved shard, answering as soon as the data gathered reaches min_bytes.
    let mut gathered = 0usize;
    let mut immediate = read_round(ctx, replica_id, &per_shard, min_bytes, max_bytes, None);
    while let Some((slots, results)) = immediate.next().await {
        gathered += place(&mut responses, &mut records, slots, results);
    }
    drop(immediate);
    // Kafka answers at once when it sends a consumer elsewhere, and when a follower must
    // truncate before it can fetch anything (a diverging epoch).
    let answer_now = responses
        .iter()
        .flat_map(|t| &t.partitions)
        .any(|p| p.preferred_read_replica.0 >= 0 || p.diverging_epoch.epoch >= 0);
    let waiting = deadline.saturating_duration_since(Instant::now());
    if gathered < min_bytes && !waiting.is_zero() && !per_shard.is_empty() && !answer_now {
        let mut polls = read_round(
            ctx,
            replica_id,
            &per_shard,
            min_bytes,
            max_bytes,
            Some(waiting),
        );
        let mut overtaken = std::pin::pin!(ctx.place.overtaken());
        loop {
            let next = match futures::future::select(polls.next(), overtaken.as_mut()).await {
                futures::future::Either::Left((next, _)) => next,
                // A later request on this connection is answered: it leaves only after
                // this one, so stop waiting and answer with what is here.
                futures::future::Either::Right(_) => break,
            };
            let Some((slots, results)) = next else { break };
            let found: usize = results.iter().map(FetchResult::byte_len).sum();
            if found > 0 {
                gathered += place(&mut responses, &mut records, slots, results);
            }
            if gathered >= min_bytes {
                break;
            }
        }
    }
    let mut response = FetchResponse::default().with_responses(responses);
    shard.fetch_sessions.borrow_mut().finish(
        plan,
        &request,
        ctx.api_version,
        &mut response,
        &mut records,
    );
    if ctx.api_version >= FIRST_VERSION_WITH_LEADER_HINTS {
        add_leader_hints(
            &mut response,
            LeaderHints::new(shard.image(), by_id),
            ctx.api_version >= FIRST_VERSION_WITH_NODE_ENDPOINTS,
        );
    }
    FetchAnswer { response, records }
}

/// KIP-392's rack-aware selection, for a consumer in `rack` fetching a partition this
/// broker leads (by the image): the other replicas in that rack when the leader is in
/// another one. The leader picks among them, as only it knows how far each has caught up.
fn replicas_in_rack(
    image: &MetadataImage,
    local_id: i32,
    topic: &crate::metadata::TopicMeta,
    partition: i32,
    rack: &str,
) -> Vec<i32> {
    let in_rack = |id: i32| {
        image
            .broker(id)
            .is_some_and(|b| b.rack.as_deref() == Some(rack))
    };
    match topic.partition(partition) {
        Some(state) if state.leader == local_id && !in_rack(local_id) => state
            .replicas
            .iter()
            .copied()
            .filter(|id| *id != local_id && in_rack(*id))
            .collect(),
        _ => Vec::new(),
    }
}

/// KIP-951: the leader (from the image as it is now, after any long poll) of each
/// partition refused for not being led here, and from v16 the leaders' endpoints.
fn add_leader_hints(response: &mut FetchResponse, mut hints: LeaderHints, endpoints: bool) {
    for topic in &mut response.responses {
        for partition in &mut topic.partitions {
            let hint = hints.hint(
                partition.error_code,
                &topic.topic,
                &topic.topic_id,
                partition.partition_index,
            );
            if let Some((leader, epoch)) = hint {
                partition.current_leader = LeaderIdAndEpoch::default()
                    .with_leader_id(BrokerId(leader))
                    .with_leader_epoch(epoch);
            }
        }
    }
    if endpoints {
        response.node_endpoints = hints.endpoints();
    }
}

fn read_round<'a>(
    ctx: &'a RequestContext,
    replica_id: i32,
    per_shard: &'a ByShard<FetchQuery>,
    min_bytes: usize,
    max_bytes: usize,
    wait: Option<Duration>,
) -> futures::stream::FuturesUnordered<
    impl std::future::Future<Output = (Vec<Slot>, Vec<FetchResult>)> + 'a,
> {
    per_shard
        .iter()
        .map(|(&owner, items)| async move {
            let slots: Vec<Slot> = items.iter().map(|(slot, _)| *slot).collect();
            let queries = items.iter().map(|(_, query)| query.clone()).collect();
            let request = ShardRequest::Fetch {
                replica_id,
                queries,
                min_bytes,
                max_bytes,
                wait,
            };
            let results = match ctx.shard.on_shard(owner, request).await {
                ShardResponse::Fetch(results) => results,
                _ => slots
                    .iter()
                    .map(|_| FetchResult::error(ErrorCode::RequestTimedOut))
                    .collect(),
            };
            (slots, results)
        })
        .collect()
}

/// Puts results into their response slots; returns the record bytes placed.
fn place(
    responses: &mut [FetchableTopicResponse],
    records: &mut [Vec<Option<ReadSlice>>],
    slots: Vec<Slot>,
    results: Vec<FetchResult>,
) -> usize {
    let mut bytes = 0;
    for ((topic_slot, partition_slot), result) in slots.into_iter().zip(results) {
        bytes += result.byte_len();
        let entry = &mut responses[topic_slot].partitions[partition_slot];
        *entry = partition_data(entry.partition_index, &result);
        records[topic_slot][partition_slot] = result.records;
    }
    bytes
}

fn partition_data(index: i32, result: &FetchResult) -> PartitionData {
    let diverging = result.diverging_epoch.map(|(epoch, end_offset)| {
        kafka_protocol::messages::fetch_response::EpochEndOffset::default()
            .with_epoch(epoch)
            .with_end_offset(end_offset)
    });
    PartitionData::default()
        .with_diverging_epoch(diverging.unwrap_or_default())
        .with_partition_index(index)
        .with_error_code(result.error_code)
        .with_high_watermark(result.high_watermark)
        .with_last_stable_offset(result.high_watermark)
        .with_log_start_offset(result.log_start_offset)
        .with_preferred_read_replica(BrokerId(result.preferred_read_replica))
        .with_records(Some(bytes::Bytes::new()))
}
