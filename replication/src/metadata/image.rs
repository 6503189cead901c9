//! The cluster image: brokers and topics as of some applied raft index, and the state machine
//! that applies committed entries to it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::records::{self, BrokerId, Endpoint, MetadataRecord, NewPartition, NO_LEADER};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRegistration {
    pub id: BrokerId,
    pub incarnation: Uuid,
    /// The raft index of this incarnation's RegisterBroker record.
    pub epoch: i64,
    /// Client listener, as advertised.
    pub kafka: Endpoint,
    /// Inter-broker listener, as advertised.
    pub replication: Endpoint,
    pub rack: Option<String>,
    pub fenced: bool,
    pub shutting_down: bool,
}

impl BrokerRegistration {
    /// May lead partitions, join ISRs and receive new replicas.
    pub fn is_eligible(&self) -> bool {
        !self.fenced && !self.shutting_down
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionState {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    /// [`NO_LEADER`] when none.
    pub leader: BrokerId,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicImage {
    pub name: String,
    pub id: Uuid,
    pub configs: BTreeMap<String, String>,
    pub partitions: Vec<PartitionState>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterImage {
    /// The id every broker reports (Metadata, DescribeCluster); set once, by the first
    /// active controller.
    #[serde(default)]
    pub cluster_id: Option<String>,
    pub brokers: BTreeMap<BrokerId, BrokerRegistration>,
    /// Topics sit behind `Arc` so that a new image shares every topic an entry did not touch.
    pub topics: BTreeMap<String, Arc<TopicImage>>,
    /// Derived from `topics`; rebuilt on restore.
    #[serde(skip)]
    topic_ids: HashMap<Uuid, String>,
    pub applied_index: u64,
}

impl ClusterImage {
    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name).map(|t| &**t)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topic_ids.get(id).and_then(|name| self.topic(name))
    }

    pub fn partition(&self, topic: &str, partition: i32) -> Option<&PartitionState> {
        let index = usize::try_from(partition).ok()?;
        self.topic(topic)?.partitions.get(index)
    }

    /// Registered brokers that are not fenced.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// Registered, unfenced and not shutting down.
    pub fn is_eligible(&self, id: BrokerId) -> bool {
        self.brokers
            .get(&id)
            .is_some_and(BrokerRegistration::is_eligible)
    }

    /// Applies one record. Total and deterministic: a record that no longer fits the image
    /// (stale broker epoch, topic gone, malformed partition) changes nothing.
    pub(crate) fn apply(&mut self, index: u64, record: &MetadataRecord) {
        match record {
            MetadataRecord::ClusterIdSet { cluster_id } => {
                self.cluster_id.get_or_insert_with(|| cluster_id.clone());
            }
            MetadataRecord::RegisterBroker {
                id,
                incarnation,
                kafka,
                replication,
                rack,
            } => {
                let registration = BrokerRegistration {
                    id: *id,
                    incarnation: *incarnation,
                    epoch: i64::try_from(index).unwrap_or(i64::MAX),
                    kafka: kafka.clone(),
                    replication: replication.clone(),
                    rack: rack.clone(),
                    fenced: true,
                    shutting_down: false,
                };
                self.brokers.insert(*id, registration);
            }
            MetadataRecord::UnfenceBroker { id, epoch } => {
                if let Some(b) = self.broker_at(*id, *epoch) {
                    b.fenced = false;
                }
            }
            MetadataRecord::FenceBroker { id, epoch } => {
                if let Some(b) = self.broker_at(*id, *epoch) {
                    b.fenced = true;
                }
            }
            MetadataRecord::BrokerShuttingDown { id, epoch } => {
                if let Some(b) = self.broker_at(*id, *epoch) {
                    b.shutting_down = true;
                }
            }
            MetadataRecord::TopicCreated {
                name,
                id,
                configs,
                partitions,
            } => {
                if self.topics.contains_key(name) || self.topic_ids.contains_key(id) {
                    tracing::warn!(topic = %name, %id, "ignoring creation of an existing topic");
                    return;
                }
                let Some(partitions) = new_partitions(name, partitions) else {
                    return;
                };
                let topic = TopicImage {
                    name: name.clone(),
                    id: *id,
                    configs: configs.clone(),
                    partitions,
                };
                self.topic_ids.insert(*id, name.clone());
                self.topics.insert(name.clone(), Arc::new(topic));
            }
            MetadataRecord::PartitionsAdded { topic, partitions } => {
                let Some(t) = self.topics.get_mut(topic) else {
                    return;
                };
                if let Some(partitions) = new_partitions(topic, partitions) {
                    Arc::make_mut(t).partitions.extend(partitions);
                }
            }
            MetadataRecord::TopicDeleted { name } => {
                if let Some(t) = self.topics.remove(name) {
                    self.topic_ids.remove(&t.id);
                }
            }
            MetadataRecord::ConfigsAltered { topic, configs } => {
                if let Some(t) = self.topics.get_mut(topic) {
                    Arc::make_mut(t).configs = configs.clone();
                }
            }
            MetadataRecord::PartitionChanged {
                topic,
                partition,
                leader,
                isr,
            } => self.change_partition(topic, *partition, *leader, isr.as_deref()),
        }
    }

    fn broker_at(&mut self, id: BrokerId, epoch: i64) -> Option<&mut BrokerRegistration> {
        self.brokers.get_mut(&id).filter(|b| b.epoch == epoch)
    }

    fn change_partition(
        &mut self,
        topic: &str,
        partition: i32,
        leader: Option<BrokerId>,
        isr: Option<&[BrokerId]>,
    ) {
        let Some(t) = self.topics.get_mut(topic) else {
            return;
        };
        let Some(index) = usize::try_from(partition)
            .ok()
            .filter(|&i| i < t.partitions.len())
        else {
            return;
        };
        let current = &t.partitions[index];
        let new_leader = leader.unwrap_or(current.leader);
        let new_isr = isr.unwrap_or(&current.isr);
        if !well_formed(&current.replicas, new_isr, new_leader) {
            tracing::error!(
                topic,
                partition,
                ?leader,
                ?isr,
                "ignoring malformed partition change"
            );
            return;
        }
        let new_isr = new_isr.to_vec();
        let p = &mut Arc::make_mut(t).partitions[index];
        if new_leader != p.leader {
            p.leader = new_leader;
            p.leader_epoch += 1;
        }
        p.isr = new_isr;
        p.partition_epoch += 1;
    }

    fn rebuild_topic_ids(&mut self) -> anyhow::Result<()> {
        self.topic_ids.clear();
        for (name, topic) in &self.topics {
            anyhow::ensure!(
                topic.name == *name,
                "topic {} stored under {name}",
                topic.name
            );
            if let Some(other) = self.topic_ids.insert(topic.id, name.clone()) {
                anyhow::bail!("topics {other} and {name} share id {}", topic.id);
            }
        }
        Ok(())
    }
}

/// Replicas distinct and non-empty, ISR a non-empty duplicate-free subset of them, leader
/// in the ISR or none.
fn well_formed(replicas: &[BrokerId], isr: &[BrokerId], leader: BrokerId) -> bool {
    let distinct = |ids: &[BrokerId]| ids.iter().enumerate().all(|(i, id)| !ids[..i].contains(id));
    !replicas.is_empty()
        && distinct(replicas)
        && !isr.is_empty()
        && distinct(isr)
        && isr.iter().all(|id| replicas.contains(id))
        && (leader == NO_LEADER || isr.contains(&leader))
}

fn new_partitions(topic: &str, partitions: &[NewPartition]) -> Option<Vec<PartitionState>> {
    if let Some(bad) = partitions
        .iter()
        .position(|p| !well_formed(&p.replicas, &p.isr, p.leader))
    {
        tracing::error!(
            topic,
            partition = bad,
            "ignoring record with a malformed partition"
        );
        return None;
    }
    Some(
        partitions
            .iter()
            .map(|p| PartitionState {
                replicas: p.replicas.clone(),
                isr: p.isr.clone(),
                leader: p.leader,
                leader_epoch: 0,
                partition_epoch: 0,
            })
            .collect(),
    )
}

/// The replicated state machine every node runs over the committed metadata log.
#[derive(Debug, Default)]
pub struct MetadataState {
    image: Arc<ClusterImage>,
}

impl MetadataState {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current image. Copy-on-write: later entries build a new image, so a holder keeps a
    /// consistent view for as long as it likes.
    pub fn image(&self) -> Arc<ClusterImage> {
        self.image.clone()
    }

    /// Applies the committed entry at `index`. Entries at or below the applied index (already
    /// in a restored snapshot) are skipped. An empty entry is a quorum no-op. An entry that does
    /// not decode is logged and skipped on every node alike, so images stay identical.
    pub fn apply_entry(&mut self, index: u64, entry: &[u8]) {
        if index <= self.image.applied_index {
            return;
        }
        let records = if entry.is_empty() {
            Vec::new()
        } else {
            records::decode(entry).unwrap_or_else(|e| {
                tracing::error!(index, error = %e, "skipping undecodable metadata entry");
                Vec::new()
            })
        };
        let mut next = (*self.image).clone();
        for record in &records {
            next.apply(index, record);
        }
        next.applied_index = index;
        self.image = Arc::new(next);
    }

    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.image).expect("cluster image serializes to JSON")
    }

    /// Replaces the image with a snapshot's; on error the current image stays.
    pub fn restore(&mut self, snapshot: &[u8]) -> anyhow::Result<()> {
        let mut image: ClusterImage = serde_json::from_slice(snapshot)?;
        image.rebuild_topic_ids()?;
        self.image = Arc::new(image);
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn endpoint(port: u16) -> Endpoint {
        Endpoint {
            host: "127.0.0.1".into(),
            port,
        }
    }

    pub(crate) fn register(id: BrokerId, rack: Option<&str>) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            id,
            incarnation: Uuid::new_v4(),
            kafka: endpoint(9092),
            replication: endpoint(9093),
            rack: rack.map(String::from),
        }
    }

    fn partition(replicas: &[BrokerId], leader: BrokerId) -> NewPartition {
        NewPartition {
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader,
        }
    }

    fn sample() -> MetadataState {
        let mut state = MetadataState::new();
        state.apply_entry(
            1,
            &records::encode(&[register(1, Some("a")), register(2, None)]),
        );
        let id = Uuid::new_v4();
        state.apply_entry(
            2,
            &records::encode(&[
                MetadataRecord::UnfenceBroker { id: 1, epoch: 1 },
                MetadataRecord::TopicCreated {
                    name: "t".into(),
                    id,
                    configs: BTreeMap::from([("cleanup.policy".into(), "compact".into())]),
                    partitions: vec![partition(&[1, 2], 1), partition(&[2, 1], 2)],
                },
            ]),
        );
        state
    }

    #[test]
    fn apply_builds_the_image() {
        let state = sample();
        let image = state.image();
        assert_eq!(image.applied_index, 2);
        assert_eq!(image.brokers[&1].epoch, 1);
        assert!(!image.brokers[&1].fenced);
        assert!(image.brokers[&2].fenced);
        assert_eq!(image.live_brokers().map(|b| b.id).collect::<Vec<_>>(), [1]);
        let t = image.topic("t").unwrap();
        assert_eq!(image.topic_by_id(&t.id).unwrap().name, "t");
        assert_eq!(image.partition("t", 1).unwrap().leader, 2);
        assert!(image.partition("t", 2).is_none());
        assert!(image.partition("t", -1).is_none());
    }

    #[test]
    fn partition_changes_bump_epochs() {
        let mut state = sample();
        let change = |leader, isr: Option<Vec<BrokerId>>| MetadataRecord::PartitionChanged {
            topic: "t".into(),
            partition: 0,
            leader,
            isr,
        };
        state.apply_entry(3, &records::encode(&[change(None, Some(vec![1]))]));
        let p = state.image().partition("t", 0).unwrap().clone();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (1, 0, 1));
        assert_eq!(p.isr, [1]);
        // A leader outside the ISR does not fit: ignored, epochs untouched.
        state.apply_entry(4, &records::encode(&[change(Some(2), None)]));
        assert_eq!(state.image().partition("t", 0).unwrap(), &p);
        state.apply_entry(5, &records::encode(&[change(Some(2), Some(vec![2]))]));
        let p = state.image().partition("t", 0).unwrap().clone();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (2, 1, 2));
    }

    #[test]
    fn records_that_no_longer_fit_are_ignored() {
        let mut state = sample();
        let before = state.image();
        state.apply_entry(
            3,
            &records::encode(&[
                MetadataRecord::UnfenceBroker { id: 2, epoch: 99 },
                MetadataRecord::PartitionChanged {
                    topic: "gone".into(),
                    partition: 0,
                    leader: Some(1),
                    isr: None,
                },
                MetadataRecord::PartitionsAdded {
                    topic: "t".into(),
                    partitions: vec![partition(&[1, 1], 1)],
                },
                MetadataRecord::TopicCreated {
                    name: "t".into(),
                    id: Uuid::new_v4(),
                    configs: BTreeMap::new(),
                    partitions: vec![partition(&[1], 1)],
                },
            ]),
        );
        state.apply_entry(4, b"garbage");
        state.apply_entry(5, b"");
        let after = state.image();
        assert_eq!(after.applied_index, 5);
        assert_eq!(after.brokers, before.brokers);
        assert_eq!(after.topics, before.topics);
        // The old snapshot a reader holds is untouched by later entries.
        assert_eq!(before.applied_index, 2);
    }

    #[test]
    fn snapshot_restore_round_trip() {
        let mut state = sample();
        state.apply_entry(
            3,
            &records::encode(&[MetadataRecord::BrokerShuttingDown { id: 1, epoch: 1 }]),
        );
        let mut restored = MetadataState::new();
        restored.restore(&state.snapshot()).unwrap();
        assert_eq!(restored.image(), state.image());
        let id = state.image().topic("t").unwrap().id;
        assert_eq!(restored.image().topic_by_id(&id).unwrap().name, "t");
        // Entries already in the snapshot are not applied twice.
        restored.apply_entry(3, &records::encode(&[register(7, None)]));
        assert!(!restored.image().brokers.contains_key(&7));
        assert!(restored.restore(b"[1,2]").is_err());
        assert_eq!(restored.image(), state.image());
    }

    #[test]
    fn topic_deletion_forgets_the_id() {
        let mut state = sample();
        let id = state.image().topic("t").unwrap().id;
        state.apply_entry(
            3,
            &records::encode(&[MetadataRecord::TopicDeleted { name: "t".into() }]),
        );
        assert!(state.image().topic("t").is_none());
        assert!(state.image().topic_by_id(&id).is_none());
    }
}
