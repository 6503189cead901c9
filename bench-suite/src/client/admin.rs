//! A blocking admin client for the set-up around a run (version negotiation, topics,
//! leaders, offsets). Nothing here is on the measured path.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::{
    create_topics_request::CreatableTopic,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, CreateTopicsRequest, ListOffsetsRequest,
    MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::{Decodable, Request, StrBytes};
use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::{produce, wire};

/// The version of each API the run uses: the highest both sides speak.
#[derive(Clone, Copy, Debug)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub metadata: i16,
    pub list_offsets: i16,
    pub create_topics: i16,
}

/// Versions this client implements. Fetch stops at 11, the last non-flexible version: no
/// tagged fields to trip over (Tansu 0.6 sends tags at v12 that kafka-protocol refuses), and
/// topic names rather than ids (13+); Produce is limited by the hand-written encoder.
const OURS: [(ApiKey, i16, i16); 5] = [
    (
        ApiKey::Produce,
        *produce::VERSIONS.start(),
        *produce::VERSIONS.end(),
    ),
    (ApiKey::Fetch, 4, 11),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::CreateTopics, 2, 7),
];

const UNSUPPORTED_VERSION: i16 = 35;
const TOPIC_ALREADY_EXISTS: i16 = 36;

/// One partition and the broker leading it.
#[derive(Clone, Debug)]
pub struct PartitionInfo {
    pub topic: usize,
    pub partition: i32,
    pub leader: i32,
}

/// Topics, their partitions (ordered by topic, then partition) and the brokers leading them.
#[derive(Clone, Debug)]
pub struct Layout {
    pub topics: Vec<String>,
    /// Topic ids (Metadata v10+; nil from older brokers), as `topics`.
    pub topic_ids: Vec<Uuid>,
    pub partitions: Vec<PartitionInfo>,
    pub brokers: BTreeMap<i32, SocketAddr>,
}

/// A blocking connection for set-up requests (and a group member's heartbeats).
pub struct Admin {
    stream: TcpStream,
    correlation: i32,
    pub versions: Versions,
    /// Every API the broker serves, with its version range.
    served: Vec<(i16, i16, i16)>,
}

impl Admin {
    /// Connects and negotiates API versions.
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        // Creating 10,000 partitions can take a while on a small machine.
        stream.set_read_timeout(Some(Duration::from_secs(180)))?;
        let mut admin = Admin {
            stream,
            correlation: 0,
            versions: Versions {
                produce: 0,
                fetch: 0,
                metadata: 0,
                list_offsets: 0,
                create_topics: 0,
            },
            served: Vec::new(),
        };
        admin.versions = admin.negotiate()?;
        Ok(admin)
    }

    fn negotiate(&mut self) -> Result<Versions> {
        let req = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("corelog-bench"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut frame = self.exchange(&req, 3)?;
        // A broker that cannot answer v3 replies in v0 format with UNSUPPORTED_VERSION.
        let error = (&frame[4..6]).get_i16();
        let version = if error == UNSUPPORTED_VERSION { 0 } else { 3 };
        frame.advance(4);
        let resp = ApiVersionsResponse::decode(&mut frame, version)?;
        self.served = resp
            .api_keys
            .iter()
            .map(|k| (k.api_key, k.min_version, k.max_version))
            .collect();
        let mut picked = [0i16; 5];
        for (slot, (key, min, max)) in picked.iter_mut().zip(OURS) {
            *slot = self.pick_version(key, min, max)?;
        }
        Ok(Versions {
            produce: picked[0],
            fetch: picked[1],
            metadata: picked[2],
            list_offsets: picked[3],
            create_topics: picked[4],
        })
    }

    /// The highest version of `key` in `min..=max` that the broker serves.
    pub fn pick_version(&self, key: ApiKey, min: i16, max: i16) -> Result<i16> {
        let &(_, their_min, their_max) = self
            .served
            .iter()
            .find(|(k, _, _)| *k == key as i16)
            .with_context(|| format!("broker does not serve {key:?}"))?;
        let v = max.min(their_max);
        if v < min.max(their_min) {
            bail!("no common {key:?} version: ours {min}-{max}, broker {their_min}-{their_max}");
        }
        Ok(v)
    }

    /// Sends one request and returns its whole response frame (correlation id first).
    fn exchange<R: Request>(&mut self, req: &R, version: i16) -> Result<Bytes> {
        self.correlation += 1;
        let mut buf = Vec::new();
        wire::put_request(&mut buf, req, version, self.correlation)?;
        self.stream.write_all(&buf)?;
        let mut len = [0u8; 4];
        self.stream.read_exact(&mut len)?;
        let mut frame = vec![0u8; i32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut frame)?;
        if wire::correlation_id(&frame) != Some(self.correlation) {
            bail!("response out of order");
        }
        Ok(Bytes::from(frame))
    }

    /// Sends one request and waits for its response.
    pub fn call<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let frame = self.exchange(req, version)?;
        wire::decode_response::<R>(frame, version, self.correlation)
    }

    /// Metadata for `topics`, without creating them.
    pub fn metadata(&mut self, topics: &[String]) -> Result<MetadataResponse> {
        let req = MetadataRequest::default()
            .with_topics(Some(
                topics
                    .iter()
                    .map(|t| MetadataRequestTopic::default().with_name(Some(topic_name(t))))
                    .collect(),
            ))
            .with_allow_auto_topic_creation(false);
        self.call(&req, self.versions.metadata)
    }

    /// Creates the topics that do not exist yet; returns how many it created.
    pub fn create_topics(&mut self, topics: &[String], partitions: i32) -> Result<usize> {
        let req = CreateTopicsRequest::default()
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(topic_name(t))
                            .with_num_partitions(partitions)
                            .with_replication_factor(1)
                    })
                    .collect(),
            )
            .with_timeout_ms(120_000);
        let resp = self.call(&req, self.versions.create_topics)?;
        let mut created = 0;
        for t in resp.topics {
            created += usize::from(t.error_code == 0);
            if t.error_code != 0 && t.error_code != TOPIC_ALREADY_EXISTS {
                bail!(
                    "creating topic {}: {} {}",
                    t.name.as_str(),
                    error_name(t.error_code),
                    t.error_message.as_deref().unwrap_or("")
                );
            }
        }
        Ok(created)
    }

    /// Creates missing topics and waits until every partition has a leader that serves
    /// it (a broker may name a leader before it has opened a new partition's log: a run
    /// starting then would measure topic creation). Returns the layout and how many topics
    /// were created.
    pub fn ensure_topics(&mut self, topics: &[String], partitions: i32) -> Result<(Layout, usize)> {
        let created = self.create_topics(topics, partitions)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let md = self.metadata(topics)?;
            let served = match layout(topics, partitions, &md)? {
                Some(layout) => match leaders_serve(&layout) {
                    Ok(()) => return Ok((layout, created)),
                    Err(e) => e,
                },
                None => anyhow::anyhow!("some partition has no leader"),
            };
            if Instant::now() >= deadline {
                bail!("topics {topics:?} not served within 120 s: {served:#}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Offsets at `timestamp` (-1: the end of the log, -2: its start) of each partition.
    pub fn list_offsets(&mut self, layout: &Layout, timestamp: i64) -> Result<Vec<i64>> {
        let req = ListOffsetsRequest::default()
            .with_replica_id((-1).into())
            .with_topics(
                layout
                    .topics
                    .iter()
                    .enumerate()
                    .map(|(ti, name)| {
                        ListOffsetsTopic::default()
                            .with_name(topic_name(name))
                            .with_partitions(
                                layout
                                    .partitions
                                    .iter()
                                    .filter(|p| p.topic == ti)
                                    .map(|p| {
                                        ListOffsetsPartition::default()
                                            .with_partition_index(p.partition)
                                            .with_timestamp(timestamp)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let resp = self.call(&req, self.versions.list_offsets)?;
        layout
            .partitions
            .iter()
            .map(|p| {
                let name = layout.topics[p.topic].as_str();
                let r = resp
                    .topics
                    .iter()
                    .filter(|t| t.name.as_str() == name)
                    .flat_map(|t| &t.partitions)
                    .find(|r| r.partition_index == p.partition)
                    .with_context(|| format!("no offset for {name}/{}", p.partition))?;
                if r.error_code != 0 {
                    bail!(
                        "ListOffsets {name}/{}: {}",
                        p.partition,
                        error_name(r.error_code)
                    );
                }
                Ok(r.offset)
            })
            .collect()
    }
}

/// Whether each partition's leader answers ListOffsets for it without an error.
fn leaders_serve(layout: &Layout) -> Result<()> {
    for (&broker, &addr) in &layout.brokers {
        let led = Layout {
            partitions: (layout.partitions.iter())
                .filter(|p| p.leader == broker)
                .cloned()
                .collect(),
            ..layout.clone()
        };
        if !led.partitions.is_empty() {
            Admin::connect(addr)?.list_offsets(&led, -1)?;
        }
    }
    Ok(())
}

/// A Kafka error code with its name, e.g. `error 3 (UnknownTopicOrPartition)`.
pub fn error_name(code: i16) -> String {
    match ResponseError::try_from_code(code) {
        Some(e) => format!("error {code} ({e:?})"),
        None => format!("error {code}"),
    }
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_owned()))
}

/// The layout described by `md`, or `None` while some partition still lacks a leader.
fn layout(topics: &[String], partitions: i32, md: &MetadataResponse) -> Result<Option<Layout>> {
    let mut brokers = BTreeMap::new();
    for b in &md.brokers {
        let addr = (b.host.as_str(), b.port as u16)
            .to_socket_addrs()?
            .next()
            .with_context(|| format!("broker {} has no address", b.host.as_str()))?;
        brokers.insert(b.node_id.0, addr);
    }
    let mut out = Vec::new();
    let mut topic_ids = Vec::new();
    for (ti, name) in topics.iter().enumerate() {
        let Some(t) = md
            .topics
            .iter()
            .find(|t| t.name.as_ref().map(|n| n.as_str()) == Some(name.as_str()))
        else {
            return Ok(None);
        };
        if t.error_code != 0 {
            return Ok(None);
        }
        if t.partitions.len() != partitions as usize {
            bail!(
                "topic {name} exists with {} partitions, the scenario wants {partitions}: \
                 use another --topic-prefix or delete it",
                t.partitions.len()
            );
        }
        topic_ids.push(t.topic_id);
        let mut parts: Vec<_> = t.partitions.iter().collect();
        parts.sort_by_key(|p| p.partition_index);
        for p in parts {
            if p.leader_id.0 < 0 || !brokers.contains_key(&p.leader_id.0) {
                return Ok(None);
            }
            out.push(PartitionInfo {
                topic: ti,
                partition: p.partition_index,
                leader: p.leader_id.0,
            });
        }
    }
    Ok(Some(Layout {
        topics: topics.to_vec(),
        topic_ids,
        partitions: out,
        brokers,
    }))
}
