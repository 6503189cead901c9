//! Replica roles on a shard: each metadata image says, per partition, who leads under
//! which epoch and who is in sync. This shard makes its partitions leaders or followers
//! accordingly, keeps its links to leaders in step, and asks the controller for the
//! ISR changes its leaders want.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::Duration;

use corelog_replication::isr::LeaderAndIsr;
use corelog_replication::metadata::{ControllerRequest, ControllerResponse, PartitionState};

use super::follower::{Followed, LanePartitions, LeaderLink};
use super::{now_ms, Partition, Shard, ShardRequest, ShardResponse, CONTROLLER_SHARD};
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::{shard_for, MetadataImage};

/// This shard's links to the leaders it follows, by leader broker id.
pub type LeaderLinks = HashMap<i32, Rc<LeaderLink>>;

/// An ISR change a leader on this shard wants from the controller.
struct IsrChange {
    topic: String,
    index: i32,
    partition: Rc<Partition>,
    state: LeaderAndIsr,
    new_isr: Vec<i32>,
}

fn endpoint(endpoint: &corelog_replication::metadata::Endpoint) -> String {
    format!("{}:{}", endpoint.host, endpoint.port)
}

pub fn leader_and_isr(state: &PartitionState) -> LeaderAndIsr {
    LeaderAndIsr {
        leader: state.leader,
        leader_epoch: state.leader_epoch,
        isr: state.isr.clone(),
        replicas: state.replicas.clone(),
        partition_epoch: state.partition_epoch,
    }
}

impl Shard {
    /// Gives every partition this shard holds the role `image` assigns, then points the
    /// followed partitions' fetch lanes at the current leaders. Called from `apply_image`,
    /// after partitions are opened.
    pub(super) fn apply_roles(self: &Rc<Self>, image: &MetadataImage) {
        let node_id = self.config.node_id;
        let depth = self.config.cluster.replica_fetch_pipeline_depth;
        let now = now_ms().max(0) as u64;
        let mut wanted: BTreeMap<i32, Vec<LanePartitions>> = BTreeMap::new();
        for (name, owned) in self.partitions.borrow().iter() {
            let Some(topic) = image.topic(name) else {
                continue;
            };
            for (index, partition) in owned.iter().enumerate() {
                let (Some(partition), Some(state)) = (partition, topic.partition(index as i32))
                else {
                    continue;
                };
                let role = leader_and_isr(state);
                if state.leader == node_id {
                    let newly = partition.become_leader(node_id, &role, now);
                    if newly && name == OFFSETS_TOPIC {
                        self.load_group_offsets(index as i32, partition);
                    }
                    continue;
                }
                if partition.become_follower(&role) && name == OFFSETS_TOPIC {
                    self.groups
                        .borrow_mut()
                        .unload_partition(index as i32, topic.record.partitions);
                }
                if image.broker(state.leader).is_none() {
                    continue; // no live leader to fetch from: wait for an election
                }
                let lane = shard_for(name, index as i32, depth);
                wanted
                    .entry(state.leader)
                    .or_insert_with(|| vec![LanePartitions::new(); depth])[lane]
                    .insert(
                        (name.clone(), index as i32),
                        Followed {
                            partition: partition.clone(),
                            leader_epoch: state.leader_epoch,
                        },
                    );
            }
        }
        let mut links = self.leader_links.borrow_mut();
        links.retain(|leader, link| {
            let address = image
                .cluster
                .brokers
                .get(leader)
                .map(|b| endpoint(&b.replication));
            let keep =
                wanted.contains_key(leader) && address.as_deref() == Some(link.address.as_str());
            if !keep {
                link.set_lanes(Vec::new());
            }
            keep
        });
        for (leader, lanes) in wanted {
            let link = links.entry(leader).or_insert_with(|| {
                let address = endpoint(&image.cluster.brokers[&leader].replication);
                LeaderLink::start(self, leader, address)
            });
            link.set_lanes(lanes);
        }
    }

    /// Rebuilds the groups kept in an offsets partition this broker now leads, from its
    /// log (followers append commits without applying them).
    fn load_group_offsets(&self, index: i32, partition: &Partition) {
        let count = self
            .image
            .borrow()
            .topic(OFFSETS_TOPIC)
            .map_or(0, |t| t.record.partitions);
        self.groups.borrow_mut().unload_partition(index, count);
        self.load_offsets(partition);
    }

    /// Periodically asks the controller for the ISR changes this shard's leaders want:
    /// followers lagging past `replica.lag.time.max.ms` out, caught-up ones back in.
    pub async fn run_isr_maintenance(self: Rc<Self>) {
        let lag_max = self.config.cluster.replica_lag_time_max_ms;
        let interval = Duration::from_millis((lag_max / 4).clamp(50, 1000));
        loop {
            corelog_io::sleep(interval).await;
            let now = now_ms().max(0) as u64;
            let wanted: Vec<IsrChange> = self
                .partitions
                .borrow()
                .iter()
                .flat_map(|(name, owned)| {
                    owned.iter().enumerate().filter_map(move |(index, p)| {
                        let p = p.as_ref()?;
                        let (state, isr) = p.isr_change_wanted(now, lag_max)?;
                        Some(IsrChange {
                            topic: name.clone(),
                            index: index as i32,
                            partition: p.clone(),
                            state,
                            new_isr: isr,
                        })
                    })
                })
                .collect();
            for IsrChange {
                topic,
                index,
                partition,
                state,
                new_isr,
            } in wanted
            {
                // The controller shard puts in this broker's current epoch.
                let request = ControllerRequest::AlterPartition {
                    broker_id: self.config.node_id,
                    broker_epoch: 0,
                    topic: topic.clone(),
                    partition: index,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    new_isr: new_isr.clone(),
                };
                match self
                    .on_shard(
                        CONTROLLER_SHARD,
                        ShardRequest::Controller(Box::new(request)),
                    )
                    .await
                {
                    ShardResponse::Controller(response) => match *response {
                        ControllerResponse::AlterPartition(Ok(_)) => {
                            tracing::info!(topic, partition = index, isr = ?new_isr, "ISR changed");
                        }
                        other => {
                            tracing::debug!(
                                topic,
                                partition = index,
                                "ISR change refused: {other:?}"
                            );
                            partition.isr_change_failed();
                        }
                    },
                    _ => partition.isr_change_failed(),
                }
            }
        }
    }
}
