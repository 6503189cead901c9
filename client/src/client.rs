//! A client of a whole cluster: bootstrap from a list of addresses, metadata to learn
//! brokers and partition leaders, and one connection per broker node id, opened on
//! first use.

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{metadata_request, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use serde::Serialize;
use uuid::Uuid;

use crate::connection::{Connection, Options};
use crate::error::{check, Error, Result};

/// How long to wait between tries of an answer Kafka calls retriable (a leader being
/// elected, a coordinator loading).
const RETRY_BACKOFF: Duration = Duration::from_millis(100);

pub struct Client {
    options: Options,
    /// The first bootstrap broker that answered; cluster-wide requests go here.
    bootstrap: Connection,
    /// Connections to brokers other than the bootstrap one, by node id.
    nodes: HashMap<i32, Connection>,
    /// Broker addresses (`host:port`) by node id, from metadata and FindCoordinator.
    addresses: HashMap<i32, String>,
    /// Topics as the latest metadata described them, by name.
    topics: HashMap<String, TopicInfo>,
    /// Group coordinators by group id.
    pub(crate) coordinators: HashMap<String, i32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct BrokerInfo {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    pub fn addr(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TopicInfo {
    pub name: String,
    /// Nil when the broker does not report topic ids (Metadata before v10).
    pub topic_id: Uuid,
    pub internal: bool,
    pub partitions: Vec<PartitionInfo>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PartitionInfo {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline_replicas: Vec<i32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Metadata {
    pub cluster_id: Option<String>,
    pub controller_id: i32,
    pub brokers: Vec<BrokerInfo>,
    pub topics: Vec<TopicInfo>,
}

/// Which topics a metadata request asks about.
#[derive(Clone, Copy)]
pub enum Topics<'a> {
    All,
    /// None: only brokers and the cluster.
    None,
    /// These, which must exist unless `auto_create` (the broker then creates them with its
    /// defaults, as producers expect).
    Named {
        names: &'a [String],
        auto_create: bool,
    },
}

impl Client {
    /// Connects to the first of `brokers` (`host:port`) that answers.
    pub fn connect(brokers: &[String], options: Options) -> Result<Client> {
        let mut failures = Vec::new();
        for addr in brokers {
            match Connection::open(addr, &options) {
                Ok(bootstrap) => {
                    return Ok(Client {
                        options,
                        bootstrap,
                        nodes: HashMap::new(),
                        addresses: HashMap::new(),
                        topics: HashMap::new(),
                        coordinators: HashMap::new(),
                    })
                }
                Err(e) => failures.push(e),
            }
        }
        match failures.len() {
            0 => Err(Error::Invalid("no broker address given".into())),
            1 => Err(failures.remove(0)),
            _ => Err(Error::Invalid(format!(
                "no broker answered: {}",
                failures
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))),
        }
    }

    pub fn options(&self) -> &Options {
        &self.options
    }

    /// The connection for requests any broker can answer (metadata, topic admin).
    pub fn bootstrap(&mut self) -> &mut Connection {
        &mut self.bootstrap
    }

    /// Runs `call` on the connection to broker `node_id`; a connection the call broke is
    /// dropped, so the next use reconnects.
    pub fn with_node<T>(
        &mut self,
        node_id: i32,
        call: impl FnOnce(&mut Connection) -> Result<T>,
    ) -> Result<T> {
        let result = call(self.node(node_id)?);
        if result.as_ref().is_err_and(Error::breaks_connection) {
            self.nodes.remove(&node_id);
        }
        result
    }

    fn node(&mut self, node_id: i32) -> Result<&mut Connection> {
        let addr = self.address_of(node_id)?;
        if addr == self.bootstrap.addr() {
            return Ok(&mut self.bootstrap);
        }
        match self.nodes.entry(node_id) {
            Entry::Occupied(entry) => Ok(entry.into_mut()),
            Entry::Vacant(entry) => Ok(entry.insert(Connection::open(&addr, &self.options)?)),
        }
    }

    fn address_of(&mut self, node_id: i32) -> Result<String> {
        if !self.addresses.contains_key(&node_id) {
            self.metadata(Topics::None)?;
        }
        self.addresses
            .get(&node_id)
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("the cluster has no broker {node_id}")))
    }

    pub(crate) fn remember_address(&mut self, node_id: i32, addr: String) {
        self.addresses.insert(node_id, addr);
    }

    /// Node ids of every broker the client knows of (asks for metadata first).
    pub fn broker_ids(&mut self) -> Result<Vec<i32>> {
        let mut ids: Vec<i32> = self
            .metadata(Topics::None)?
            .brokers
            .iter()
            .map(|b| b.node_id)
            .collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Asks for metadata, retrying while a named topic's leader is being elected (as right
    /// after its creation), and remembers brokers and topics for routing.
    pub fn metadata(&mut self, topics: Topics) -> Result<Metadata> {
        let bootstrap = &mut self.bootstrap;
        let response = retrying(self.options.timeout, || {
            let response = bootstrap.request(4.., |_| metadata_request(topics))?;
            // Named topics are the caller's business (unknown, or without a leader yet);
            // in a listing of all, one topic's trouble must not hide the others.
            if matches!(topics, Topics::Named { .. }) {
                metadata_error(&response)?;
            }
            Ok(response)
        })?;
        Ok(self.remember(response))
    }

    /// A topic as metadata describes it, from the latest metadata if it is there.
    pub fn topic(&mut self, name: &str, auto_create: bool) -> Result<TopicInfo> {
        if let Some(topic) = self.topics.get(name) {
            return Ok(topic.clone());
        }
        let names = [name.to_string()];
        let metadata = self.metadata(Topics::Named {
            names: &names,
            auto_create,
        })?;
        metadata
            .topics
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::Invalid(format!("the broker did not describe topic {name}")))
    }

    /// The node id of the leader of a partition.
    pub fn leader(&mut self, topic: &str, partition: i32) -> Result<i32> {
        let info = self.topic(topic, false)?;
        info.partitions
            .iter()
            .find(|p| p.partition == partition)
            .map(|p| p.leader)
            .ok_or_else(|| Error::Kafka {
                context: format!("partition {topic}-{partition}"),
                code: ResponseError::UnknownTopicOrPartition,
                message: Some(format!("{topic} has {} partitions", info.partitions.len())),
            })
    }

    /// Forgets cached topics (after creating, deleting or growing them).
    pub fn forget_topics(&mut self) {
        self.topics.clear();
    }

    fn remember(&mut self, response: MetadataResponse) -> Metadata {
        let metadata = Metadata::from(response);
        for broker in &metadata.brokers {
            self.addresses.insert(broker.node_id, broker.addr());
        }
        for topic in &metadata.topics {
            self.topics.insert(topic.name.clone(), topic.clone());
        }
        metadata
    }
}

fn metadata_request(topics: Topics) -> MetadataRequest {
    let named = |names: &[String]| {
        names
            .iter()
            .map(|name| {
                metadata_request::MetadataRequestTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
            })
            .collect()
    };
    let (list, auto_create) = match topics {
        Topics::All => (None, false),
        Topics::None => (Some(Vec::new()), false),
        Topics::Named { names, auto_create } => (Some(named(names)), auto_create),
    };
    MetadataRequest::default()
        .with_topics(list)
        .with_allow_auto_topic_creation(auto_create)
}

/// The first error of a topic or partition in a metadata answer.
fn metadata_error(response: &MetadataResponse) -> Result<()> {
    for topic in &response.topics {
        let name = topic.name.as_ref().map_or("", |n| n.as_str());
        check(topic.error_code, None, || format!("topic {name}"))?;
        for partition in &topic.partitions {
            check(partition.error_code, None, || {
                format!("partition {name}-{}", partition.partition_index)
            })?;
        }
    }
    Ok(())
}

/// Errors that pass by themselves: a leader being elected (as right after a topic is
/// created), a group coordinator starting or loading. (Kafka calls more errors
/// retriable, such as an unknown topic, which a command line should report at once.)
fn is_transient(error: &Error) -> bool {
    matches!(
        error.kafka_code(),
        Some(
            ResponseError::LeaderNotAvailable
                | ResponseError::CoordinatorLoadInProgress
                | ResponseError::CoordinatorNotAvailable
        )
    )
}

impl From<MetadataResponse> for Metadata {
    fn from(response: MetadataResponse) -> Metadata {
        let brokers = response
            .brokers
            .into_iter()
            .map(|b| BrokerInfo {
                node_id: b.node_id.0,
                host: b.host.to_string(),
                port: b.port,
                rack: b.rack.map(|r| r.to_string()),
            })
            .collect();
        let topics = response
            .topics
            .into_iter()
            .map(|t| TopicInfo {
                name: t.name.map(|n| n.to_string()).unwrap_or_default(),
                topic_id: t.topic_id,
                internal: t.is_internal,
                partitions: t
                    .partitions
                    .into_iter()
                    .map(|p| PartitionInfo {
                        partition: p.partition_index,
                        leader: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.into_iter().map(|n| n.0).collect(),
                        isr: p.isr_nodes.into_iter().map(|n| n.0).collect(),
                        offline_replicas: p.offline_replicas.into_iter().map(|n| n.0).collect(),
                    })
                    .collect(),
            })
            .collect();
        Metadata {
            cluster_id: response.cluster_id.map(|c| c.to_string()),
            controller_id: response.controller_id.0,
            brokers,
            topics,
        }
    }
}

/// Retries `call` while it fails with a transient error, until `timeout`.
pub(crate) fn retrying<T>(timeout: Duration, mut call: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        match call() {
            Err(e) if is_transient(&e) && Instant::now() + RETRY_BACKOFF < deadline => {
                std::thread::sleep(RETRY_BACKOFF)
            }
            result => return result,
        }
    }
}
