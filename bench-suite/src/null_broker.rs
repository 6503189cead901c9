//! A broker that stores nothing: it answers ApiVersions, Metadata, CreateTopics, Produce,
//! Fetch (always empty) and ListOffsets just enough for the generator to run, so a run
//! against it measures the generator's own ceiling on this machine.
//!
//! One blocking thread per connection: the simplest server that keeps each connection's
//! requests in order, and its per-request cost (one read, a decode, one write) is far below
//! a real broker's. It counts the records it is sent, which the tests check.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{decode_request_header_from_buffer, Decodable, Encodable, StrBytes};

use crate::client::records::count_records;

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

struct State {
    addr: SocketAddr,
    topics: Mutex<HashMap<String, i32>>,
    stats: Arc<NullStats>,
}

/// A running null broker.
pub struct NullBroker {
    pub addr: SocketAddr,
    pub stats: Arc<NullStats>,
}

/// Binds `listen` and serves on background threads until the process exits.
pub fn start(listen: &str) -> Result<NullBroker> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(NullStats::default());
    let state = Arc::new(State {
        addr,
        topics: Mutex::new(HashMap::new()),
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

fn serve_connection(stream: TcpStream, state: &State) -> Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    let mut out = Vec::with_capacity(1 << 16);
    loop {
        let mut len = [0u8; 4];
        reader.read_exact(&mut len)?;
        let len = i32::from_be_bytes(len);
        if !(0..=100 << 20).contains(&len) {
            bail!("bad frame length {len}");
        }
        let mut frame = BytesMut::zeroed(len as usize);
        reader.read_exact(&mut frame)?;
        let mut frame = frame.freeze();
        state.stats.requests.fetch_add(1, Ordering::Relaxed);
        out.clear();
        if handle(&mut frame, state, &mut out)? {
            writer.write_all(&out)?;
        }
    }
}

/// Answers one request into `out`; false when there is nothing to send (acks=0).
fn handle(frame: &mut Bytes, state: &State, out: &mut Vec<u8>) -> Result<bool> {
    let header = decode_request_header_from_buffer(frame)?;
    let key =
        ApiKey::try_from(header.request_api_key).map_err(|_| anyhow::anyhow!("bad api key"))?;
    let v = header.request_api_version;
    let corr = header.correlation_id;
    let served = SERVED.iter().find(|(k, _, _)| *k == key);
    let Some(&(_, min, max)) = served else {
        bail!("{key:?} is not served by the null broker");
    };
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
            let mut topics = state.topics.lock().unwrap();
            let results = req
                .topics
                .iter()
                .map(|t| {
                    let exists = topics.contains_key(t.name.as_str());
                    let n = if t.num_partitions > 0 {
                        t.num_partitions
                    } else {
                        1
                    };
                    topics.entry(t.name.to_string()).or_insert(n);
                    CreatableTopicResult::default()
                        .with_name(t.name.clone())
                        .with_error_code(if exists { 36 } else { 0 })
                        .with_num_partitions(n)
                        .with_replication_factor(1)
                })
                .collect();
            drop(topics);
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
            let stats = &state.stats;
            stats.produce_requests.fetch_add(1, Ordering::Relaxed);
            for t in &req.topic_data {
                for p in &t.partition_data {
                    if let Some(r) = &p.records {
                        stats.records.fetch_add(count_records(r), Ordering::Relaxed);
                        stats.bytes.fetch_add(r.len() as u64, Ordering::Relaxed);
                    }
                }
            }
            if req.acks == 0 {
                return Ok(false);
            }
            let resp = ProduceResponse::default().with_responses(
                req.topic_data
                    .iter()
                    .map(|t| {
                        TopicProduceResponse::default()
                            .with_name(t.name.clone())
                            .with_partition_responses(
                                t.partition_data
                                    .iter()
                                    .map(|p| {
                                        PartitionProduceResponse::default().with_index(p.index)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
            respond(out, key, v, corr, &resp)
        }
        ApiKey::Fetch => {
            let req = FetchRequest::decode(frame, v)?;
            state.stats.fetches.fetch_add(1, Ordering::Relaxed);
            // No data ever arrives: wait out the long poll as a real broker would.
            std::thread::sleep(Duration::from_millis(req.max_wait_ms.clamp(0, 500) as u64));
            let resp = FetchResponse::default().with_responses(
                req.topics
                    .iter()
                    .map(|t| {
                        FetchableTopicResponse::default()
                            .with_topic(t.topic.clone())
                            .with_topic_id(t.topic_id)
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        PartitionData::default()
                                            .with_partition_index(p.partition)
                                            .with_high_watermark(0)
                                            .with_records(Some(Bytes::new()))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
            respond(out, key, v, corr, &resp)
        }
        ApiKey::ListOffsets => {
            let req = ListOffsetsRequest::decode(frame, v)?;
            let resp = ListOffsetsResponse::default().with_topics(
                req.topics
                    .iter()
                    .map(|t| {
                        ListOffsetsTopicResponse::default()
                            .with_name(t.name.clone())
                            .with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_offset(0)
                                            .with_timestamp(-1)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
            respond(out, key, v, corr, &resp)
        }
        _ => unreachable!("every served key is handled"),
    }
}

fn metadata(state: &State, req: &MetadataRequest) -> MetadataResponse {
    let mut topics = state.topics.lock().unwrap();
    let names: Vec<String> = match &req.topics {
        Some(ts) => ts
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
            .collect(),
        None => topics.keys().cloned().collect(),
    };
    let topic_list = names
        .into_iter()
        .map(|name| {
            if req.allow_auto_topic_creation {
                topics.entry(name.clone()).or_insert(1);
            }
            let t = MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(name.clone()))));
            match topics.get(&name) {
                None => t.with_error_code(3), // UNKNOWN_TOPIC_OR_PARTITION
                Some(&n) => t.with_partitions(
                    (0..n)
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
    let at = crate::client::wire::begin_frame(out);
    ResponseHeader::default()
        .with_correlation_id(corr)
        .encode(out, key.response_header_version(v))?;
    body.encode(out, v)?;
    crate::client::wire::end_frame(out, at);
    Ok(true)
}
