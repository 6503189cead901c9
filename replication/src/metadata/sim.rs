//! Test harness: a controller and a state machine wired the way the quorum wires them
//! (decide, commit the records as one entry, apply, answer), and a randomized run over it
//! that checks the image's invariants after every step.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use super::image::tests::endpoint;
use super::{
    encode, BrokerId, ClusterImage, Controller, ControllerError, ControllerRequest,
    ControllerResponse, ControllerSettings, CreatedTopic, HeartbeatReply, MetadataRecord,
    MetadataState, NewTopic, NO_LEADER,
};

pub(crate) struct Sim {
    pub state: MetadataState,
    pub controller: Controller,
    pub now: u64,
    /// Raft indexes also go to entries that are not ours (leader no-ops): leave gaps.
    pub index_step: u64,
    next_index: u64,
}

impl Sim {
    pub fn new(settings: ControllerSettings) -> Self {
        let mut controller = Controller::new(settings);
        controller.activate(&ClusterImage::default(), 0);
        Self {
            state: MetadataState::new(),
            controller,
            now: 0,
            index_step: 1,
            next_index: 0,
        }
    }

    pub fn image(&self) -> Arc<ClusterImage> {
        self.state.image()
    }

    /// Decides, commits, applies, answers; also returns the records committed.
    pub fn request_records(
        &mut self,
        request: ControllerRequest,
    ) -> (ControllerResponse, Vec<MetadataRecord>) {
        let image = self.image();
        let decision = self.controller.handle(&image, request, self.now);
        let records = decision.records.clone();
        self.commit(&records);
        (decision.finish(&self.image()), records)
    }

    pub fn request(&mut self, request: ControllerRequest) -> ControllerResponse {
        self.request_records(request).0
    }

    pub fn tick(&mut self) -> Vec<MetadataRecord> {
        let records = self.controller.tick(&self.image(), self.now);
        self.commit(&records);
        records
    }

    fn commit(&mut self, records: &[MetadataRecord]) {
        if !records.is_empty() {
            self.next_index += self.index_step;
            self.state.apply_entry(self.next_index, &encode(records));
        }
    }

    pub fn register_as(
        &mut self,
        id: BrokerId,
        incarnation: Uuid,
        rack: Option<&str>,
    ) -> Result<i64, ControllerError> {
        let response = self.request(ControllerRequest::RegisterBroker {
            id,
            incarnation,
            kafka: endpoint(9092),
            replication: endpoint(9093),
            rack: rack.map(String::from),
        });
        let ControllerResponse::RegisterBroker(result) = response else {
            panic!("unexpected {response:?}");
        };
        result
    }

    pub fn heartbeat(
        &mut self,
        id: BrokerId,
        epoch: i64,
        want_shutdown: bool,
    ) -> Result<HeartbeatReply, ControllerError> {
        let response = self.request(ControllerRequest::Heartbeat {
            id,
            epoch,
            want_shutdown,
        });
        let ControllerResponse::Heartbeat(result) = response else {
            panic!("unexpected {response:?}");
        };
        result
    }

    /// Registers and unfences brokers `ids` (rack "r{id % racks}" when racks > 0); their epochs.
    pub fn live_brokers(&mut self, ids: &[BrokerId], racks: i32) -> BTreeMap<BrokerId, i64> {
        ids.iter()
            .map(|&id| {
                let rack = (racks > 0).then(|| format!("r{}", id % racks));
                let epoch = self
                    .register_as(id, Uuid::new_v4(), rack.as_deref())
                    .unwrap();
                assert!(!self.heartbeat(id, epoch, false).unwrap().fenced);
                (id, epoch)
            })
            .collect()
    }

    pub fn create(
        &mut self,
        name: &str,
        partitions: i32,
        replication_factor: i16,
    ) -> Result<CreatedTopic, ControllerError> {
        let response = self.request(ControllerRequest::CreateTopics {
            topics: vec![NewTopic {
                name: name.into(),
                partitions,
                replication_factor,
                assignments: None,
                configs: BTreeMap::new(),
            }],
            validate_only: false,
        });
        let ControllerResponse::CreateTopics(mut results) = response else {
            panic!("unexpected {response:?}");
        };
        results.remove(0).1
    }
}

/// Invariants of every image: ISR a non-empty subset of distinct replicas, leader in it or
/// none; and of images right after a tick: no leader fenced or shutting down.
fn check_image(image: &ClusterImage, after_tick: bool) {
    for topic in image.topics.values() {
        for (i, p) in topic.partitions.iter().enumerate() {
            let at = format!("{}-{i} {p:?}", topic.name);
            assert!(!p.isr.is_empty(), "{at}: empty ISR");
            assert!(
                p.isr.iter().all(|r| p.replicas.contains(r)),
                "{at}: ISR ⊄ replicas"
            );
            assert!(
                p.leader == NO_LEADER || p.isr.contains(&p.leader),
                "{at}: leader ∉ ISR"
            );
            if after_tick && p.leader != NO_LEADER {
                assert!(
                    image.is_eligible(p.leader),
                    "{at}: leader fenced or shutting down"
                );
            }
        }
    }
}

/// Across one entry: leader and partition epochs never go back, and without unclean
/// election every new leader comes from the previous ISR.
fn check_transition(before: &ClusterImage, after: &ClusterImage, unclean: bool) {
    for topic in after.topics.values() {
        let Some(old) = before.topic_by_id(&topic.id) else {
            continue;
        };
        for (i, (p, q)) in old.partitions.iter().zip(&topic.partitions).enumerate() {
            let at = format!("{}-{i} {p:?} -> {q:?}", topic.name);
            assert!(
                q.leader_epoch >= p.leader_epoch,
                "{at}: leader epoch went back"
            );
            assert!(
                q.partition_epoch >= p.partition_epoch,
                "{at}: partition epoch went back"
            );
            if q.leader != p.leader {
                assert!(
                    q.leader_epoch > p.leader_epoch,
                    "{at}: new leader, same epoch"
                );
                if !unclean && q.leader != NO_LEADER {
                    assert!(p.isr.contains(&q.leader), "{at}: unclean election");
                }
            }
        }
    }
}

/// What the simulated brokers know: their current incarnation and epoch.
#[derive(Default)]
struct Brokers {
    known: HashMap<BrokerId, (Uuid, i64)>,
}

fn random_step(sim: &mut Sim, rng: &mut StdRng, brokers: &mut Brokers) -> bool {
    let id: BrokerId = rng.gen_range(0..6);
    let timeout = sim.controller.settings().session_timeout_ms;
    let mut after_tick = false;
    match rng.gen_range(0..100) {
        0..=9 => {
            // A restart (new incarnation) or a retried registration.
            let incarnation = match brokers.known.get(&id) {
                Some(&(incarnation, _)) if rng.gen_bool(0.5) => incarnation,
                _ => Uuid::new_v4(),
            };
            let rack = format!("r{}", id % 3);
            if let Ok(epoch) = sim.register_as(id, incarnation, Some(&rack)) {
                assert_eq!(sim.image().brokers[&id].epoch, epoch);
                brokers.known.insert(id, (incarnation, epoch));
            }
        }
        10..=44 => {
            if let Some(&(_, epoch)) = brokers.known.get(&id) {
                let stale = rng.gen_bool(0.05);
                let result = sim.heartbeat(id, epoch - i64::from(stale), rng.gen_bool(0.05));
                match result {
                    Ok(reply) => {
                        assert!(!stale);
                        assert_eq!(reply.fenced, sim.image().brokers[&id].fenced);
                    }
                    Err(e) => {
                        assert!(stale, "{e}");
                        assert_eq!(
                            e.code,
                            kafka_protocol::ResponseError::StaleBrokerEpoch.code()
                        );
                    }
                }
            }
        }
        45..=59 => {
            sim.now += rng.gen_range(0..timeout / 2);
            sim.tick();
            after_tick = true;
        }
        60..=69 => {
            let name = format!("t{}", rng.gen_range(0..8));
            let _ = sim.create(&name, rng.gen_range(1..5), rng.gen_range(1..4));
        }
        70..=71 => {
            let name = format!("t{}", rng.gen_range(0..8));
            sim.request(ControllerRequest::DeleteTopics { names: vec![name] });
        }
        72..=74 => {
            let name = format!("t{}", rng.gen_range(0..8));
            let total = rng.gen_range(1..8);
            sim.request(ControllerRequest::CreatePartitions {
                topics: vec![(name, total, None)],
                validate_only: false,
            });
        }
        _ => alter_random_partition(sim, rng, brokers),
    }
    after_tick
}

/// The leader of a random partition asks for a random ISR holding itself (sometimes with a
/// stale epoch, which must be refused without a change).
fn alter_random_partition(sim: &mut Sim, rng: &mut StdRng, brokers: &Brokers) {
    let image = sim.image();
    let Some(topic) = image
        .topics
        .values()
        .nth(rng.gen_range(0..image.topics.len().max(1)))
    else {
        return;
    };
    let index = rng.gen_range(0..topic.partitions.len());
    let p = &topic.partitions[index];
    let Some(&(_, broker_epoch)) = brokers.known.get(&p.leader) else {
        return;
    };
    let mut new_isr: Vec<BrokerId> = p
        .replicas
        .iter()
        .copied()
        .filter(|&r| r == p.leader || rng.gen_bool(0.5))
        .collect();
    if rng.gen_bool(0.2) {
        new_isr.reverse();
    }
    let stale = rng.gen_bool(0.1);
    let response = sim.request(ControllerRequest::AlterPartition {
        broker_id: p.leader,
        broker_epoch,
        topic: topic.name.clone(),
        partition: i32::try_from(index).unwrap(),
        leader_epoch: p.leader_epoch,
        partition_epoch: p.partition_epoch - i32::from(stale),
        new_isr,
    });
    let ControllerResponse::AlterPartition(result) = response else {
        panic!("unexpected {response:?}");
    };
    let after = sim.image();
    let now = after.topic_by_id(&topic.id).map(|t| &t.partitions[index]);
    match result {
        Ok(state) => assert_eq!(Some(&state), now),
        Err(_) => assert_eq!(Some(p), now),
    }
}

fn run(seed: u64, unclean: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sim = Sim::new(ControllerSettings {
        unclean_leader_election: unclean,
        default_replication_factor: 2,
        leader_rebalance_interval_ms: 5_000,
        ..ControllerSettings::default()
    });
    sim.index_step = rng.gen_range(1..3);
    let mut brokers = Brokers::default();
    for _ in 0..400 {
        let before = sim.image();
        let after_tick = random_step(&mut sim, &mut rng, &mut brokers);
        let after = sim.image();
        check_image(&after, after_tick);
        check_transition(&before, &after, unclean);
    }
    let mut restored = MetadataState::new();
    restored.restore(&sim.state.snapshot()).unwrap();
    assert_eq!(restored.image(), sim.image());
}

#[test]
fn random_runs_keep_invariants() {
    for seed in 0..40 {
        run(seed, false);
    }
}

#[test]
fn random_runs_with_unclean_election_keep_invariants() {
    for seed in 100..120 {
        run(seed, true);
    }
}
