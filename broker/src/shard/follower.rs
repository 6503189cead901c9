//! The follower side of replication: a shard fetches the partitions it follows from
//! their leaders with Fetch requests carrying its broker id and each partition's last
//! fetched epoch, and appends the batches byte for byte.
//!
//! Partitions followed from one leader share one connection and are split over
//! `replica.fetch.pipeline.depth` lanes, each with one fetch in flight, so that many
//! fetches are in flight on the connection at once. The leader answers a connection's
//! requests in order but ends a long poll as soon as a later request's answer is ready
//! (see [`crate::server`]), so an idle lane does not hold a busy one back.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use futures::channel::mpsc;
use futures::io::ReadHalf;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, SinkExt, StreamExt};
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
/// Pause after a failed connection, or for a lane after a partition error, before trying
/// again.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A partition this shard follows, as its current leader knows it.
#[derive(Clone)]
pub struct Followed {
    pub partition: Rc<Partition>,
    pub leader_epoch: i32,
}

/// The partitions of one lane, by topic and index.
pub type LanePartitions = BTreeMap<(String, i32), Followed>;

/// Partitions followed from one leader, their lanes, and the task fetching them over one
/// connection.
pub struct LeaderLink {
    pub leader: i32,
    pub address: String,
    lanes: RefCell<Vec<LanePartitions>>,
    changed: event_listener::Event,
    task: RefCell<Option<corelog_io::Task<()>>>,
}

impl LeaderLink {
    pub fn start(shard: &Rc<Shard>, leader: i32, address: String) -> Rc<LeaderLink> {
        let link = Rc::new(LeaderLink {
            leader,
            address,
            lanes: RefCell::new(Vec::new()),
            changed: event_listener::Event::new(),
            task: RefCell::new(None),
        });
        let task = corelog_io::spawn_local(run(shard.clone(), Rc::downgrade(&link)));
        *link.task.borrow_mut() = Some(task);
        link
    }

    /// Replaces the partitions followed, lane by lane; fetches in flight finish first and
    /// their answers for partitions no longer followed (or followed under a newer epoch)
    /// are dropped.
    pub fn set_lanes(&self, lanes: Vec<LanePartitions>) {
        *self.lanes.borrow_mut() = lanes;
        self.changed.notify(usize::MAX);
    }

    /// The partition behind `key` if `lane` still follows it under `epoch`.
    fn follows(&self, lane: usize, key: &(String, i32), epoch: i32) -> Option<Rc<Partition>> {
        let lanes = self.lanes.borrow();
        let followed = lanes.get(lane)?.get(key)?;
        (followed.leader_epoch == epoch).then(|| followed.partition.clone())
    }
}

/// The link task: connect, fetch until the connection fails, reconnect. It ends when the
/// link is dropped (its owner stopped following this leader).
async fn run(shard: Rc<Shard>, link: Weak<LeaderLink>) {
    loop {
        let Some(current) = link.upgrade() else {
            return;
        };
        let address = current.address.clone();
        let leader = current.leader;
        drop(current);
        match connect(&shard, &address).await {
            Ok(stream) => {
                if let Err(e) = fetch_loop(&shard, &link, stream).await {
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

/// A fetch sent and not yet answered.
struct InFlight {
    correlation_id: i32,
    lane: usize,
    /// The epoch each partition was fetched under; an answer lands only if it still holds.
    epochs: BTreeMap<(String, i32), i32>,
    /// When a leader silent past this is treated as gone.
    deadline: Instant,
}

/// What a lane is doing.
#[derive(Clone, Copy, PartialEq)]
enum LaneState {
    Idle,
    Fetching,
    BackingOff(Instant),
}

async fn fetch_loop(
    shard: &Rc<Shard>,
    link: &Weak<LeaderLink>,
    stream: corelog_io::TcpStream,
) -> anyhow::Result<()> {
    let settings = &shard.config.cluster;
    let depth = settings.replica_fetch_pipeline_depth;
    let (reader, mut writer) = stream.split();
    // Answers are read by their own task, so that this loop also hears of lane changes
    // and backoff ends while fetches are in flight.
    let (answers_sender, mut answers) = mpsc::channel(depth);
    let _reader = corelog_io::spawn_local(read_answers(
        reader,
        answers_sender,
        shard.config.socket_request_max_bytes,
    ));
    let mut frame = BytesMut::with_capacity(4096);
    let mut correlation_id = 0i32;
    let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(depth);
    let mut lanes = vec![LaneState::Idle; depth];
    // The leader answers within its long-poll wait; a silent one is treated as gone.
    let silence_limit = Duration::from_millis(settings.replica_fetch_wait_max_ms) + CONNECT_TIMEOUT;
    loop {
        let Some(current) = link.upgrade() else {
            return Ok(());
        };
        let now = Instant::now();
        for (lane, state) in lanes.iter_mut().enumerate() {
            if matches!(*state, LaneState::BackingOff(until) if until <= now) {
                *state = LaneState::Idle;
            }
            if *state != LaneState::Idle {
                continue;
            }
            let (request, epochs) = {
                let partitions = current.lanes.borrow();
                match partitions.get(lane) {
                    Some(followed) if !followed.is_empty() => fetch_request(shard, followed),
                    _ => continue,
                }
            };
            correlation_id = correlation_id.wrapping_add(1);
            let header = RequestHeader::default()
                .with_request_api_key(ApiKey::Fetch as i16)
                .with_request_api_version(REPLICA_FETCH_VERSION)
                .with_correlation_id(correlation_id)
                .with_client_id(Some(StrBytes::from_static_str("corelog-replica-fetcher")));
            corelog_client::encode_frame(&mut frame, &header, &request, REPLICA_FETCH_VERSION)?;
            writer.write_all(&frame).await?;
            in_flight.push_back(InFlight {
                correlation_id,
                lane,
                epochs,
                deadline: Instant::now() + silence_limit,
            });
            *state = LaneState::Fetching;
        }
        let changed = current.changed.listen();
        drop(current);
        let wake_at = in_flight
            .front()
            .map(|f| f.deadline)
            .into_iter()
            .chain(lanes.iter().filter_map(|state| match state {
                LaneState::BackingOff(until) => Some(*until),
                _ => None,
            }))
            .min();
        let timer = match wake_at {
            Some(at) => {
                corelog_io::sleep(at.saturating_duration_since(Instant::now())).left_future()
            }
            None => futures::future::pending().right_future(),
        };
        let body = futures::select! {
            answer = answers.next() => match answer {
                Some(body) => body?,
                None => anyhow::bail!("connection closed"),
            },
            _ = changed.fuse() => continue,
            _ = timer.fuse() => {
                if let Some(front) = in_flight.front() {
                    anyhow::ensure!(Instant::now() < front.deadline, "leader silent for {silence_limit:?}");
                }
                continue;
            }
        };
        let sent = in_flight
            .pop_front()
            .ok_or_else(|| anyhow::anyhow!("an answer to no request"))?;
        let backoff = apply_response(link, &sent, body)?;
        lanes[sent.lane] = if backoff {
            LaneState::BackingOff(Instant::now() + RETRY_BACKOFF)
        } else {
            LaneState::Idle
        };
    }
}

/// Reads the connection's answers in order and hands them on, until the connection
/// fails or the fetch loop is gone.
async fn read_answers(
    mut reader: ReadHalf<corelog_io::TcpStream>,
    mut answers: mpsc::Sender<anyhow::Result<Bytes>>,
    max_frame: usize,
) {
    loop {
        let answer = crate::protocol::read_frame(&mut reader, max_frame)
            .await
            .map_err(anyhow::Error::from);
        let failed = answer.is_err();
        if answers.send(answer).await.is_err() || failed {
            return;
        }
    }
}

/// Lands one fetch answer's partitions; true when the lane should back off.
fn apply_response(
    link: &Weak<LeaderLink>,
    sent: &InFlight,
    mut body: Bytes,
) -> anyhow::Result<bool> {
    let header = ResponseHeader::decode(
        &mut body,
        ApiKey::Fetch.response_header_version(REPLICA_FETCH_VERSION),
    )?;
    anyhow::ensure!(
        header.correlation_id == sent.correlation_id,
        "answer to request {} while waiting for {}",
        header.correlation_id,
        sent.correlation_id
    );
    let response = FetchResponse::decode(&mut body, REPLICA_FETCH_VERSION)?;
    let Some(current) = link.upgrade() else {
        return Ok(false);
    };
    let mut backoff = response.error_code != 0;
    for topic in response.responses {
        for answer in topic.partitions {
            let key = (topic.topic.to_string(), answer.partition_index);
            let Some(&epoch) = sent.epochs.get(&key) else {
                continue;
            };
            let Some(partition) = current.follows(sent.lane, &key, epoch) else {
                continue;
            };
            backoff |= !apply_answer(&key, &partition, answer);
        }
    }
    Ok(backoff)
}

/// A fetch for a lane's partitions from their log ends, and the epoch of each.
fn fetch_request(
    shard: &Shard,
    followed: &LanePartitions,
) -> (FetchRequest, BTreeMap<(String, i32), i32>) {
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
    let epochs = followed
        .iter()
        .map(|(key, f)| (key.clone(), f.leader_epoch))
        .collect();
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(shard.config.node_id))
        .with_max_wait_ms(settings.replica_fetch_wait_max_ms as i32)
        .with_min_bytes(1)
        .with_max_bytes(shard.config.socket_request_max_bytes as i32 / 2)
        .with_isolation_level(0)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics);
    (request, epochs)
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
        let (epoch, leader_end) = (
            answer.diverging_epoch.epoch,
            answer.diverging_epoch.end_offset,
        );
        match partition.truncate_to_divergence(epoch, leader_end) {
            Ok(end) => tracing::info!(
                topic,
                partition = index,
                epoch,
                leader_end,
                end,
                "follower log diverges from the leader's; truncated"
            ),
            Err(e) => {
                tracing::error!(topic, partition = index, "truncation failed: {e}");
                return false;
            }
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
