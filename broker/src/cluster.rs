//! This broker's seat in the cluster, on the controller shard: its member of the
//! controller quorum (raft, [`corelog_replication::quorum`]), the active controller's
//! service when that member leads, the broker's registration and heartbeats, and the
//! stream of committed metadata turned into the image every shard serves.
//!
//! A single-node broker is a cluster of one: its quorum has one voter (itself), which
//! leads at once, so there is one metadata path for every deployment.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corelog_replication::metadata::Controller;
use corelog_replication::metadata::{
    encode, ControllerRequest, ControllerResponse, ControllerSettings, Endpoint, MetadataRecord,
    MetadataState, NewTopic,
};
use corelog_replication::quorum::{
    ProposeError, Quorum, QuorumConfig, RequestHandler, StateMachine,
};
use futures::future::LocalBoxFuture;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::BrokerConfig;
use crate::errors::ErrorCode;
use crate::group::offsets::OFFSETS_TOPIC;
use crate::metadata::TopicError;

/// Where the quorum keeps its log and snapshots, as Kafka names its metadata log dir.
const METADATA_DIR: &str = "__cluster_metadata";
/// How long a broker keeps trying to reach an active controller for one request.
const CONTROLLER_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the active controller checks sessions, elections and internal topics.
const CONTROLLER_TICK: Duration = Duration::from_millis(100);
/// Bound on a controlled shutdown: past it the broker stops anyway and its partitions
/// fail over when its session expires.
const CONTROLLED_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// The quorum's state machine: committed metadata records applied to the cluster image.
pub struct MetadataMachine(pub MetadataState);

impl StateMachine for MetadataMachine {
    fn apply(&mut self, index: u64, entry: &[u8]) {
        self.0.apply_entry(index, entry);
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) -> anyhow::Result<()> {
        self.0.restore(snapshot)
    }
}

/// What the active controller answers over the quorum's RPC.
#[derive(Serialize, Deserialize)]
enum ControllerAnswer {
    /// Done; the outcome is in the log at `index` (or was already, when nothing changed).
    Done {
        response: ControllerResponse,
        index: u64,
    },
    /// The node asked is not (or no longer) the active controller: ask again.
    NotController,
}

pub struct ClusterMember {
    pub quorum: Rc<Quorum<MetadataMachine>>,
    config: Arc<BrokerConfig>,
    controller: RefCell<Controller>,
    /// One controller decision at a time: each must judge against the image its
    /// predecessor produced.
    deciding: futures::lock::Mutex<()>,
    incarnation: Uuid,
    cluster_id: Arc<str>,
    /// This broker's epoch from its registration; 0 until registered.
    broker_epoch: Cell<i64>,
    /// Set once a heartbeat found this broker unfenced: it may lead and host replicas.
    unfenced: Cell<bool>,
    unfenced_event: event_listener::Event,
}

impl ClusterMember {
    /// `directory_id` names this broker's data dir (its registration survives a restart on
    /// it); `cluster_id` is the one this data dir was created with, which names the
    /// cluster if this broker is its first active controller.
    pub async fn start(
        config: Arc<BrokerConfig>,
        directory_id: Uuid,
        cluster_id: Arc<str>,
    ) -> anyhow::Result<Rc<ClusterMember>> {
        let settings = &config.cluster;
        let node_id = raft_id(config.node_id);
        let members = |nodes: &[(i32, String)]| -> Vec<(u64, String)> {
            nodes
                .iter()
                .map(|(id, address)| (raft_id(*id), address.clone()))
                .collect()
        };
        let voters = if settings.voters.is_empty() {
            vec![(node_id, String::new())]
        } else {
            members(&settings.voters)
        };
        let learners = members(&settings.learners);
        let (is_voter, is_learner) = (
            voters.iter().any(|(id, _)| *id == node_id),
            learners.iter().any(|(id, _)| *id == node_id),
        );
        anyhow::ensure!(
            is_voter == settings.roles.controller && is_learner != settings.roles.controller,
            "node.id {} must be listed in controller.quorum.voters if it is a controller, in controller.quorum.learners otherwise",
            config.node_id
        );
        let quorum = Quorum::start(
            QuorumConfig {
                voters,
                learners,
                listen: settings.controller_listen,
                bind_address: settings.inter_broker_bind,
                ..QuorumConfig::single(node_id, config.data_dir.join(METADATA_DIR))
            },
            MetadataMachine(MetadataState::new()),
        )
        .await?;
        let member = Rc::new(ClusterMember {
            quorum,
            controller: RefCell::new(Controller::new(controller_settings(&config))),
            config,
            deciding: futures::lock::Mutex::new(()),
            incarnation: directory_id,
            cluster_id,
            broker_epoch: Cell::new(0),
            unfenced: Cell::new(false),
            unfenced_event: event_listener::Event::new(),
        });
        member
            .quorum
            .set_request_handler(Rc::new(ControllerService(Rc::downgrade(&member))));
        Ok(member)
    }

    pub fn image(&self) -> Arc<corelog_replication::metadata::ClusterImage> {
        self.quorum.with_state(|machine| machine.0.image())
    }

    pub fn broker_epoch(&self) -> i64 {
        self.broker_epoch.get()
    }

    /// Asks the active controller, wherever it is, and waits until this broker has applied
    /// the outcome, so that what the caller answers its client is served here already.
    pub async fn request(
        &self,
        request: ControllerRequest,
    ) -> Result<ControllerResponse, TopicError> {
        self.request_until(request, Instant::now() + CONTROLLER_REQUEST_TIMEOUT)
            .await
    }

    async fn request_until(
        &self,
        request: ControllerRequest,
        deadline: Instant,
    ) -> Result<ControllerResponse, TopicError> {
        let body = serde_json::to_vec(&request).expect("controller requests serialize");
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(TopicError::new(
                    ErrorCode::RequestTimedOut,
                    "no active controller answered in time",
                ));
            }
            let answer = match self.quorum.call_leader(body.clone(), remaining).await {
                Ok(answer) => answer,
                Err(e) => {
                    return Err(TopicError::new(
                        ErrorCode::RequestTimedOut,
                        format!("the active controller is unreachable: {e}"),
                    ))
                }
            };
            match serde_json::from_slice::<ControllerAnswer>(&answer) {
                Ok(ControllerAnswer::Done { response, index }) => {
                    self.wait_applied(index, deadline).await;
                    return Ok(response);
                }
                Ok(ControllerAnswer::NotController) => {
                    corelog_io::sleep(CONTROLLER_TICK).await;
                }
                Err(e) => {
                    return Err(TopicError::new(
                        ErrorCode::UnknownServerError,
                        format!("undecodable controller answer: {e}"),
                    ))
                }
            }
        }
    }

    async fn wait_applied(&self, index: u64, deadline: Instant) {
        while self.quorum.applied_index() < index && Instant::now() < deadline {
            let listener = self.quorum.subscribe();
            if self.quorum.applied_index() >= index {
                break;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            futures::future::select(listener, Box::pin(corelog_io::sleep(remaining))).await;
        }
    }

    /// The active controller's side of a request.
    async fn decide(&self, request: ControllerRequest) -> ControllerAnswer {
        if !self.quorum.is_leader() {
            return ControllerAnswer::NotController;
        }
        let _one_at_a_time = self.deciding.lock().await;
        let image = self.image();
        let decision = self
            .controller
            .borrow_mut()
            .handle(&image, request, unix_ms());
        let index = if decision.records.is_empty() {
            self.quorum.applied_index()
        } else {
            match self.quorum.propose(encode(&decision.records)).await {
                Ok(index) => index,
                Err(e) => {
                    tracing::debug!("controller proposal failed: {e}");
                    return ControllerAnswer::NotController;
                }
            }
        };
        ControllerAnswer::Done {
            response: decision.finish(&self.image()),
            index,
        }
    }

    /// The active controller's periodic duties: expire broker sessions and move their
    /// leaderships, elect leaders, rebalance, and create the offsets topic once enough
    /// brokers are up to give it its replication factor.
    pub async fn run_controller(self: Rc<Self>) {
        let mut active = false;
        loop {
            if !self.quorum.is_leader() {
                active = false;
            } else if let Err(ProposeError::ShuttingDown) = self.controller_tick(&mut active).await
            {
                return;
            }
            corelog_io::sleep(CONTROLLER_TICK).await;
        }
    }

    async fn controller_tick(&self, active: &mut bool) -> Result<(), ProposeError> {
        {
            let _one_at_a_time = self.deciding.lock().await;
            let image = self.image();
            let now = unix_ms();
            let records = {
                let mut controller = self.controller.borrow_mut();
                let mut records = Vec::new();
                if !*active {
                    controller.activate(&image, now);
                    *active = true;
                    tracing::info!(
                        node = self.config.node_id,
                        "this broker is the active controller"
                    );
                    if image.cluster_id.is_none() {
                        records.push(MetadataRecord::ClusterIdSet {
                            cluster_id: self.cluster_id.to_string(),
                        });
                    }
                }
                records.extend(controller.tick(&image, now));
                records
            };
            if !records.is_empty() {
                if let Err(e) = self.quorum.propose(encode(&records)).await {
                    if !matches!(e, ProposeError::ShuttingDown) {
                        tracing::warn!("controller tick proposal failed: {e}");
                    }
                    return Err(e);
                }
            }
        }
        self.create_offsets_topic_when_possible().await;
        Ok(())
    }

    async fn create_offsets_topic_when_possible(&self) {
        let image = self.image();
        if image.topic(OFFSETS_TOPIC).is_some() {
            return;
        }
        let settings = &self.config.cluster;
        // As in Kafka the topic waits for enough brokers; a single node has only itself.
        let replication_factor = match settings.voters.len() {
            0 => 1,
            _ => settings.offsets_topic_replication_factor as usize,
        };
        if image.live_brokers().count() < replication_factor {
            return;
        }
        let request = ControllerRequest::CreateTopics {
            topics: vec![NewTopic {
                name: OFFSETS_TOPIC.to_string(),
                partitions: self.config.groups.offsets_topic_partitions,
                replication_factor: replication_factor as i16,
                assignments: None,
                configs: offsets_topic_configs(),
            }],
            validate_only: false,
        };
        if let ControllerAnswer::Done { response, .. } = self.decide(request).await {
            tracing::info!(replication_factor, "created {OFFSETS_TOPIC}: {response:?}");
        }
    }

    /// Registers this broker (with its data dir's id, so a restart replaces the previous
    /// registration at once), then heartbeats; re-registers when the controller no longer
    /// knows its epoch.
    pub async fn run_heartbeats(self: Rc<Self>) {
        let interval = Duration::from_millis(self.config.cluster.heartbeat_interval_ms);
        loop {
            if self.broker_epoch.get() == 0 {
                match self.request(self.registration()).await {
                    Ok(ControllerResponse::RegisterBroker(Ok(epoch))) => {
                        tracing::info!(epoch, "broker registered with the controller");
                        self.broker_epoch.set(epoch);
                        continue; // the first heartbeat unfences it: send it at once
                    }
                    other => tracing::debug!("registration not accepted yet: {other:?}"),
                }
            } else {
                let heartbeat = ControllerRequest::Heartbeat {
                    id: self.config.node_id,
                    epoch: self.broker_epoch.get(),
                    want_shutdown: false,
                };
                match self.request(heartbeat).await {
                    Ok(ControllerResponse::Heartbeat(Ok(reply))) => {
                        if !reply.fenced && !self.unfenced.replace(true) {
                            self.unfenced_event.notify(usize::MAX);
                        }
                    }
                    Ok(ControllerResponse::Heartbeat(Err(e))) => {
                        tracing::warn!("heartbeat refused ({}); registering again", e.message);
                        self.broker_epoch.set(0);
                    }
                    other => tracing::debug!("heartbeat failed: {other:?}"),
                }
            }
            corelog_io::sleep(interval).await;
        }
    }

    fn registration(&self) -> ControllerRequest {
        let config = &self.config;
        let (host, port) = &config.cluster.inter_broker_advertised;
        ControllerRequest::RegisterBroker {
            id: config.node_id,
            incarnation: self.incarnation,
            kafka: Endpoint {
                host: config.advertised_host.clone(),
                port: config.advertised_port,
            },
            replication: Endpoint {
                host: host.clone(),
                port: *port,
            },
            rack: config.cluster.rack.clone(),
        }
    }

    /// Waits until this broker is registered and unfenced, leads what only it can lead,
    /// and the offsets topic exists, or
    /// `limit` passed (a new cluster may wait for enough brokers; it serves what it can
    /// meanwhile).
    pub async fn wait_ready(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        let node_id = self.config.node_id;
        // Partitions waiting for this broker to lead them again (it was their last in-sync
        // replica) get it once it is unfenced: serving before would turn clients away.
        let leaderless_here = |image: &corelog_replication::metadata::ClusterImage| {
            image.topics.values().any(|topic| {
                topic
                    .partitions
                    .iter()
                    .any(|p| p.leader < 0 && p.isr.contains(&node_id))
            })
        };
        let ready = || {
            let image = self.image();
            self.unfenced.get() && image.topic(OFFSETS_TOPIC).is_some() && !leaderless_here(&image)
        };
        while !ready() && Instant::now() < deadline {
            let applied = self.quorum.subscribe();
            let unfenced = self.unfenced_event.listen();
            if ready() {
                break;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            let either = futures::future::select(applied, unfenced);
            futures::future::select(either, Box::pin(corelog_io::sleep(remaining))).await;
        }
    }

    /// Asks the controller to move this broker's leaderships to other in-sync replicas
    /// before it stops, so clients fail over at once instead of after a session timeout.
    pub async fn controlled_shutdown(&self) {
        if self.broker_epoch.get() == 0 {
            return;
        }
        let deadline = Instant::now() + CONTROLLED_SHUTDOWN_TIMEOUT;
        while Instant::now() < deadline {
            let heartbeat = ControllerRequest::Heartbeat {
                id: self.config.node_id,
                epoch: self.broker_epoch.get(),
                want_shutdown: true,
            };
            if let Ok(ControllerResponse::Heartbeat(Ok(reply))) =
                self.request_until(heartbeat, deadline).await
            {
                if reply.should_shut_down {
                    tracing::info!("controlled shutdown: leaderships moved");
                    return;
                }
            }
            corelog_io::sleep(CONTROLLER_TICK).await;
        }
        tracing::warn!("controlled shutdown timed out; partitions fail over by session expiry");
    }
}

/// Serves requests other brokers forward to this node while it is the active controller.
struct ControllerService(Weak<ClusterMember>);

impl RequestHandler for ControllerService {
    fn handle(&self, request: Vec<u8>) -> LocalBoxFuture<'static, Vec<u8>> {
        let member = self.0.clone();
        Box::pin(async move {
            let answer = match (member.upgrade(), serde_json::from_slice(&request)) {
                (Some(member), Ok(request)) => member.decide(request).await,
                (None, _) => ControllerAnswer::NotController,
                (Some(_), Err(e)) => {
                    tracing::warn!("undecodable controller request: {e}");
                    ControllerAnswer::NotController
                }
            };
            serde_json::to_vec(&answer).expect("controller answers serialize")
        })
    }
}

fn controller_settings(config: &BrokerConfig) -> ControllerSettings {
    let cluster = &config.cluster;
    ControllerSettings {
        session_timeout_ms: cluster.session_timeout_ms,
        default_partitions: config.num_partitions,
        default_replication_factor: config.default_replication_factor,
        unclean_leader_election: cluster.unclean_leader_election,
        auto_leader_rebalance: cluster.auto_leader_rebalance,
        leader_rebalance_interval_ms: cluster.leader_imbalance_check_interval_ms,
        leader_imbalance_percentage: cluster.leader_imbalance_per_broker_percentage,
        max_partitions_per_topic: crate::metadata::MAX_PARTITIONS,
    }
}

/// The internal topic holding committed offsets. Compaction is not implemented yet, so it
/// keeps everything (no retention) rather than lose live offsets with old segments.
fn offsets_topic_configs() -> std::collections::BTreeMap<String, String> {
    [
        ("retention.ms", "-1"),
        ("retention.bytes", "-1"),
        ("segment.bytes", "104857600"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Raft reserves id 0, Kafka allows node.id 0: raft ids are node ids plus one.
fn raft_id(node_id: i32) -> u64 {
    node_id as u64 + 1
}

/// The node id of a raft member.
pub fn node_id_of(raft_id: u64) -> i32 {
    raft_id as i32 - 1
}

fn unix_ms() -> u64 {
    crate::shard::now_ms().max(0) as u64
}
