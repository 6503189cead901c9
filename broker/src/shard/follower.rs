//! The follower side of replication: a shard fetches the partitions it follows from
//! their leaders with Fetch requests carrying its broker id and each partition's last
//! fetched epoch, and appends the batches byte for byte.
//!
//! Partitions followed from one leader are split over `replica.fetch.pipeline.depth`
//! lanes, each a connection with one fetch in flight. Kafka answers the requests of a
//! connection in order, so several long polls in flight on one connection would hold a
//! lane with data behind an idle one; separate connections keep them independent.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures::{AsyncWriteExt, FutureExt};
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{
    ApiKey, BrokerId, FetchRequest, FetchResponse, RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::{Partition, Shard};
use crate::errors::ErrorCode;

/// Fetch v12: flexible, diverging epochs (KIP-320), topics by name, replica id field.
const REPLICA_FETCH_VERSION: i16 = 12;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after a failed connection or a partition error before trying again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A partition this shard follows, as its current leader knows it.
#[derive(Clone)]
pub struct Followed {
    pub partition: Rc<Partition>,
    pub leader_epoch: i32,
}

/// Partitions followed from one leader on one lane, and the task fetching them.
pub struct Lane {
    pub leader: i32,
    pub address: String,
    partitions: RefCell<BTreeMap<(String, i32), Followed>>,
    changed: event_listener::Event,
    task: RefCell<Option<corelog_io::Task<()>>>,
}

impl Lane {
    pub fn start(shard: &Rc<Shard>, leader: i32, address: String) -> Rc<Lane> {
        let lane = Rc::new(Lane {
            leader,
            address,
            partitions: RefCell::new(BTreeMap::new()),
            changed: event_listener::Event::new(),
            task: RefCell::new(None),
        });
        let task = corelog_io::spawn_local(run(shard.clone(), Rc::downgrade(&lane)));
        *lane.task.borrow_mut() = Some(task);
        lane
    }

    /// Replaces the set followed on this lane; an in-flight fetch finishes first and its
    /// answers for partitions no longer followed (or followed under a newer epoch) are dropped.
    pub fn set_partitions(&self, partitions: BTreeMap<(String, i32), Followed>) {
        *self.partitions.borrow_mut() = partitions;
        self.changed.notify(usize::MAX);
    }

    /// Still following `key` under `epoch`.
    fn follows(&self, key: &(String, i32), epoch: i32) -> Option<Rc<Partition>> {
        let partitions = self.partitions.borrow();
        let followed = partitions.get(key)?;
        (followed.leader_epoch == epoch).then(|| followed.partition.clone())
    }
}

/// The lane task: connect, fetch until the connection fails, reconnect. It ends when
/// the lane is dropped (its owner stopped following this leader).
async fn run(shard: Rc<Shard>, lane: std::rc::Weak<Lane>) {
    loop {
        let Some(current) = lane.upgrade() else {
            return;
        };
        let address = current.address.clone();
        let leader = current.leader;
        drop(current);
        match connect(&shard, &address).await {
            Ok(stream) => {
                if let Err(e) = fetch_loop(&shard, &lane, stream).await {
                    tracing::debug!(leader, %address, "replica fetch connection ended: {e:#}");
                }
            }
            Err(e) => tracing::debug!(leader, %address, "cannot reach leader: {e}"),
        }
        corelog_io::sleep(RETRY_BACKOFF).await;
    }
}

async fn connect(shard: &Shard, address: &str) -> std::io::Result<corelog_io::TcpStream> {
    let target: SocketAddr = address.to_socket_addrs()?.next().ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "address resolves to nothing")
    })?;
    let bind = shard.config.cluster.inter_broker_bind;
    corelog_io::net::connect_from(target, bind, CONNECT_TIMEOUT).await
}

async fn fetch_loop(
    shard: &Rc<Shard>,
    lane: &std::rc::Weak<Lane>,
    mut stream: corelog_io::TcpStream,
) -> anyhow::Result<()> {
    let settings = &shard.config.cluster;
    let mut frame = BytesMut::with_capacity(4096);
    let mut correlation_id = 0i32;
    loop {
        let Some(current) = lane.upgrade() else {
            return Ok(());
        };
        let followed: Vec<((String, i32), Followed)> = current
            .partitions
            .borrow()
            .iter()
            .map(|(key, f)| (key.clone(), f.clone()))
            .collect();
        if followed.is_empty() {
            let listener = current.changed.listen();
            drop(current);
            listener.await;
            continue;
        }
        drop(current);
        correlation_id = correlation_id.wrapping_add(1);
        let request = fetch_request(shard, &followed);
        let header = RequestHeader::default()
            .with_request_api_key(ApiKey::Fetch as i16)
            .with_request_api_version(REPLICA_FETCH_VERSION)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("corelog-replica-fetcher")));
        corelog_client::encode_frame(&mut frame, &header, &request, REPLICA_FETCH_VERSION)?;
        stream.write_all(&frame).await?;
        // The leader answers within its long-poll wait; a silent one is treated as gone.
        let limit = Duration::from_millis(settings.replica_fetch_wait_max_ms) + CONNECT_TIMEOUT;
        let max_frame = shard.config.socket_request_max_bytes;
        let mut body = futures::select! {
            read = crate::protocol::read_frame(&mut stream, max_frame).fuse() => read?,
            _ = corelog_io::sleep(limit).fuse() => anyhow::bail!("leader silent for {limit:?}"),
        };
        let header = ResponseHeader::decode(
            &mut body,
            ApiKey::Fetch.response_header_version(REPLICA_FETCH_VERSION),
        )?;
        anyhow::ensure!(
            header.correlation_id == correlation_id,
            "answer to request {} while waiting for {correlation_id}",
            header.correlation_id
        );
        let response = FetchResponse::decode(&mut body, REPLICA_FETCH_VERSION)?;
        let Some(current) = lane.upgrade() else {
            return Ok(());
        };
        let epochs: BTreeMap<&(String, i32), i32> =
            followed.iter().map(|(k, f)| (k, f.leader_epoch)).collect();
        let mut backoff = response.error_code != 0;
        for topic in response.responses {
            for answer in topic.partitions {
                let key = (topic.topic.to_string(), answer.partition_index);
                let Some(&epoch) = epochs.get(&key) else {
                    continue;
                };
                let Some(partition) = current.follows(&key, epoch) else {
                    continue;
                };
                backoff |= !apply_answer(&key, &partition, answer);
            }
        }
        drop(current);
        if backoff {
            corelog_io::sleep(RETRY_BACKOFF).await;
        }
    }
}

fn fetch_request(shard: &Shard, followed: &[((String, i32), Followed)]) -> FetchRequest {
    let settings = &shard.config.cluster;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((topic, index), f) in followed {
        let partition = FetchPartition::default()
            .with_partition(*index)
            .with_current_leader_epoch(f.leader_epoch)
            .with_fetch_offset(f.partition.log_end_offset())
            .with_last_fetched_epoch(f.partition.latest_epoch().unwrap_or(-1))
            .with_log_start_offset(f.partition.log_start_offset())
            .with_partition_max_bytes(settings.replica_fetch_max_bytes as i32);
        match topics.last_mut() {
            Some(last) if last.topic.as_str() == topic => last.partitions.push(partition),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(shard.config.node_id))
        .with_max_wait_ms(settings.replica_fetch_wait_max_ms as i32)
        .with_min_bytes(1)
        .with_max_bytes(shard.config.socket_request_max_bytes as i32 / 2)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Lands one partition's answer; false when the partition should back off (an error the
/// next metadata image or a later fetch resolves).
fn apply_answer(
    key: &(String, i32),
    partition: &Partition,
    answer: kafka_protocol::messages::fetch_response::PartitionData,
) -> bool {
    let (topic, index) = key;
    match answer.error_code.err() {
        None => {}
        Some(ErrorCode::OffsetOutOfRange)
            if answer.log_start_offset > partition.log_end_offset() =>
        {
            // The leader deleted what this follower still needs: start over at its log start.
            tracing::info!(
                topic,
                partition = index,
                start = answer.log_start_offset,
                "follower behind the leader's log start; restarting the log there"
            );
            if let Err(e) = partition.truncate_fully_and_start_at(answer.log_start_offset) {
                tracing::error!(topic, partition = index, "cannot reset follower log: {e}");
            }
            return true;
        }
        Some(code) => {
            tracing::debug!(topic, partition = index, ?code, "replica fetch refused");
            return false;
        }
    }
    if answer.diverging_epoch.epoch >= 0 {
        // KIP-320: our log holds batches of an epoch the leader ended earlier; drop them
        // and fetch again from the end of that epoch.
        let end = answer.diverging_epoch.end_offset;
        tracing::info!(
            topic,
            partition = index,
            epoch = answer.diverging_epoch.epoch,
            end,
            "follower log diverges from the leader's; truncating"
        );
        if let Err(e) = partition.truncate_to(end) {
            tracing::error!(topic, partition = index, "truncation failed: {e}");
            return false;
        }
        return true;
    }
    let records = answer.records.unwrap_or_default();
    if records.has_remaining() {
        if let Err(e) =
            partition.append_as_follower(&records, answer.high_watermark, answer.log_start_offset)
        {
            tracing::warn!(topic, partition = index, "replicated batches refused: {e}");
            return false;
        }
    } else {
        partition.update_follower_high_watermark(answer.high_watermark, answer.log_start_offset);
    }
    true
}
