//! A broker that keeps the records it is sent in memory, for a while, and nothing more: it
//! answers ApiVersions, Metadata, CreateTopics, Produce, Fetch and ListOffsets just enough
//! for the generator to run, so a run against it measures the generator's own ceiling on
//! this machine.
//!
//! Fetches get the produced records back, as from a real broker, because a ceiling must
//! carry the same generator work: the tailing consumer receives, walks and times every
//! record (about a quarter of the generator's CPU at max rate), work that empty fetches
//! would spare it and that the producers would spend instead. So Produce assigns offsets as
//! a broker does and keeps each batch as a slice of its request frame (no copy), and Fetch
//! serves them from the fetch offset within the partition and response byte limits,
//! waiting up to `max_wait_ms` for `min_bytes` (a tailing consumer long-polls, not spins).
//!
//! Memory is bounded: a kept batch holds its whole request frame, so frames are what is
//! counted, and past the cap the oldest frames go with all their batches (a per-partition
//! cap would not free a frame that other partitions' batches still hold). A fetch below the
//! oldest kept offset gets the oldest kept batch: the generator's consumer walks past the
//! gap, where OFFSET_OUT_OF_RANGE would leave it retrying the same offset.
//!
//! One blocking thread per connection: the simplest server that keeps each connection's
//! requests in order. Its per-request cost stays far below a real broker's: a read and a
//! decode, and Fetch responses go out with writev around the kept batches, of which only
//! the base offsets (outside the CRC) are written from a copy. It counts the records it is
//! sent, which the tests check.

use std::collections::{HashMap, VecDeque};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, Bytes};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable, StrBytes};

use crate::client::records::split_batches;
use crate::client::wire::{begin_frame, end_frame, put_str};

/// The default cap on kept request frames: half a second of the ~1 GB/s the generator
/// reaches on a quiet machine. With other work on its core, its tailing consumer was seen
/// a second behind at 300 MB/s, which 256 MiB did not cover.
pub const DEFAULT_RETAIN_MIB: usize = 512;

/// What the null broker has been sent.
#[derive(Default, Debug)]
pub struct NullStats {
    pub requests: AtomicU64,
    pub produce_requests: AtomicU64,
    pub records: AtomicU64,
    pub bytes: AtomicU64,
    pub fetches: AtomicU64,
}

/// The versions served: the ranges the generator's client speaks.
const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 8),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
];

const NODE_ID: i32 = 1;

const OFFSET_OUT_OF_RANGE: i16 = 1;
const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// ListOffsets' timestamp asking for the log start.
const EARLIEST: i64 = -2;

struct State {
    addr: SocketAddr,
    log: Mutex<Log>,
    /// Signalled when a produce adds batches while fetches wait for them.
    produced: Condvar,
    stats: Arc<NullStats>,
}

/// Topics and the batches produced to them, kept in the request frames that carried them
/// until those pass `cap` bytes.
struct Log {
    /// Each topic's partitions, as indices into `partitions`.
    topics: HashMap<String, Vec<usize>>,
    partitions: Vec<PartitionLog>,
    /// Frames holding kept batches, oldest first.
    frames: VecDeque<KeptFrame>,
    /// Bytes of the kept frames and of their batches' entries.
    held: usize,
    cap: usize,
    /// Fetches in a long poll: a produce signals only when there are some.
    waiting: usize,
}

/// A request frame that kept batches are slices of.
struct KeptFrame {
    bytes: usize,
    /// The partitions it added batches to, and how many.
    added: Vec<(usize, usize)>,
}

#[derive(Default)]
struct PartitionLog {
    /// Oldest first; a batch's offsets run up to the next one's base, the last one's to `end`.
    batches: VecDeque<Batch>,
    /// The next offset to assign: the high watermark.
    end: i64,
}

struct Batch {
    base_offset: i64,
    /// As produced: its first 8 bytes (the base offset the producer left at 0) are replaced
    /// when it is sent.
    bytes: Bytes,
}

impl PartitionLog {
    fn start(&self) -> i64 {
        self.batches.front().map_or(self.end, |b| b.base_offset)
    }

    /// The kept batches from the one holding `offset` on; from below the oldest kept
    /// offset, all of them.
    fn batches_from(&self, offset: i64) -> impl Iterator<Item = &Batch> {
        let after = self.batches.partition_point(|b| b.base_offset <= offset);
        let first = if after > 0 && offset < self.end {
            after - 1
        } else {
            after
        };
        self.batches.range(first..)
    }
}

impl Log {
    fn new(cap: usize) -> Self {
        Log {
            topics: HashMap::new(),
            partitions: Vec::new(),
            frames: VecDeque::new(),
            held: 0,
            cap,
            waiting: 0,
        }
    }

    /// Adds topic `name` with `n` partitions; false if it exists.
    fn create(&mut self, name: &str, n: i32) -> bool {
        if self.topics.contains_key(name) {
            return false;
        }
        let first = self.partitions.len();
        self.partitions
            .resize_with(first + n.max(0) as usize, PartitionLog::default);
        self.topics
            .insert(name.to_owned(), (first..self.partitions.len()).collect());
        true
    }

    fn partition(&self, topic: &str, index: i32) -> Option<usize> {
        let index = usize::try_from(index).ok()?;
        self.topics.get(topic)?.get(index).copied()
    }

    /// Keeps the batches of a Produce request read in a frame of `frame_len` bytes,
    /// assigning their offsets, and answers each partition.
    fn append(
        &mut self,
        req: &ProduceRequest,
        frame_len: usize,
        stats: &NullStats,
    ) -> Vec<TopicProduceResponse> {
        let mut added = Vec::new();
        let mut responses = Vec::with_capacity(req.topic_data.len());
        for t in &req.topic_data {
            let mut answers = Vec::with_capacity(t.partition_data.len());
            for p in &t.partition_data {
                let answer = PartitionProduceResponse::default().with_index(p.index);
                let Some(id) = self.partition(t.name.as_str(), p.index) else {
                    answers.push(answer.with_error_code(UNKNOWN_TOPIC_OR_PARTITION));
                    continue;
                };
                let records = p.records.clone().unwrap_or_default();
                let Some(batches) = split_batches(&records) else {
                    answers.push(answer.with_error_code(CORRUPT_MESSAGE));
                    continue;
                };
                let log = &mut self.partitions[id];
                let base_offset = log.end;
                for b in &batches {
                    stats.records.fetch_add(b.records, Ordering::Relaxed);
                    log.batches.push_back(Batch {
                        base_offset: log.end,
                        bytes: b.bytes.clone(),
                    });
                    log.end += b.offsets;
                }
                stats
                    .bytes
                    .fetch_add(records.len() as u64, Ordering::Relaxed);
                if !batches.is_empty() {
                    added.push((id, batches.len()));
                }
                answers.push(
                    answer
                        .with_base_offset(base_offset)
                        .with_log_start_offset(log.start()),
                );
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(t.name.clone())
                    .with_partition_responses(answers),
            );
        }
        if !added.is_empty() {
            let entries: usize = added.iter().map(|&(_, n)| n).sum();
            let bytes = frame_len + entries * std::mem::size_of::<Batch>();
            self.held += bytes;
            self.frames.push_back(KeptFrame { bytes, added });
            // The newest frame stays even alone over the cap: its records were just
            // acknowledged, and a consumer waits for them.
            while self.held > self.cap && self.frames.len() > 1 {
                self.evict_oldest();
            }
        }
        responses
    }

    fn evict_oldest(&mut self) {
        if let Some(frame) = self.frames.pop_front() {
            // Batches are kept in arrival order, so a partition's oldest are this frame's.
            for (id, n) in frame.added {
                self.partitions[id].batches.drain(..n);
            }
            self.held -= frame.bytes;
        }
    }

    /// The log start for EARLIEST, the log end for any other timestamp (the generator asks
    /// for these two only).
    fn list_offset(&self, topic: &str, p: &ListOffsetsPartition) -> ListOffsetsPartitionResponse {
        let answer =
            ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
        match self.partition(topic, p.partition_index) {
            None => answer.with_error_code(UNKNOWN_TOPIC_OR_PARTITION),
            Some(id) if p.timestamp == EARLIEST => answer.with_offset(self.partitions[id].start()),
            Some(id) => answer.with_offset(self.partitions[id].end),
        }
    }

    /// Encodes the Fetch response to `req` into `reply` (v4-v11, all non-flexible); true
    /// when it should be sent now: it has `min_bytes` of records, or an error.
    fn read(&self, req: &FetchRequest, v: i16, corr: i32, reply: &mut Reply) -> bool {
        let out = &mut reply.out;
        let frame_at = begin_frame(out);
        out.put_i32(corr); // response header v0
        out.put_i32(0); // throttle time
        if v >= 7 {
            out.put_i16(0);
            out.put_i32(0); // no session: the consumer sends full fetches
        }
        let max_bytes = req.max_bytes.max(0) as usize;
        let mut total = 0;
        let mut error = false;
        out.put_i32(req.topics.len() as i32);
        for t in &req.topics {
            put_str(out, t.topic.as_str());
            out.put_i32(t.partitions.len() as i32);
            for p in &t.partitions {
                let log = self
                    .partition(t.topic.as_str(), p.partition)
                    .map(|id| &self.partitions[id]);
                let code = match log {
                    None => UNKNOWN_TOPIC_OR_PARTITION,
                    Some(log) if !(0..=log.end).contains(&p.fetch_offset) => OFFSET_OUT_OF_RANGE,
                    Some(_) => 0,
                };
                error |= code != 0;
                let end = log.map_or(-1, |l| l.end);
                out.put_i32(p.partition);
                out.put_i16(code);
                out.put_i64(end); // high watermark
                out.put_i64(end); // last stable offset: no transactions
                if v >= 5 {
                    out.put_i64(log.map_or(-1, PartitionLog::start));
                }
                out.put_i32(-1); // aborted transactions: null
                if v >= 11 {
                    out.put_i32(-1); // preferred read replica: none
                }
                let len_at = out.len();
                out.put_i32(0);
                let Some(log) = log.filter(|_| code == 0) else {
                    continue;
                };
                let limit =
                    (p.partition_max_bytes.max(0) as usize).min(max_bytes.saturating_sub(total));
                let mut len = 0;
                for b in log.batches_from(p.fetch_offset) {
                    // As Kafka does, the response's first batch goes even over the limits,
                    // so that a consumer always makes progress.
                    if len + b.bytes.len() > limit && total + len > 0 {
                        break;
                    }
                    len += b.bytes.len();
                    reply.batches.push(Spliced {
                        at: out.len(),
                        base_offset: b.base_offset.to_be_bytes(),
                        bytes: b.bytes.clone(),
                    });
                }
                out[len_at..len_at + 4].copy_from_slice(&(len as i32).to_be_bytes());
                total += len;
            }
        }
        let size = (out.len() - frame_at - 4 + total) as i32;
        out[frame_at..frame_at + 4].copy_from_slice(&size.to_be_bytes());
        error || total >= req.min_bytes.max(0) as usize
    }
}

/// A response: encoded bytes, with kept batches spliced in at positions of `out`.
#[derive(Default)]
struct Reply {
    out: Vec<u8>,
    batches: Vec<Spliced>,
}

struct Spliced {
    /// Where in `out` the batch goes.
    at: usize,
    /// Sent in place of the batch's own first 8 bytes.
    base_offset: [u8; 8],
    bytes: Bytes,
}

impl Reply {
    fn clear(&mut self) {
        self.out.clear();
        self.batches.clear();
    }

    /// Writes the whole response with writev: the batches are not copied.
    fn send(&self, w: &mut impl Write) -> io::Result<()> {
        let mut slices = Vec::with_capacity(3 * self.batches.len() + 1);
        let mut from = 0;
        for b in &self.batches {
            slices.push(IoSlice::new(&self.out[from..b.at]));
            slices.push(IoSlice::new(&b.base_offset));
            slices.push(IoSlice::new(&b.bytes[8..]));
            from = b.at;
        }
        slices.push(IoSlice::new(&self.out[from..]));
        slices.retain(|s| !s.is_empty());
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            match w.write_vectored(slices) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => IoSlice::advance_slices(&mut slices, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A running null broker.
pub struct NullBroker {
    pub addr: SocketAddr,
    pub stats: Arc<NullStats>,
}

/// Binds `listen` and serves on background threads until the process exits, keeping up
/// to about `retain_bytes` of produced data for fetches.
pub fn start(listen: &str, retain_bytes: usize) -> Result<NullBroker> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(NullStats::default());
    let state = Arc::new(State {
        addr,
        log: Mutex::new(Log::new(retain_bytes)),
        produced: Condvar::new(),
        stats: stats.clone(),
    });
    std::thread::Builder::new()
        .name("null-accept".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = state.clone();
                let _ = std::thread::Builder::new()
                    .name("null-conn".into())
                    .spawn(move || {
                        // A client going away ends its connection, not the broker.
                        let _ = serve_connection(stream, &state);
                    });
            }
        })?;
    Ok(NullBroker { addr, stats })
}

fn serve_connection(mut stream: TcpStream, state: &State) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reply = Reply::default();
    loop {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(0..=100 << 20).contains(&len) {
            bail!("bad frame length {len}");
        }
        // Each frame in its own buffer, as kept batches hold it. read_to_end fills the
        // spare capacity without zeroing it first, and reading the socket unbuffered spares
        // a copy (zeroing and copying frames cost the null broker 30% of its CPU).
        let mut frame = Vec::with_capacity(len as usize);
        (&mut stream).take(len as u64).read_to_end(&mut frame)?;
        if frame.len() != len as usize {
            bail!("connection closed inside a frame");
        }
        let mut frame = Bytes::from(frame);
        state.stats.requests.fetch_add(1, Ordering::Relaxed);
        if handle(&mut frame, state, &mut reply)? {
            reply.send(&mut writer)?;
        }
        // Let go of the batches sent, so that evicted frames are freed.
        reply.clear();
    }
}

/// Answers one request into `reply`; false when there is nothing to send (acks=0).
fn handle(frame: &mut Bytes, state: &State, reply: &mut Reply) -> Result<bool> {
    let frame_len = frame.len();
    let header = decode_request_header_from_buffer(frame)?;
    let key =
        ApiKey::try_from(header.request_api_key).map_err(|_| anyhow::anyhow!("bad api key"))?;
    let v = header.request_api_version;
    let corr = header.correlation_id;
    let served = SERVED.iter().find(|(k, _, _)| *k == key);
    let Some(&(_, min, max)) = served else {
        bail!("{key:?} is not served by the null broker");
    };
    let out = &mut reply.out;
    if key == ApiKey::ApiVersions {
        // Clients probe with their newest version; answer one we do not speak in v0 format.
        let (error, v) = if v > max { (35, 0) } else { (0, v) };
        let resp = ApiVersionsResponse::default()
            .with_error_code(error)
            .with_api_keys(
                SERVED
                    .iter()
                    .map(|&(k, min, max)| {
                        ApiVersion::default()
                            .with_api_key(k as i16)
                            .with_min_version(min)
                            .with_max_version(max)
                    })
                    .collect(),
            );
        return respond(out, key, v, corr, &resp);
    }
    if !(min..=max).contains(&v) {
        bail!("{key:?} v{v} is not served");
    }
    match key {
        ApiKey::Metadata => {
            let req = MetadataRequest::decode(frame, v)?;
            let resp = metadata(state, &req);
            respond(out, key, v, corr, &resp)
        }
        ApiKey::CreateTopics => {
            let req = CreateTopicsRequest::decode(frame, v)?;
            let mut log = state.log.lock().unwrap();
            let results = req
                .topics
                .iter()
                .map(|t| {
                    let n = if t.num_partitions > 0 {
                        t.num_partitions
                    } else {
                        1
                    };
                    let created = log.create(t.name.as_str(), n);
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(if created { 0 } else { 36 })
                        .with_num_partitions(n)
                        .with_replication_factor(1)
                })
                .collect();
            drop(log);
            respond(
                out,
                key,
                v,
                corr,
                &CreateTopicsResponse::default().with_topics(results),
            )
        }
        ApiKey::Produce => {
            let req = ProduceRequest::decode(frame, v)?;
            state.stats.produce_requests.fetch_add(1, Ordering::Relaxed);
            let mut log = state.log.lock().unwrap();
            let responses = log.append(&req, frame_len, &state.stats);
            if log.waiting > 0 {
                state.produced.notify_all();
            }
            drop(log);
            if req.acks == 0 {
                return Ok(false);
            }
            let resp = ProduceResponse::default().with_responses(responses);
            respond(out, key, v, corr, &resp)
        }
        ApiKey::Fetch => {
            let req = FetchRequest::decode(frame, v)?;
            state.stats.fetches.fetch_add(1, Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_millis(req.max_wait_ms.max(0) as u64);
            let mut log = state.log.lock().unwrap();
            // The long poll: answer once there is enough to send or the wait is over.
            loop {
                reply.clear();
                let now = Instant::now();
                if log.read(&req, v, corr, reply) || now >= deadline {
                    return Ok(true);
                }
                log.waiting += 1;
                log = state.produced.wait_timeout(log, deadline - now).unwrap().0;
                log.waiting -= 1;
            }
        }
        ApiKey::ListOffsets => {
            let req = ListOffsetsRequest::decode(frame, v)?;
            let log = state.log.lock().unwrap();
            let resp = ListOffsetsResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| log.list_offset(t.name.as_str(), p))
                                    .collect(),
                            )
                    })
                    .collect(),
            );
            drop(log);
            respond(out, key, v, corr, &resp)
        }
        _ => unreachable!("every served key is handled"),
    }
}

fn metadata(state: &State, req: &MetadataRequest) -> MetadataResponse {
    let mut log = state.log.lock().unwrap();
    let names: Vec<String> = match &req.topics {
        Some(ts) => ts
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect(),
        None => log.topics.keys().cloned().collect(),
    };
    let topic_list = names
        .into_iter()
        .map(|name| {
            if req.allow_auto_topic_creation {
                log.create(&name, 1);
            }
            let t = MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            match log.topics.get(&name) {
                None => t.with_error_code(UNKNOWN_TOPIC_OR_PARTITION),
                Some(ids) => t.with_partitions(
                    (0..ids.len() as i32)
                        .map(|i| {
                            MetadataResponsePartition::default()
                                .with_partition_index(i)
                                .with_leader_id(NODE_ID.into())
                                .with_replica_nodes(vec![NODE_ID.into()])
                                .with_isr_nodes(vec![NODE_ID.into()])
                        })
                        .collect(),
                ),
            }
        })
        .collect();
    drop(log);
    MetadataResponse::default()
        .with_brokers(vec![MetadataResponseBroker::default()
            .with_node_id(NODE_ID.into())
            .with_host(StrBytes::from_string(state.addr.ip().to_string()))
            .with_port(i32::from(state.addr.port()))])
        .with_controller_id(NODE_ID.into())
        .with_topics(topic_list)
}

fn respond<M: Encodable>(
    out: &mut Vec<u8>,
    key: ApiKey,
    v: i16,
    corr: i32,
    body: &M,
) -> Result<bool> {
    let at = begin_frame(out);
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(out, key.response_header_version(v))?;
    body.encode(out, v)?;
    end_frame(out, at);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::fetch_response::PartitionData;
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};

    use super::*;
    use crate::client::batch::{BatchBuilder, Compression};

    /// A produce request of one batch per value list, to partitions 0 and 1 alternately.
    fn produce(batches: &[&[&[u8]]]) -> ProduceRequest {
        let mut b = BatchBuilder::default();
        let partitions = batches
            .iter()
            .enumerate()
            .map(|(i, values)| {
                for v in *values {
                    b.push(0, None, &[v], &[]);
                }
                let mut bytes = Vec::new();
                b.finish_into(&mut bytes, Compression::None).unwrap();
                PartitionProduceData::default()
                    .with_index(i as i32 % 2)
                    .with_records(Some(bytes.into()))
            })
            .collect();
        ProduceRequest::default().with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str("t")))
            .with_partition_data(partitions)])
    }

    fn fetch(offsets: [i64; 2], partition_max_bytes: i32) -> FetchRequest {
        FetchRequest::default()
            .with_max_bytes(1 << 20)
            .with_min_bytes(1)
            .with_topics(vec![FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_static_str("t")))
                .with_partitions(
                    (0..2)
                        .map(|p| {
                            FetchPartition::default()
                                .with_partition(p)
                                .with_fetch_offset(offsets[p as usize])
                                .with_partition_max_bytes(partition_max_bytes)
                        })
                        .collect(),
                )])
    }

    /// The Fetch response `log` sends, as the client decodes it, checking on the way that
    /// it is byte for byte what kafka-protocol encodes.
    fn read(log: &Log, req: &FetchRequest, v: i16) -> (bool, FetchResponse) {
        let mut reply = Reply::default();
        let ready = log.read(req, v, 7, &mut reply);
        let mut sent = Vec::new();
        reply.send(&mut sent).unwrap();
        let size = i32::from_be_bytes(sent[..4].try_into().unwrap()) as usize;
        assert_eq!(size + 4, sent.len());
        let mut frame = Bytes::from(sent.clone()).slice(4..);
        let header = ResponseHeader::decode(&mut frame, 0).unwrap();
        assert_eq!(header.correlation_id, 7);
        let resp = FetchResponse::decode(&mut frame, v).unwrap();
        assert!(frame.is_empty());
        let mut encoded = Vec::new();
        respond(&mut encoded, ApiKey::Fetch, v, 7, &resp).unwrap();
        assert_eq!(encoded, sent, "v{v}");
        (ready, resp)
    }

    /// (base offset, values) of each batch in a fetched partition, checking each record's
    /// offset (and, in the decoder, each batch's CRC).
    fn batches(p: &PartitionData) -> Vec<(i64, Vec<Vec<u8>>)> {
        let records = p.records.as_ref().unwrap();
        let batches = crate::client::records::split_batches(records).unwrap();
        batches
            .into_iter()
            .map(|b| {
                let mut bytes = b.bytes;
                let base = i64::from_be_bytes(bytes[..8].try_into().unwrap());
                let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).unwrap();
                let values = (base..)
                    .zip(set.records)
                    .map(|(offset, r)| {
                        assert_eq!(r.offset, offset);
                        r.value.unwrap().to_vec()
                    })
                    .collect();
                (base, values)
            })
            .collect()
    }

    #[test]
    fn fetch_serves_the_produced_batches_at_their_offsets_in_every_version() {
        let mut log = Log::new(1 << 20);
        assert!(log.create("t", 2));
        let stats = NullStats::default();
        let req = produce(&[&[b"a", b"b"], &[b"x"], &[b"c"]]);
        let answers = log.append(&req, 100, &stats);
        let bases: Vec<_> = answers[0]
            .partition_responses
            .iter()
            .map(|p| (p.index, p.base_offset))
            .collect();
        assert_eq!(bases, [(0, 0), (1, 0), (0, 2)]);
        assert_eq!(stats.records.load(Ordering::Relaxed), 4);
        for v in 4..=11 {
            let (ready, resp) = read(&log, &fetch([1, 0], 1 << 20), v);
            assert!(ready);
            let [p0, p1] = &resp.responses[0].partitions[..] else {
                panic!("two partitions");
            };
            // From offset 1: the batch holding it, whole (the consumer skips offset 0).
            assert_eq!(
                batches(p0),
                [
                    (0, vec![b"a".to_vec(), b"b".to_vec()]),
                    (2, vec![b"c".to_vec()])
                ]
            );
            assert_eq!((p0.high_watermark, p1.high_watermark), (3, 1));
            assert_eq!(batches(p1), [(0, vec![b"x".to_vec()])]);
            // Caught up: nothing to send yet, so the fetch waits.
            let (ready, resp) = read(&log, &fetch([3, 1], 1 << 20), v);
            assert!(!ready);
            assert!(resp.responses[0].partitions[0]
                .records
                .as_ref()
                .unwrap()
                .is_empty());
            // Past the end: an error, answered at once.
            let (ready, resp) = read(&log, &fetch([4, 1], 1 << 20), v);
            assert!(ready);
            assert_eq!(
                resp.responses[0].partitions[0].error_code,
                OFFSET_OUT_OF_RANGE
            );
        }
    }

    #[test]
    fn partition_max_bytes_cuts_at_whole_batches_but_lets_the_first_through() {
        let mut log = Log::new(1 << 20);
        log.create("t", 2);
        let req = produce(&[&[b"a"], &[b"x"], &[b"b"], &[b"y"]]);
        log.append(&req, 100, &NullStats::default());
        // Partition 0 gets its first batch though it is over the limit; partition 1 gets
        // nothing: the response already has data.
        let (_, resp) = read(&log, &fetch([0, 0], 10), 11);
        let [p0, p1] = &resp.responses[0].partitions[..] else {
            panic!("two partitions");
        };
        assert_eq!(batches(p0), [(0, vec![b"a".to_vec()])]);
        assert!(p1.records.as_ref().unwrap().is_empty());
    }

    #[test]
    fn the_cap_evicts_the_oldest_frames_and_fetches_below_them_get_the_oldest_kept() {
        let frame_len = 1000;
        let cap = 3 * (frame_len + 2 * std::mem::size_of::<Batch>());
        let mut log = Log::new(cap);
        log.create("t", 2);
        let values: Vec<[u8; 1]> = (0..10u8).map(|i| [i]).collect();
        for v in &values {
            // Each frame: one record to partition 0, one to partition 1.
            log.append(&produce(&[&[v], &[v]]), frame_len, &NullStats::default());
            assert!(log.held <= cap);
        }
        assert_eq!(log.frames.len(), 3);
        for p in &log.partitions {
            assert_eq!((p.start(), p.end), (7, 10));
        }
        let (ready, resp) = read(&log, &fetch([0, 8], 1 << 20), 11);
        assert!(ready);
        let [p0, p1] = &resp.responses[0].partitions[..] else {
            panic!("two partitions");
        };
        assert_eq!(p0.log_start_offset, 7);
        let kept =
            |from: u8| -> Vec<_> { (from..10).map(|i| (i64::from(i), vec![vec![i]])).collect() };
        assert_eq!(batches(p0), kept(7));
        assert_eq!(batches(p1), kept(8));
        // A frame over the cap on its own is kept until the next one.
        log.append(&produce(&[&[b"big"]]), 10 * cap, &NullStats::default());
        assert_eq!(log.frames.len(), 1);
        assert_eq!(log.partitions[0].start(), 10);
    }
}
