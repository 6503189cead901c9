//! The active controller's decisions: it turns requests and the passage of time into metadata
//! records, judged against the current image. It does no I/O: the caller proposes the records
//! of one decision as one entry, waits until that entry is applied, and only then hands the
//! controller its next request or tick, so every decision sees the effects of the previous one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::image::{ClusterImage, PartitionState};
use super::placement::assign_replicas;
use super::records::{Assignment, BrokerId, Endpoint, MetadataRecord, NewPartition, NO_LEADER};

/// Kafka's own limit on topic name length.
const MAX_TOPIC_NAME_LEN: usize = 249;
const MAX_HOST_LEN: usize = 255;
const MAX_RACK_LEN: usize = 255;
/// Bounds the memory one misbehaving registrant can make every node hold.
const MAX_BROKERS: usize = 4096;
/// Topic configs are validated by the broker; this only bounds their number.
const MAX_TOPIC_CONFIGS: usize = 1024;
/// Bounds the optional work (elections, rebalancing) one tick puts in one entry; the rest
/// waits for the next tick. Fencing a broker is never split, so that no fenced broker leads.
const MAX_TICK_RECORDS: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} (error code {code})")]
pub struct ControllerError {
    /// Kafka error code.
    pub code: i16,
    pub message: String,
}

impl ControllerError {
    pub fn new(error: ResponseError, message: impl Into<String>) -> Self {
        Self {
            code: error.code(),
            message: message.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTopic {
    pub name: String,
    /// -1: the default.
    pub partitions: i32,
    /// -1: the default.
    pub replication_factor: i16,
    /// Explicit replicas per partition; partitions and replication factor must then be -1.
    pub assignments: Option<Vec<Vec<BrokerId>>>,
    pub configs: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    RegisterBroker {
        id: BrokerId,
        incarnation: Uuid,
        kafka: Endpoint,
        replication: Endpoint,
        rack: Option<String>,
    },
    Heartbeat {
        id: BrokerId,
        epoch: i64,
        want_shutdown: bool,
    },
    CreateTopics {
        topics: Vec<NewTopic>,
        validate_only: bool,
    },
    DeleteTopics {
        names: Vec<String>,
    },
    /// Per topic: name, new total partition count, explicit replicas of the new partitions.
    CreatePartitions {
        topics: Vec<(String, i32, Option<Assignment>)>,
        validate_only: bool,
    },
    /// Per topic: the full new config map.
    AlterConfigs {
        topics: Vec<(String, BTreeMap<String, String>)>,
        validate_only: bool,
    },
    AlterPartition {
        broker_id: BrokerId,
        broker_epoch: i64,
        topic: String,
        partition: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        new_isr: Vec<BrokerId>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub fenced: bool,
    pub should_shut_down: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTopic {
    /// Nil when only validated.
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    pub assignments: Vec<Vec<BrokerId>>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerResponse {
    /// The broker epoch.
    RegisterBroker(Result<i64, ControllerError>),
    Heartbeat(Result<HeartbeatReply, ControllerError>),
    CreateTopics(Vec<(String, Result<CreatedTopic, ControllerError>)>),
    /// The id of each deleted topic.
    DeleteTopics(Vec<(String, Result<Uuid, ControllerError>)>),
    /// The replicas of each topic's new partitions.
    CreatePartitions(Vec<(String, Result<Assignment, ControllerError>)>),
    AlterConfigs(Vec<(String, Result<(), ControllerError>)>),
    /// The partition after the change.
    AlterPartition(Result<PartitionState, ControllerError>),
}

/// What to do about one request: propose `records` as one entry (nothing when empty), wait
/// until it is applied, then answer with [`Decision::finish`].
#[derive(Debug)]
pub struct Decision {
    pub records: Vec<MetadataRecord>,
    response: ControllerResponse,
    /// A registration whose epoch is the raft index its record will get.
    registering: Option<(BrokerId, Uuid)>,
}

impl Decision {
    /// The response, given the image once `records` are applied (any image when there were
    /// none).
    pub fn finish(self, applied: &ClusterImage) -> ControllerResponse {
        match self.registering {
            None => self.response,
            Some((id, incarnation)) => ControllerResponse::RegisterBroker(
                applied
                    .brokers
                    .get(&id)
                    .filter(|b| b.incarnation == incarnation)
                    .map(|b| b.epoch)
                    .ok_or_else(|| {
                        ControllerError::new(
                            ResponseError::UnknownServerError,
                            format!("registration of broker {id} was superseded; retry"),
                        )
                    }),
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControllerSettings {
    pub session_timeout_ms: u64,
    pub default_partitions: i32,
    pub default_replication_factor: i16,
    pub unclean_leader_election: bool,
    pub auto_leader_rebalance: bool,
    pub leader_rebalance_interval_ms: u64,
    /// Kafka's leader.imbalance.per.broker.percentage.
    pub leader_imbalance_percentage: u32,
    pub max_partitions_per_topic: i32,
}

impl Default for ControllerSettings {
    fn default() -> Self {
        Self {
            session_timeout_ms: 9_000,
            default_partitions: 1,
            default_replication_factor: 1,
            unclean_leader_election: false,
            auto_leader_rebalance: true,
            leader_rebalance_interval_ms: 300_000,
            leader_imbalance_percentage: 10,
            max_partitions_per_topic: 10_000,
        }
    }
}

/// The records of one decision, with the image as they leave it, so that later parts of the
/// same decision judge against earlier ones (fencing two brokers of one ISR, say).
struct Batch<'a> {
    base: &'a ClusterImage,
    /// Cloned from `base` on the first record only: most heartbeats change nothing.
    work: Option<ClusterImage>,
    records: Vec<MetadataRecord>,
}

impl<'a> Batch<'a> {
    fn new(base: &'a ClusterImage) -> Self {
        Self {
            base,
            work: None,
            records: Vec::new(),
        }
    }

    fn image(&self) -> &ClusterImage {
        self.work.as_ref().unwrap_or(self.base)
    }

    fn push(&mut self, record: MetadataRecord) {
        // The real index is only known once proposed; within the batch only RegisterBroker
        // uses it, and nothing here reads a new registration's epoch.
        let index = self.base.applied_index + 1;
        self.work
            .get_or_insert_with(|| self.base.clone())
            .apply(index, &record);
        self.records.push(record);
    }

    fn extend(&mut self, records: Vec<MetadataRecord>) {
        for record in records {
            self.push(record);
        }
    }
}

pub struct Controller {
    settings: ControllerSettings,
    /// Last heartbeat (or registration, or activation) per broker, in ms.
    last_contact: HashMap<BrokerId, u64>,
    next_rebalance_ms: u64,
}

impl Controller {
    pub fn new(settings: ControllerSettings) -> Self {
        Self {
            settings,
            last_contact: HashMap::new(),
            next_rebalance_ms: 0,
        }
    }

    pub fn settings(&self) -> &ControllerSettings {
        &self.settings
    }

    /// Called when this node becomes the active controller: every registered broker gets a
    /// fresh session, since heartbeats sent to the previous controller were never seen here.
    pub fn activate(&mut self, image: &ClusterImage, now_ms: u64) {
        self.last_contact = image.brokers.keys().map(|&id| (id, now_ms)).collect();
        self.next_rebalance_ms = now_ms.saturating_add(self.settings.leader_rebalance_interval_ms);
    }

    /// Decides `request` against `image`, which must hold every earlier decision's records.
    pub fn handle(
        &mut self,
        image: &ClusterImage,
        request: ControllerRequest,
        now_ms: u64,
    ) -> Decision {
        let mut batch = Batch::new(image);
        let mut registering = None;
        let response = match request {
            ControllerRequest::RegisterBroker {
                id,
                incarnation,
                kafka,
                replication,
                rack,
            } => {
                let result = self.register(
                    &mut batch,
                    id,
                    incarnation,
                    kafka,
                    replication,
                    rack,
                    now_ms,
                );
                if result == Ok(None) {
                    registering = Some((id, incarnation));
                }
                // A new registration's epoch is filled in by `Decision::finish`.
                ControllerResponse::RegisterBroker(result.map(|epoch| epoch.unwrap_or(-1)))
            }
            ControllerRequest::Heartbeat {
                id,
                epoch,
                want_shutdown,
            } => ControllerResponse::Heartbeat(self.heartbeat(
                &mut batch,
                id,
                epoch,
                want_shutdown,
                now_ms,
            )),
            ControllerRequest::CreateTopics {
                topics,
                validate_only,
            } => ControllerResponse::CreateTopics(per_topic(
                &topics,
                |t| &t.name,
                |t| self.create_topic(&mut batch, t, validate_only),
            )),
            ControllerRequest::DeleteTopics { names } => {
                ControllerResponse::DeleteTopics(per_topic(
                    &names,
                    |name| name,
                    |name| {
                        let id = batch
                            .image()
                            .topic(name)
                            .ok_or_else(|| unknown_topic(name))?
                            .id;
                        batch.push(MetadataRecord::TopicDeleted { name: name.clone() });
                        Ok(id)
                    },
                ))
            }
            ControllerRequest::CreatePartitions {
                topics,
                validate_only,
            } => {
                let results = per_topic(
                    &topics,
                    |t| &t.0,
                    |(name, total, assignments)| {
                        self.create_partitions(&mut batch, name, *total, assignments.as_deref())
                    },
                );
                if validate_only {
                    batch.records.clear();
                }
                ControllerResponse::CreatePartitions(results)
            }
            ControllerRequest::AlterConfigs {
                topics,
                validate_only,
            } => {
                let results = per_topic(
                    &topics,
                    |t| &t.0,
                    |(name, configs)| alter_configs(&mut batch, name, configs),
                );
                if validate_only {
                    batch.records.clear();
                }
                ControllerResponse::AlterConfigs(results)
            }
            ControllerRequest::AlterPartition {
                broker_id,
                broker_epoch,
                topic,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            } => ControllerResponse::AlterPartition(alter_partition(
                &mut batch,
                broker_id,
                broker_epoch,
                &topic,
                partition,
                leader_epoch,
                partition_epoch,
                new_isr,
            )),
        };
        Decision {
            records: batch.records,
            response,
            registering,
        }
    }

    /// Periodic duties: fence brokers whose session expired, elect leaders where the leader is
    /// missing or may not lead, and move leadership back to preferred replicas when due.
    pub fn tick(&mut self, image: &ClusterImage, now_ms: u64) -> Vec<MetadataRecord> {
        let mut batch = Batch::new(image);
        let expired: Vec<(BrokerId, i64)> = image
            .brokers
            .values()
            .filter(|b| !b.fenced)
            .filter(|b| {
                // A broker this controller has not heard of yet gets a session from now.
                let last = *self.last_contact.entry(b.id).or_insert(now_ms);
                now_ms.saturating_sub(last) >= self.settings.session_timeout_ms
            })
            .map(|b| (b.id, b.epoch))
            .collect();
        for (id, epoch) in expired {
            if batch.records.len() >= MAX_TICK_RECORDS {
                break;
            }
            tracing::info!(broker = id, "session expired: fencing");
            fence(&mut batch, id, epoch);
        }

        let room = MAX_TICK_RECORDS.saturating_sub(batch.records.len());
        let elections = partition_changes(batch.image(), room, |image, p| {
            settle(image, p, &p.isr, self.settings.unclean_leader_election)
        });
        batch.extend(elections);

        if self.settings.auto_leader_rebalance && now_ms >= self.next_rebalance_ms {
            self.next_rebalance_ms =
                now_ms.saturating_add(self.settings.leader_rebalance_interval_ms);
            let room = MAX_TICK_RECORDS.saturating_sub(batch.records.len());
            let imbalanced =
                imbalanced_brokers(batch.image(), self.settings.leader_imbalance_percentage);
            let moves = partition_changes(batch.image(), room, |image, p| {
                let preferred = p.replicas[0];
                let movable = preferred != p.leader
                    && imbalanced.contains(&preferred)
                    && p.isr.contains(&preferred)
                    && image.is_eligible(preferred);
                movable.then(|| (preferred, p.isr.clone()))
            });
            if !moves.is_empty() {
                tracing::info!(
                    partitions = moves.len(),
                    "moving leadership back to preferred replicas"
                );
            }
            batch.extend(moves);
        }
        batch.records
    }

    /// `Ok(Some(epoch))` when this incarnation was already registered, `Ok(None)` when a
    /// RegisterBroker record was pushed (its epoch is known once applied).
    #[allow(clippy::too_many_arguments)]
    fn register(
        &mut self,
        batch: &mut Batch,
        id: BrokerId,
        incarnation: Uuid,
        kafka: Endpoint,
        replication: Endpoint,
        rack: Option<String>,
        now_ms: u64,
    ) -> Result<Option<i64>, ControllerError> {
        let invalid = |message: String| {
            Err(ControllerError::new(
                ResponseError::InvalidRegistration,
                message,
            ))
        };
        if id < 0 {
            return invalid(format!("broker id {id} is negative"));
        }
        for endpoint in [&kafka, &replication] {
            if endpoint.host.is_empty() || endpoint.host.len() > MAX_HOST_LEN || endpoint.port == 0
            {
                return invalid(format!(
                    "endpoint {}:{} needs a host of 1 to {MAX_HOST_LEN} bytes and a port",
                    endpoint.host, endpoint.port
                ));
            }
        }
        if rack
            .as_ref()
            .is_some_and(|r| r.is_empty() || r.len() > MAX_RACK_LEN)
        {
            return invalid(format!("rack must have 1 to {MAX_RACK_LEN} bytes"));
        }
        match batch.image().brokers.get(&id) {
            // The same incarnation registering again (a retry, or a restart on the same
            // data dir) keeps its epoch; one that shut down registers anew, so it is no
            // longer taken for shutting down.
            Some(existing) if existing.incarnation == incarnation && !existing.shutting_down => {
                self.last_contact.insert(id, now_ms);
                return Ok(Some(existing.epoch));
            }
            Some(existing) => {
                let in_session = self.last_contact.get(&id).is_some_and(|&last| {
                    now_ms.saturating_sub(last) < self.settings.session_timeout_ms
                });
                // A live, running incarnation means two processes claim this id; one that
                // asked to shut down or lost its session has stopped, as Kafka assumes too.
                if in_session && !existing.fenced && !existing.shutting_down {
                    return Err(ControllerError::new(
                        ResponseError::DuplicateBrokerRegistration,
                        format!("broker {id} is registered by another live incarnation"),
                    ));
                }
                if !existing.fenced {
                    let epoch = existing.epoch;
                    fence(batch, id, epoch);
                }
            }
            None if batch.image().brokers.len() >= MAX_BROKERS => {
                return invalid(format!("the cluster already has {MAX_BROKERS} brokers"));
            }
            None => {}
        }
        batch.push(MetadataRecord::RegisterBroker {
            id,
            incarnation,
            kafka,
            replication,
            rack,
        });
        self.last_contact.insert(id, now_ms);
        Ok(None)
    }

    fn heartbeat(
        &mut self,
        batch: &mut Batch,
        id: BrokerId,
        epoch: i64,
        want_shutdown: bool,
        now_ms: u64,
    ) -> Result<HeartbeatReply, ControllerError> {
        let Some(broker) = batch.image().brokers.get(&id).filter(|b| b.epoch == epoch) else {
            return Err(ControllerError::new(
                ResponseError::StaleBrokerEpoch,
                format!("broker {id} has no registration with epoch {epoch}; register again"),
            ));
        };
        let (fenced, shutting_down) = (broker.fenced, broker.shutting_down);
        self.last_contact.insert(id, now_ms);
        if want_shutdown && !shutting_down {
            batch.push(MetadataRecord::BrokerShuttingDown { id, epoch });
            evict(batch, id);
        } else if !want_shutdown && fenced && !shutting_down {
            batch.push(MetadataRecord::UnfenceBroker { id, epoch });
            // Partitions left leaderless with this broker in their ISR get it back as leader.
            let elections = partition_changes(batch.image(), usize::MAX, |image, p| {
                (p.leader == NO_LEADER && p.isr.contains(&id))
                    .then(|| settle(image, p, &p.isr, false))
                    .flatten()
            });
            batch.extend(elections);
        }
        let image = batch.image();
        let broker = &image.brokers[&id];
        let leads_any = || {
            image
                .topics
                .values()
                .flat_map(|t| &t.partitions)
                .any(|p| p.leader == id)
        };
        Ok(HeartbeatReply {
            fenced: broker.fenced,
            should_shut_down: broker.shutting_down && !leads_any(),
        })
    }

    fn create_topic(
        &self,
        batch: &mut Batch,
        topic: &NewTopic,
        validate_only: bool,
    ) -> Result<CreatedTopic, ControllerError> {
        validate_topic_name(&topic.name)?;
        if batch.image().topic(&topic.name).is_some() {
            return Err(ControllerError::new(
                ResponseError::TopicAlreadyExists,
                format!("topic {} already exists", topic.name),
            ));
        }
        check_config_count(topic.configs.len())?;
        let id = new_topic_id(batch.image());
        let partitions = match &topic.assignments {
            Some(_) if topic.partitions != -1 || topic.replication_factor != -1 => {
                return Err(ControllerError::new(
                    ResponseError::InvalidRequest,
                    "give either explicit assignments or partitions and replication factor, not both",
                ));
            }
            Some(assignments) => self.check_assignments(batch.image(), assignments, None)?,
            None => {
                let count = if topic.partitions == -1 {
                    self.settings.default_partitions
                } else {
                    topic.partitions
                };
                self.check_partition_count(count)?;
                let rf = if topic.replication_factor == -1 {
                    self.settings.default_replication_factor
                } else {
                    topic.replication_factor
                };
                place(batch.image(), count, rf, start_of(id))?
            }
        };
        let created = CreatedTopic {
            id: if validate_only { Uuid::nil() } else { id },
            partitions: i32::try_from(partitions.len()).unwrap_or(i32::MAX),
            replication_factor: i16::try_from(partitions[0].replicas.len()).unwrap_or(i16::MAX),
            assignments: partitions.iter().map(|p| p.replicas.clone()).collect(),
        };
        if !validate_only {
            batch.push(MetadataRecord::TopicCreated {
                name: topic.name.clone(),
                id,
                configs: topic.configs.clone(),
                partitions,
            });
        }
        Ok(created)
    }

    fn create_partitions(
        &self,
        batch: &mut Batch,
        name: &str,
        total: i32,
        assignments: Option<&[Vec<BrokerId>]>,
    ) -> Result<Vec<Vec<BrokerId>>, ControllerError> {
        let topic = batch
            .image()
            .topic(name)
            .ok_or_else(|| unknown_topic(name))?;
        let current = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        if total <= current {
            return Err(ControllerError::new(
                ResponseError::InvalidPartitions,
                format!("topic {name} has {current} partitions; the count can only grow, not become {total}"),
            ));
        }
        self.check_partition_count(total)?;
        let rf = topic.partitions[0].replicas.len();
        let added = match assignments {
            Some(a) if a.len() != usize::try_from(total - current).unwrap_or(0) => {
                return Err(ControllerError::new(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "{} assignments given for {} new partitions",
                        a.len(),
                        total - current
                    ),
                ));
            }
            Some(a) => self.check_assignments(batch.image(), a, Some(rf))?,
            None => place(
                batch.image(),
                total - current,
                i16::try_from(rf).unwrap_or(i16::MAX),
                // Continue the topic's round robin where its partitions end.
                start_of(topic.id).wrapping_add(topic.partitions.len()),
            )?,
        };
        let replicas = added.iter().map(|p| p.replicas.clone()).collect();
        batch.push(MetadataRecord::PartitionsAdded {
            topic: name.to_string(),
            partitions: added,
        });
        Ok(replicas)
    }

    fn check_partition_count(&self, count: i32) -> Result<(), ControllerError> {
        let max = self.settings.max_partitions_per_topic;
        if count < 1 || count > max {
            return Err(ControllerError::new(
                ResponseError::InvalidPartitions,
                format!("number of partitions must be between 1 and {max}, got {count}"),
            ));
        }
        Ok(())
    }

    /// Explicit replicas: registered brokers, no repeats within a partition, one replication
    /// factor for all (`rf` when the topic has one already), at least one broker able to lead.
    fn check_assignments(
        &self,
        image: &ClusterImage,
        assignments: &[Vec<BrokerId>],
        rf: Option<usize>,
    ) -> Result<Vec<NewPartition>, ControllerError> {
        let invalid = |message: String| {
            ControllerError::new(ResponseError::InvalidReplicaAssignment, message)
        };
        if assignments.is_empty() {
            return Err(invalid("the assignment has no partitions".into()));
        }
        self.check_partition_count(i32::try_from(assignments.len()).unwrap_or(i32::MAX))?;
        let rf = rf.unwrap_or(assignments[0].len());
        assignments
            .iter()
            .enumerate()
            .map(|(i, replicas)| {
                if replicas.is_empty() || replicas.len() != rf {
                    return Err(invalid(format!(
                        "partition {i} has {} replicas, expected {rf}",
                        replicas.len()
                    )));
                }
                for (j, id) in replicas.iter().enumerate() {
                    if replicas[..j].contains(id) {
                        return Err(invalid(format!("partition {i} lists broker {id} twice")));
                    }
                    if !image.brokers.contains_key(id) {
                        return Err(invalid(format!(
                            "partition {i} names unregistered broker {id}"
                        )));
                    }
                }
                new_partition(image, replicas.clone()).ok_or_else(|| {
                    invalid(format!(
                        "every broker of partition {i} is fenced or shutting down"
                    ))
                })
            })
            .collect()
    }
}

/// Applies `f` to each item of a per-topic request, in order. A topic named more than once
/// is refused every time, as Kafka does, since which of its items should win is unclear.
fn per_topic<T, R>(
    items: &[T],
    name: impl Fn(&T) -> &String,
    mut f: impl FnMut(&T) -> Result<R, ControllerError>,
) -> Vec<(String, Result<R, ControllerError>)> {
    let mut seen = HashSet::new();
    let repeated: HashSet<&String> = items
        .iter()
        .map(&name)
        .filter(|n| !seen.insert(*n))
        .collect();
    items
        .iter()
        .map(|item| {
            let topic = name(item);
            let result = if repeated.contains(topic) {
                Err(ControllerError::new(
                    ResponseError::InvalidRequest,
                    format!("topic {topic} appears more than once in the request"),
                ))
            } else {
                f(item)
            };
            (topic.clone(), result)
        })
        .collect()
}

fn unknown_topic(name: &str) -> ControllerError {
    ControllerError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("topic {name} does not exist"),
    )
}

fn check_config_count(count: usize) -> Result<(), ControllerError> {
    if count > MAX_TOPIC_CONFIGS {
        return Err(ControllerError::new(
            ResponseError::InvalidConfig,
            format!("{count} configs exceed the limit of {MAX_TOPIC_CONFIGS}"),
        ));
    }
    Ok(())
}

fn validate_topic_name(name: &str) -> Result<(), ControllerError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME_LEN
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ControllerError::new(
            ResponseError::InvalidTopicException,
            format!(
                "topic name {name:?} must be 1 to {MAX_TOPIC_NAME_LEN} of [a-zA-Z0-9._-], not '.' or '..'"
            ),
        ))
    }
}

fn new_topic_id(image: &ClusterImage) -> Uuid {
    // A v4 collision is as good as impossible, but an id must never name two topics.
    loop {
        let id = Uuid::new_v4();
        if image.topic_by_id(&id).is_none() {
            return id;
        }
    }
}

/// Where a topic's placement starts: from its random id, so topics rotate over the brokers.
fn start_of(id: Uuid) -> usize {
    id.as_u64_pair().0 as usize
}

/// Placement over the brokers that may take replicas now, each partition led by its first.
fn place(
    image: &ClusterImage,
    partitions: i32,
    replication_factor: i16,
    start: usize,
) -> Result<Vec<NewPartition>, ControllerError> {
    let brokers: Vec<(BrokerId, Option<String>)> = image
        .brokers
        .values()
        .filter(|b| b.is_eligible())
        .map(|b| (b.id, b.rack.clone()))
        .collect();
    let assignments = assign_replicas(&brokers, partitions, replication_factor, start)?;
    Ok(assignments
        .into_iter()
        .map(|replicas| new_partition(image, replicas).expect("placed on eligible brokers"))
        .collect())
}

/// ISR: the replicas that are eligible now; leader: the first of them. None if there is none.
fn new_partition(image: &ClusterImage, replicas: Vec<BrokerId>) -> Option<NewPartition> {
    let isr: Vec<BrokerId> = replicas
        .iter()
        .copied()
        .filter(|&id| image.is_eligible(id))
        .collect();
    Some(NewPartition {
        leader: *isr.first()?,
        isr,
        replicas,
    })
}

fn alter_configs(
    batch: &mut Batch,
    name: &str,
    configs: &BTreeMap<String, String>,
) -> Result<(), ControllerError> {
    let topic = batch
        .image()
        .topic(name)
        .ok_or_else(|| unknown_topic(name))?;
    check_config_count(configs.len())?;
    if topic.configs != *configs {
        batch.push(MetadataRecord::ConfigsAltered {
            topic: name.to_string(),
            configs: configs.clone(),
        });
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn alter_partition(
    batch: &mut Batch,
    broker_id: BrokerId,
    broker_epoch: i64,
    topic: &str,
    partition: i32,
    leader_epoch: i32,
    partition_epoch: i32,
    new_isr: Vec<BrokerId>,
) -> Result<PartitionState, ControllerError> {
    let image = batch.image();
    if image
        .brokers
        .get(&broker_id)
        .is_none_or(|b| b.epoch != broker_epoch)
    {
        return Err(ControllerError::new(
            ResponseError::StaleBrokerEpoch,
            format!("broker {broker_id} has no registration with epoch {broker_epoch}"),
        ));
    }
    let p = image.partition(topic, partition).ok_or_else(|| {
        ControllerError::new(
            ResponseError::UnknownTopicOrPartition,
            format!("partition {topic}-{partition} does not exist"),
        )
    })?;
    if p.leader != broker_id {
        return Err(ControllerError::new(
            ResponseError::NotLeaderOrFollower,
            format!(
                "broker {broker_id} does not lead {topic}-{partition} (leader {})",
                p.leader
            ),
        ));
    }
    if leader_epoch != p.leader_epoch {
        return Err(ControllerError::new(
            ResponseError::FencedLeaderEpoch,
            format!(
                "leader epoch {leader_epoch} of {topic}-{partition} is not the current {}",
                p.leader_epoch
            ),
        ));
    }
    if partition_epoch != p.partition_epoch {
        return Err(ControllerError::new(
            ResponseError::InvalidUpdateVersion,
            format!(
                "partition epoch {partition_epoch} of {topic}-{partition} is not the current {}",
                p.partition_epoch
            ),
        ));
    }
    for (i, id) in new_isr.iter().enumerate() {
        if new_isr[..i].contains(id) || !p.replicas.contains(id) {
            return Err(ControllerError::new(
                ResponseError::InvalidRequest,
                format!(
                    "ISR {new_isr:?} repeats or is not a subset of replicas {:?}",
                    p.replicas
                ),
            ));
        }
    }
    if !new_isr.contains(&broker_id) {
        return Err(ControllerError::new(
            ResponseError::InvalidRequest,
            format!("ISR {new_isr:?} leaves out its leader {broker_id}"),
        ));
    }
    if let Some(id) = new_isr
        .iter()
        .find(|&id| !p.isr.contains(id) && !image.is_eligible(*id))
    {
        return Err(ControllerError::new(
            ResponseError::IneligibleReplica,
            format!("broker {id} is fenced or shutting down and cannot join the ISR"),
        ));
    }
    if new_isr != p.isr {
        batch.push(MetadataRecord::PartitionChanged {
            topic: topic.to_string(),
            partition,
            leader: None,
            isr: Some(new_isr),
        });
    }
    Ok(batch
        .image()
        .partition(topic, partition)
        .expect("partition checked above")
        .clone())
}

/// Fences broker `id` at `epoch` and takes it out of every ISR and leadership.
fn fence(batch: &mut Batch, id: BrokerId, epoch: i64) {
    batch.push(MetadataRecord::FenceBroker { id, epoch });
    evict(batch, id);
}

/// For a broker that may no longer lead or join ISRs: drop it from every ISR it is in,
/// except as the last member (so that it, the one replica known complete, can come back as a
/// clean leader), and hand its leaderships to the next eligible ISR member, or to nobody.
fn evict(batch: &mut Batch, id: BrokerId) {
    let changes = partition_changes(batch.image(), usize::MAX, |image, p| {
        if !p.isr.contains(&id) {
            return None;
        }
        let isr: Vec<BrokerId> = if p.isr.len() > 1 {
            p.isr.iter().copied().filter(|&r| r != id).collect()
        } else {
            p.isr.clone()
        };
        settle(image, p, &isr, false)
    });
    batch.extend(changes);
}

/// The leader and ISR partition `p` should have given ISR `isr`: the current leader if it is
/// in it and eligible, else the first eligible member in replica order, else (unclean) the
/// first eligible replica alone, else nobody. None when that changes nothing.
fn settle(
    image: &ClusterImage,
    p: &PartitionState,
    isr: &[BrokerId],
    unclean: bool,
) -> Option<(BrokerId, Vec<BrokerId>)> {
    let keeps = p.leader != NO_LEADER && isr.contains(&p.leader) && image.is_eligible(p.leader);
    let (leader, isr) = if keeps {
        (p.leader, isr.to_vec())
    } else if let Some(&l) = p
        .replicas
        .iter()
        .find(|&&r| isr.contains(&r) && image.is_eligible(r))
    {
        (l, isr.to_vec())
    } else if let Some(&l) = p
        .replicas
        .iter()
        .find(|&&r| unclean && image.is_eligible(r))
    {
        tracing::warn!(leader = l, ?isr, "unclean leader election");
        (l, vec![l])
    } else {
        (NO_LEADER, isr.to_vec())
    };
    (leader != p.leader || isr != p.isr).then_some((leader, isr))
}

/// PartitionChanged records (at most `limit`) for every partition where `decide` returns the
/// leader and ISR it should have.
/// Brokers leading too few of the partitions they are the preferred replica of: more than
/// `percentage` percent of those are led by others (Kafka's per-broker imbalance ratio).
fn imbalanced_brokers(image: &ClusterImage, percentage: u32) -> BTreeSet<BrokerId> {
    // Per preferred replica: partitions it is preferred for, and those led elsewhere.
    let mut counts: BTreeMap<BrokerId, (u64, u64)> = BTreeMap::new();
    for topic in image.topics.values() {
        for p in &topic.partitions {
            let Some(&preferred) = p.replicas.first() else {
                continue;
            };
            let (all, elsewhere) = counts.entry(preferred).or_default();
            *all += 1;
            *elsewhere += u64::from(p.leader != preferred);
        }
    }
    counts
        .into_iter()
        .filter(|(_, (all, elsewhere))| elsewhere * 100 > all * u64::from(percentage))
        .map(|(id, _)| id)
        .collect()
}

fn partition_changes(
    image: &ClusterImage,
    limit: usize,
    mut decide: impl FnMut(&ClusterImage, &PartitionState) -> Option<(BrokerId, Vec<BrokerId>)>,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for topic in image.topics.values() {
        for (index, p) in topic.partitions.iter().enumerate() {
            if records.len() >= limit {
                return records;
            }
            if let Some((leader, isr)) = decide(image, p) {
                records.push(MetadataRecord::PartitionChanged {
                    topic: topic.name.clone(),
                    partition: i32::try_from(index).expect("partition count is bounded"),
                    leader: (leader != p.leader).then_some(leader),
                    isr: (isr != p.isr).then_some(isr),
                });
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::sim::Sim;
    use super::*;

    fn code(error: ResponseError) -> i16 {
        error.code()
    }

    fn err_code<T: std::fmt::Debug>(result: Result<T, ControllerError>) -> i16 {
        result.unwrap_err().code
    }

    /// Three live brokers on racks r0..r2 and topic "t" with 3 partitions of 3 replicas.
    fn cluster(settings: ControllerSettings) -> (Sim, BTreeMap<BrokerId, i64>) {
        let mut sim = Sim::new(settings);
        let epochs = sim.live_brokers(&[1, 2, 3], 3);
        sim.create("t", 3, 3).unwrap();
        (sim, epochs)
    }

    fn alter(
        sim: &mut Sim,
        broker_id: BrokerId,
        broker_epoch: i64,
        partition: i32,
        new_isr: Vec<BrokerId>,
    ) -> Result<PartitionState, ControllerError> {
        let p = sim.image().partition("t", partition).unwrap().clone();
        alter_at(sim, broker_id, broker_epoch, partition, &p, new_isr)
    }

    fn alter_at(
        sim: &mut Sim,
        broker_id: BrokerId,
        broker_epoch: i64,
        partition: i32,
        at: &PartitionState,
        new_isr: Vec<BrokerId>,
    ) -> Result<PartitionState, ControllerError> {
        let response = sim.request(ControllerRequest::AlterPartition {
            broker_id,
            broker_epoch,
            topic: "t".into(),
            partition,
            leader_epoch: at.leader_epoch,
            partition_epoch: at.partition_epoch,
            new_isr,
        });
        let ControllerResponse::AlterPartition(result) = response else {
            panic!("unexpected {response:?}");
        };
        result
    }

    /// Keeps every broker but `except` in session while time passes, then ticks.
    fn expire(sim: &mut Sim, epochs: &BTreeMap<BrokerId, i64>, except: BrokerId) {
        let timeout = sim.controller.settings().session_timeout_ms;
        sim.now += timeout / 2;
        for (&id, &epoch) in epochs.iter().filter(|(&id, _)| id != except) {
            sim.heartbeat(id, epoch, false).unwrap();
        }
        sim.now += timeout / 2;
        sim.tick();
    }

    #[test]
    fn registration_epochs_and_heartbeats() {
        let mut sim = Sim::new(ControllerSettings::default());
        sim.index_step = 5;
        let incarnation = Uuid::new_v4();
        let epoch = sim.register_as(1, incarnation, None).unwrap();
        assert_eq!(epoch, 5, "the epoch is the raft index of the record");
        assert!(sim.image().brokers[&1].fenced);
        // A retried registration of the same incarnation changes nothing.
        let (response, records) = sim.request_records(ControllerRequest::RegisterBroker {
            id: 1,
            incarnation,
            kafka: super::super::image::tests::endpoint(1),
            replication: super::super::image::tests::endpoint(2),
            rack: None,
        });
        assert_eq!(response, ControllerResponse::RegisterBroker(Ok(epoch)));
        assert!(records.is_empty());
        let stale = code(ResponseError::StaleBrokerEpoch);
        assert_eq!(err_code(sim.heartbeat(1, epoch + 1, false)), stale);
        assert_eq!(err_code(sim.heartbeat(9, epoch, false)), stale);
        let reply = sim.heartbeat(1, epoch, false).unwrap();
        assert_eq!(
            reply,
            HeartbeatReply {
                fenced: false,
                should_shut_down: false
            }
        );
        assert!(!sim.image().brokers[&1].fenced);
        // Another process claiming the id while this one is alive is refused.
        assert_eq!(
            err_code(sim.register_as(1, Uuid::new_v4(), None)),
            code(ResponseError::DuplicateBrokerRegistration)
        );
        // Once its session expired it is fenced and a new incarnation may take over.
        sim.now += sim.controller.settings().session_timeout_ms;
        sim.tick();
        assert!(sim.image().brokers[&1].fenced);
        let new_epoch = sim.register_as(1, Uuid::new_v4(), None).unwrap();
        assert!(new_epoch > epoch);
        assert_eq!(err_code(sim.heartbeat(1, epoch, false)), stale);
        assert!(!sim.heartbeat(1, new_epoch, false).unwrap().fenced);
    }

    #[test]
    fn malformed_registrations_are_refused() {
        let mut sim = Sim::new(ControllerSettings::default());
        let invalid = code(ResponseError::InvalidRegistration);
        assert_eq!(err_code(sim.register_as(-1, Uuid::new_v4(), None)), invalid);
        assert_eq!(
            err_code(sim.register_as(1, Uuid::new_v4(), Some(""))),
            invalid
        );
        let response = sim.request(ControllerRequest::RegisterBroker {
            id: 1,
            incarnation: Uuid::new_v4(),
            kafka: Endpoint {
                host: String::new(),
                port: 9092,
            },
            replication: super::super::image::tests::endpoint(9093),
            rack: None,
        });
        assert!(
            matches!(response, ControllerResponse::RegisterBroker(Err(e)) if e.code == invalid)
        );
        assert!(sim.image().brokers.is_empty());
    }

    #[test]
    fn a_new_controller_grants_a_fresh_session() {
        let (mut sim, _) = cluster(ControllerSettings::default());
        let timeout = sim.controller.settings().session_timeout_ms;
        sim.now += 10 * timeout;
        let mut successor = Controller::new(ControllerSettings::default());
        successor.activate(&sim.image(), sim.now);
        assert!(successor
            .tick(&sim.image(), sim.now + timeout - 1)
            .is_empty());
        let fenced = successor.tick(&sim.image(), sim.now + timeout);
        assert_eq!(
            fenced
                .iter()
                .filter(|r| matches!(r, MetadataRecord::FenceBroker { .. }))
                .count(),
            3
        );
    }

    #[test]
    fn created_topics_are_placed_on_live_brokers() {
        let (sim, _) = cluster(ControllerSettings::default());
        let image = sim.image();
        let t = image.topic("t").unwrap();
        assert!(!t.id.is_nil());
        let leaders: Vec<BrokerId> = t.partitions.iter().map(|p| p.leader).collect();
        let mut sorted = leaders.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [1, 2, 3], "leaders spread over brokers");
        for p in &t.partitions {
            assert_eq!(p.leader, p.replicas[0]);
            assert_eq!(p.isr, p.replicas);
            assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
        }
    }

    #[test]
    fn topic_creation_errors() {
        let settings = ControllerSettings {
            max_partitions_per_topic: 100,
            ..ControllerSettings::default()
        };
        let (mut sim, _) = cluster(settings);
        sim.register_as(4, Uuid::new_v4(), None).unwrap(); // registered, still fenced
        assert_eq!(
            err_code(sim.create("t", 1, 1)),
            code(ResponseError::TopicAlreadyExists)
        );
        let invalid_partitions = code(ResponseError::InvalidPartitions);
        assert_eq!(err_code(sim.create("u", 0, 1)), invalid_partitions);
        assert_eq!(err_code(sim.create("u", -5, 1)), invalid_partitions);
        assert_eq!(err_code(sim.create("u", 101, 1)), invalid_partitions);
        let invalid_rf = code(ResponseError::InvalidReplicationFactor);
        assert_eq!(err_code(sim.create("u", 1, 0)), invalid_rf);
        assert_eq!(
            err_code(sim.create("u", 1, 4)),
            invalid_rf,
            "broker 4 is fenced"
        );
        let invalid_name = code(ResponseError::InvalidTopicException);
        for name in ["", ".", "..", "a/b", "ü", &"x".repeat(250)] {
            assert_eq!(err_code(sim.create(name, 1, 1)), invalid_name, "{name:?}");
        }
        let with_assignments = |assignments: Vec<Vec<BrokerId>>| NewTopic {
            name: "u".into(),
            partitions: -1,
            replication_factor: -1,
            assignments: Some(assignments),
            configs: BTreeMap::new(),
        };
        let invalid_assignment = code(ResponseError::InvalidReplicaAssignment);
        let cases = [
            (with_assignments(vec![vec![1, 9]]), invalid_assignment),
            (with_assignments(vec![vec![1, 1]]), invalid_assignment),
            (
                with_assignments(vec![vec![1, 2], vec![3]]),
                invalid_assignment,
            ),
            (with_assignments(vec![vec![]]), invalid_assignment),
            (with_assignments(vec![]), invalid_assignment),
            (with_assignments(vec![vec![4]]), invalid_assignment),
            (
                NewTopic {
                    partitions: 2,
                    ..with_assignments(vec![vec![1]])
                },
                code(ResponseError::InvalidRequest),
            ),
        ];
        for (topic, expected) in cases {
            let response = sim.request(ControllerRequest::CreateTopics {
                topics: vec![topic.clone()],
                validate_only: false,
            });
            let ControllerResponse::CreateTopics(results) = response else {
                panic!("unexpected {response:?}");
            };
            assert_eq!(err_code(results[0].1.clone()), expected, "{topic:?}");
        }
        assert!(sim.image().topic("u").is_none());
    }

    #[test]
    fn explicit_assignments_validate_only_and_duplicates() {
        let (mut sim, _) = cluster(ControllerSettings::default());
        sim.register_as(4, Uuid::new_v4(), None).unwrap(); // fenced
        let topic = |name: &str, assignments| NewTopic {
            name: name.into(),
            partitions: -1,
            replication_factor: -1,
            assignments,
            configs: BTreeMap::from([("retention.ms".into(), "1000".into())]),
        };
        let (response, records) = sim.request_records(ControllerRequest::CreateTopics {
            topics: vec![topic("v", Some(vec![vec![4, 2, 1]]))],
            validate_only: true,
        });
        assert!(records.is_empty());
        let ControllerResponse::CreateTopics(results) = response else {
            panic!("unexpected {response:?}");
        };
        let created = results[0].1.clone().unwrap();
        assert!(created.id.is_nil());
        assert_eq!((created.partitions, created.replication_factor), (1, 3));
        assert!(sim.image().topic("v").is_none());

        let response = sim.request(ControllerRequest::CreateTopics {
            topics: vec![
                topic("v", Some(vec![vec![4, 2, 1]])),
                topic("w", None),
                topic("w", None),
            ],
            validate_only: false,
        });
        let ControllerResponse::CreateTopics(results) = response else {
            panic!("unexpected {response:?}");
        };
        assert!(results[0].1.is_ok());
        assert_eq!(
            err_code(results[1].1.clone()),
            code(ResponseError::InvalidRequest)
        );
        assert_eq!(
            err_code(results[2].1.clone()),
            code(ResponseError::InvalidRequest)
        );
        let image = sim.image();
        let v = image.topic("v").unwrap();
        assert_eq!(v.configs["retention.ms"], "1000");
        // The fenced broker is a replica but neither leader nor in the ISR.
        assert_eq!(v.partitions[0].leader, 2);
        assert_eq!(v.partitions[0].isr, [2, 1]);
        assert!(image.topic("w").is_none());
    }

    #[test]
    fn fencing_moves_leadership_and_keeps_the_last_isr_member() {
        let (mut sim, epochs) = cluster(ControllerSettings::default());
        // Partition 0 shrinks to its leader alone.
        let leader = sim.image().partition("t", 0).unwrap().leader;
        alter(&mut sim, leader, epochs[&leader], 0, vec![leader]).unwrap();
        expire(&mut sim, &epochs, leader);
        let image = sim.image();
        assert!(image.brokers[&leader].fenced);
        for (i, p) in image.topic("t").unwrap().partitions.iter().enumerate() {
            if i == 0 {
                assert_eq!((p.leader, &p.isr[..]), (NO_LEADER, &[leader][..]));
                assert_eq!(p.leader_epoch, 1);
            } else {
                assert!(!p.isr.contains(&leader));
                assert_ne!(p.leader, leader);
                assert_ne!(p.leader, NO_LEADER);
            }
        }
        // Back in session, it leads what nobody else could.
        sim.heartbeat(leader, epochs[&leader], false).unwrap();
        let p = sim.image().partition("t", 0).unwrap().clone();
        assert_eq!((p.leader, p.leader_epoch), (leader, 2));
    }

    #[test]
    fn unclean_election_only_when_enabled() {
        for unclean in [false, true] {
            let (mut sim, epochs) = cluster(ControllerSettings {
                unclean_leader_election: unclean,
                ..ControllerSettings::default()
            });
            let p = sim.image().partition("t", 0).unwrap().clone();
            alter(&mut sim, p.leader, epochs[&p.leader], 0, vec![p.leader]).unwrap();
            expire(&mut sim, &epochs, p.leader);
            let after = sim.image().partition("t", 0).unwrap().clone();
            if unclean {
                let next = p.replicas[1];
                assert_eq!((after.leader, &after.isr[..]), (next, &[next][..]));
            } else {
                assert_eq!(after.leader, NO_LEADER);
            }
        }
    }

    #[test]
    fn controlled_shutdown_hands_over_leadership() {
        let (mut sim, epochs) = cluster(ControllerSettings::default());
        let partitions = sim.image().topic("t").unwrap().partitions.clone();
        let reply = sim.heartbeat(1, epochs[&1], true).unwrap();
        assert_eq!(
            reply,
            HeartbeatReply {
                fenced: false,
                should_shut_down: true
            }
        );
        let image = sim.image();
        assert!(image.brokers[&1].shutting_down);
        for (old, p) in partitions.iter().zip(&image.topic("t").unwrap().partitions) {
            assert!(!p.isr.contains(&1));
            assert_ne!(p.leader, 1);
            assert_eq!(p.leader == old.leader, old.leader != 1);
        }
        // It may not come back into an ISR, and a heartbeat does not undo the shutdown.
        let leader = image.partition("t", 0).unwrap().leader;
        assert_eq!(
            err_code(alter(&mut sim, leader, epochs[&leader], 0, vec![1, 2, 3])),
            code(ResponseError::IneligibleReplica)
        );
        assert!(
            sim.heartbeat(1, epochs[&1], false)
                .unwrap()
                .should_shut_down
        );
        assert!(sim.image().brokers[&1].shutting_down);
        // Nor is it elected, even when it is the last ISR member.
        let p = sim.image().partition("t", 1).unwrap().clone();
        assert_eq!(
            err_code(alter(&mut sim, p.leader, epochs[&p.leader], 1, vec![1])),
            code(ResponseError::InvalidRequest)
        );
    }

    #[test]
    fn shutting_down_sole_isr_member_leaves_its_partition_leaderless() {
        let (mut sim, epochs) = cluster(ControllerSettings::default());
        let p = sim.image().partition("t", 0).unwrap().clone();
        alter(&mut sim, p.leader, epochs[&p.leader], 0, vec![p.leader]).unwrap();
        let reply = sim.heartbeat(p.leader, epochs[&p.leader], true).unwrap();
        assert!(reply.should_shut_down);
        let after = sim.image().partition("t", 0).unwrap().clone();
        assert_eq!((after.leader, &after.isr[..]), (NO_LEADER, &[p.leader][..]));
    }

    #[test]
    fn alter_partition_checks_and_errors() {
        let (mut sim, epochs) = cluster(ControllerSettings::default());
        let p = sim.image().partition("t", 0).unwrap().clone();
        let (leader, epoch) = (p.leader, epochs[&p.leader]);
        let follower = p.replicas[1];
        assert_eq!(
            err_code(alter(&mut sim, leader, epoch + 1, 0, vec![leader])),
            code(ResponseError::StaleBrokerEpoch)
        );
        assert_eq!(
            err_code(alter_at(&mut sim, leader, epoch, 7, &p, vec![leader])),
            code(ResponseError::UnknownTopicOrPartition)
        );
        assert_eq!(
            err_code(alter(
                &mut sim,
                follower,
                epochs[&follower],
                0,
                vec![follower]
            )),
            code(ResponseError::NotLeaderOrFollower)
        );
        let old_leader_epoch = PartitionState {
            leader_epoch: p.leader_epoch - 1,
            ..p.clone()
        };
        assert_eq!(
            err_code(alter_at(
                &mut sim,
                leader,
                epoch,
                0,
                &old_leader_epoch,
                vec![leader]
            )),
            code(ResponseError::FencedLeaderEpoch)
        );
        let old_partition_epoch = PartitionState {
            partition_epoch: p.partition_epoch + 1,
            ..p.clone()
        };
        assert_eq!(
            err_code(alter_at(
                &mut sim,
                leader,
                epoch,
                0,
                &old_partition_epoch,
                vec![leader]
            )),
            code(ResponseError::InvalidUpdateVersion)
        );
        let invalid = code(ResponseError::InvalidRequest);
        assert_eq!(
            err_code(alter(&mut sim, leader, epoch, 0, vec![follower])),
            invalid
        );
        assert_eq!(
            err_code(alter(&mut sim, leader, epoch, 0, vec![leader, 9])),
            invalid
        );
        assert_eq!(
            err_code(alter(&mut sim, leader, epoch, 0, vec![leader, leader])),
            invalid
        );
        assert_eq!(
            sim.image().partition("t", 0).unwrap(),
            &p,
            "refusals change nothing"
        );

        let shrunk = alter(&mut sim, leader, epoch, 0, vec![leader]).unwrap();
        assert_eq!(shrunk.isr, [leader]);
        assert_eq!(
            (shrunk.leader_epoch, shrunk.partition_epoch),
            (p.leader_epoch, p.partition_epoch + 1)
        );
        assert_eq!(sim.image().partition("t", 0).unwrap(), &shrunk);
        // Repeating the request with the old partition epoch is refused.
        assert_eq!(
            err_code(alter_at(&mut sim, leader, epoch, 0, &p, vec![leader])),
            code(ResponseError::InvalidUpdateVersion)
        );
        // A fenced follower may not rejoin.
        expire(&mut sim, &epochs, follower);
        assert_eq!(
            err_code(alter(&mut sim, leader, epoch, 0, vec![leader, follower])),
            code(ResponseError::IneligibleReplica)
        );
        let grown = alter(
            &mut sim,
            leader,
            epoch,
            0,
            p.replicas
                .iter()
                .copied()
                .filter(|&r| r != follower)
                .collect(),
        )
        .unwrap();
        assert_eq!(grown.isr.len(), 2);
    }

    #[test]
    fn create_partitions_grows_topics_only() {
        let (mut sim, _) = cluster(ControllerSettings::default());
        let mut grow = |topics: Vec<(String, i32, Option<Assignment>)>, validate_only| {
            let response = sim.request(ControllerRequest::CreatePartitions {
                topics,
                validate_only,
            });
            let ControllerResponse::CreatePartitions(results) = response else {
                panic!("unexpected {response:?}");
            };
            results.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
        };
        let invalid_partitions = code(ResponseError::InvalidPartitions);
        let invalid_assignment = code(ResponseError::InvalidReplicaAssignment);
        let cases = [
            (("t".to_string(), 3, None), invalid_partitions),
            (("t".to_string(), 2, None), invalid_partitions),
            (("t".to_string(), 10_001, None), invalid_partitions),
            (
                ("nope".to_string(), 5, None),
                code(ResponseError::UnknownTopicOrPartition),
            ),
            (
                ("t".to_string(), 5, Some(vec![vec![1, 2, 3]])),
                invalid_assignment,
            ),
            (
                ("t".to_string(), 4, Some(vec![vec![1, 2]])),
                invalid_assignment,
            ),
            (
                ("t".to_string(), 4, Some(vec![vec![1, 2, 7]])),
                invalid_assignment,
            ),
        ];
        for (request, expected) in cases {
            let results = grow(vec![request.clone()], false);
            assert_eq!(err_code(results[0].clone()), expected, "{request:?}");
        }
        assert!(grow(vec![("t".into(), 5, None)], true)[0].is_ok());
        let results = grow(vec![("t".into(), 4, Some(vec![vec![3, 1, 2]]))], false);
        assert_eq!(results[0], Ok(vec![vec![3, 1, 2]]));
        let added = grow(vec![("t".into(), 6, None)], false).remove(0).unwrap();
        assert_eq!(added.len(), 2);
        let image = sim.image();
        let t = image.topic("t").unwrap();
        assert_eq!(t.partitions.len(), 6);
        assert!(t
            .partitions
            .iter()
            .all(|p| p.replicas.len() == 3 && p.leader == p.replicas[0]));
    }

    #[test]
    fn configs_and_deletion() {
        let (mut sim, _) = cluster(ControllerSettings::default());
        let configs = BTreeMap::from([("retention.ms".to_string(), "5".to_string())]);
        let response = sim.request(ControllerRequest::AlterConfigs {
            topics: vec![
                ("t".into(), configs.clone()),
                ("nope".into(), configs.clone()),
            ],
            validate_only: false,
        });
        let ControllerResponse::AlterConfigs(results) = response else {
            panic!("unexpected {response:?}");
        };
        assert_eq!(results[0].1, Ok(()));
        assert_eq!(
            err_code(results[1].1.clone()),
            code(ResponseError::UnknownTopicOrPartition)
        );
        assert_eq!(sim.image().topic("t").unwrap().configs, configs);
        let (_, records) = sim.request_records(ControllerRequest::AlterConfigs {
            topics: vec![("t".into(), BTreeMap::new())],
            validate_only: true,
        });
        assert!(records.is_empty());
        assert_eq!(sim.image().topic("t").unwrap().configs, configs);

        let id = sim.image().topic("t").unwrap().id;
        let mut delete = |names: &[&str]| {
            let names = names.iter().map(|n| n.to_string()).collect();
            let response = sim.request(ControllerRequest::DeleteTopics { names });
            let ControllerResponse::DeleteTopics(results) = response else {
                panic!("unexpected {response:?}");
            };
            results.into_iter().map(|(_, r)| r).collect::<Vec<_>>()
        };
        let invalid = code(ResponseError::InvalidRequest);
        let twice = delete(&["t", "t"]);
        assert!(twice.into_iter().all(|r| err_code(r) == invalid));
        assert_eq!(delete(&["t"]), [Ok(id)]);
        assert_eq!(
            err_code(delete(&["t"]).remove(0)),
            code(ResponseError::UnknownTopicOrPartition)
        );
        assert!(sim.image().topic("t").is_none());
    }

    #[test]
    fn only_brokers_over_the_imbalance_threshold_get_leaders_back() {
        let mut sim = Sim::new(ControllerSettings::default());
        sim.live_brokers(&[1, 2, 3], 3);
        sim.create("big", 30, 3).unwrap();
        let mut image = ClusterImage::clone(&sim.image());
        let preferred_by_1: Vec<usize> = (image.topic("big").unwrap().partitions.iter())
            .enumerate()
            .filter(|(_, p)| p.replicas[0] == 1)
            .map(|(i, _)| i)
            .collect();
        assert!(
            preferred_by_1.len() >= 5,
            "placement spreads preferred replicas"
        );
        let hand_over = |image: &mut ClusterImage, count: usize| {
            let topic = Arc::make_mut(image.topics.get_mut("big").unwrap());
            for &i in &preferred_by_1[..count] {
                topic.partitions[i].leader = topic.partitions[i].replicas[1];
            }
        };
        assert!(imbalanced_brokers(&image, 10).is_empty());
        // One of ten or so led elsewhere is within 10 %.
        hand_over(&mut image, 1);
        assert!(imbalanced_brokers(&image, 10).is_empty());
        assert_eq!(imbalanced_brokers(&image, 0), BTreeSet::from([1]));
        hand_over(&mut image, 3);
        assert_eq!(imbalanced_brokers(&image, 10), BTreeSet::from([1]));
        // The ratio never exceeds 100 %: rebalancing off in effect.
        hand_over(&mut image, preferred_by_1.len());
        assert!(imbalanced_brokers(&image, 100).is_empty());
    }

    #[test]
    fn preferred_leaders_come_back_when_rebalancing_is_due() {
        let interval = 60_000;
        let (mut sim, epochs) = cluster(ControllerSettings {
            leader_rebalance_interval_ms: interval,
            ..ControllerSettings::default()
        });
        let preferred_of_0 = sim.image().partition("t", 0).unwrap().replicas[0];
        expire(&mut sim, &epochs, preferred_of_0);
        sim.heartbeat(preferred_of_0, epochs[&preferred_of_0], false)
            .unwrap();
        // Back in session it is a follower; rejoining the ISR is the leader's call.
        let p = sim.image().partition("t", 0).unwrap().clone();
        assert_ne!(p.leader, preferred_of_0);
        let mut isr = p.isr.clone();
        isr.push(preferred_of_0);
        alter(&mut sim, p.leader, epochs[&p.leader], 0, isr).unwrap();
        assert!(sim.tick().is_empty(), "rebalancing not yet due");
        sim.now = interval;
        for (&id, &epoch) in &epochs {
            sim.heartbeat(id, epoch, false).unwrap();
        }
        sim.tick();
        let image = sim.image();
        assert!(image
            .topic("t")
            .unwrap()
            .partitions
            .iter()
            .all(|p| p.leader == p.replicas[0]));
    }
}
