//! Replicated log on raft-rs: storage, transport, node.
//!
//! A [`Quorum`] is one member of a raft group replicating opaque entries into a
//! [`StateMachine`]. raft-rs decides elections and replication; this module stores its
//! log ([`storage`]), carries its messages over TCP ([`transport`]) and drives it
//! ([`node`]) on the current glommio executor, never blocking it (disk writes go to the
//! blocking pool). Membership is static: voters and learners come from the configuration.

mod node;
mod queue;
mod storage;
mod transport;

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use anyhow::{ensure, Context};
use event_listener::{Event, EventListener};
use futures::channel::oneshot;
use futures::future::LocalBoxFuture;
use raft::eraftpb::{ConfState, EntryType};
use raft::RawNode;

use corelog_io::{spawn_local, Task, TcpListener};
use node::{Driver, Input, Proposal};
use queue::{LocalQueue, Shutdown};
use storage::LogStorage;
use transport::{Peer, Status};

/// What the replicated log feeds.
pub trait StateMachine: 'static {
    /// Applies one committed entry; deterministic (every node applies the same entries in order).
    fn apply(&mut self, index: u64, entry: &[u8]);
    /// State covering every entry applied so far (for snapshots and log compaction).
    fn snapshot(&self) -> Vec<u8>;
    fn restore(&mut self, snapshot: &[u8]) -> anyhow::Result<()>;
}

/// Serves [`Quorum::call_leader`] requests on the leader.
pub trait RequestHandler {
    fn handle(&self, request: Vec<u8>) -> LocalBoxFuture<'static, Vec<u8>>;
}

#[derive(Clone, Debug)]
pub struct QuorumConfig {
    pub node_id: u64,
    /// Every voter with the address THIS node uses to reach it (may be a fault-injecting proxy in tests).
    pub voters: Vec<(u64, String)>,
    /// Non-voting members that receive the log (broker-only nodes). Static, like voters.
    pub learners: Vec<(u64, String)>,
    /// Where this node listens for peers; None only when the quorum is this node alone.
    pub listen: Option<SocketAddr>,
    /// Source IP for outbound peer connections (tests bind 127.0.1.N so a proxy knows who connects).
    pub bind_address: Option<IpAddr>,
    /// e.g. `<broker data dir>/__cluster_metadata`
    pub data_dir: PathBuf,
    pub tick: Duration,
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Compact after this many applied entries.
    pub snapshot_every: u64,
    /// Larger proposals are refused.
    pub max_entry_bytes: usize,
}

/// Largest `max_entry_bytes` allowed: an append message carrying one entry must fit in a
/// transport frame with room to spare.
pub const MAX_ENTRY_BYTES_LIMIT: usize = transport::MAX_FRAME / 2;
/// Bytes of uncommitted entries a leader accepts before refusing proposals.
const MAX_UNCOMMITTED_BYTES: u64 = transport::MAX_FRAME as u64;
/// Bytes of entries per append message (one larger entry still goes alone).
const MAX_APPEND_BYTES: u64 = 1 << 20;
/// Append messages in flight per follower.
const MAX_INFLIGHT_APPENDS: usize = 256;
/// Raft messages and transport reports waiting for the loop; more are dropped.
const INBOX_CAPACITY: usize = 4096;
/// Proposals waiting for the loop; `propose` waits for room beyond that.
const PROPOSAL_QUEUE: usize = 1024;

impl QuorumConfig {
    /// A quorum of this node alone, with the default timings and limits.
    pub fn single(node_id: u64, data_dir: PathBuf) -> QuorumConfig {
        QuorumConfig {
            node_id,
            voters: vec![(node_id, String::new())],
            learners: Vec::new(),
            listen: None,
            bind_address: None,
            data_dir,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 10_000,
            max_entry_bytes: 1 << 20,
        }
    }

    fn is_single(&self) -> bool {
        self.learners.is_empty() && self.voters.len() == 1 && self.voters[0].0 == self.node_id
    }

    fn validate(&self) -> anyhow::Result<()> {
        ensure!(self.node_id != 0, "quorum node id 0 is reserved by raft");
        ensure!(
            !self.voters.is_empty(),
            "the quorum needs at least one voter"
        );
        let mut ids = HashSet::new();
        for (id, _) in self.voters.iter().chain(&self.learners) {
            ensure!(*id != 0, "quorum node id 0 is reserved by raft");
            ensure!(ids.insert(*id), "quorum node {id} is listed twice");
        }
        ensure!(
            ids.contains(&self.node_id),
            "node {} is neither a voter nor a learner of the quorum",
            self.node_id
        );
        ensure!(
            self.listen.is_some() || self.is_single(),
            "a quorum of several nodes needs a listen address"
        );
        ensure!(!self.tick.is_zero(), "the quorum tick must be positive");
        ensure!(
            self.heartbeat_ticks >= 1,
            "heartbeat_ticks must be at least 1"
        );
        ensure!(
            self.election_ticks > self.heartbeat_ticks,
            "election_ticks ({}) must exceed heartbeat_ticks ({})",
            self.election_ticks,
            self.heartbeat_ticks
        );
        ensure!(
            self.snapshot_every >= 1,
            "snapshot_every must be at least 1"
        );
        ensure!(
            (1..=MAX_ENTRY_BYTES_LIMIT).contains(&self.max_entry_bytes),
            "max_entry_bytes must be within 1..={MAX_ENTRY_BYTES_LIMIT}"
        );
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("this node does not lead the quorum (leader: {leader:?})")]
    NotLeader { leader: Option<u64> },
    #[error("the entry exceeds the maximum entry size")]
    TooLarge,
    #[error("empty entries are reserved by raft")]
    Empty,
    #[error("leadership was lost before the entry was committed; it may or may not be applied")]
    Dropped,
    #[error("the quorum is shutting down")]
    ShuttingDown,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no leader answered in time")]
    Timeout,
    #[error("the request or its answer exceeds the transport's frame size")]
    TooLarge,
    #[error("the quorum is shutting down")]
    ShuttingDown,
}

/// State shared by the quorum's tasks (everything but the state machine).
pub(crate) struct Core {
    node_id: u64,
    bind_address: Option<IpAddr>,
    leader: Cell<Option<u64>>,
    is_leader: Cell<bool>,
    applied: Cell<u64>,
    /// Index the latest snapshot covers (0 before any).
    snapshot_index: Cell<u64>,
    changed: Event,
    handler: RefCell<Option<Rc<dyn RequestHandler>>>,
    shutdown: Shutdown,
    inbox: LocalQueue<Input>,
    proposals: LocalQueue<Proposal>,
    peers: HashMap<u64, Rc<Peer>>,
    dropped_messages: Cell<u64>,
    open_inbound: Cell<usize>,
    inbound_closed: Event,
}

impl Core {
    /// Hands an input to the raft loop, dropping it when the loop is that far behind.
    fn deliver(&self, input: Input) {
        if self.inbox.try_push(input).is_err() {
            self.count_dropped();
        }
    }

    fn count_dropped(&self) {
        self.dropped_messages.set(self.dropped_messages.get() + 1);
    }

    /// Answers a request if this node leads; the caller retries elsewhere otherwise.
    async fn serve_request(&self, request: Vec<u8>) -> (Status, Vec<u8>) {
        if !self.is_leader.get() {
            return (Status::NotLeader, Vec::new());
        }
        let Some(handler) = self.handler.borrow().clone() else {
            return (Status::NoHandler, Vec::new());
        };
        (Status::Ok, handler.handle(request).await)
    }
}

pub struct Quorum<S: StateMachine> {
    core: Rc<Core>,
    state: Rc<RefCell<S>>,
    max_entry_bytes: usize,
    tick: Duration,
    /// The raft loop first, then the listener and one task per peer.
    tasks: RefCell<Vec<Task<()>>>,
}

impl<S: StateMachine> Quorum<S> {
    /// Opens the storage in `config.data_dir`, restores `state` from it and joins the
    /// quorum. A quorum of this node alone leads by the time this returns.
    pub async fn start(config: QuorumConfig, mut state: S) -> anyhow::Result<Rc<Self>> {
        config.validate()?;
        let conf_state = ConfState::from((
            config.voters.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
            config
                .learners
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
        ));
        let dir = config.data_dir.clone();
        let storage = corelog_io::spawn_blocking(move || LogStorage::open(&dir, conf_state))
            .await
            .with_context(|| {
                format!(
                    "cannot open the quorum storage in {}",
                    config.data_dir.display()
                )
            })?;

        let snapshot = storage.snapshot_ref();
        let snapshot_index = snapshot.get_metadata().index;
        let mut applied = snapshot_index;
        if applied > 0 {
            state
                .restore(&snapshot.data)
                .with_context(|| format!("cannot restore the quorum snapshot at {applied}"))?;
        }
        for entry in storage.committed_entries(applied + 1) {
            if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
                state.apply(entry.index, &entry.data);
            }
            applied = entry.index;
        }

        let raft_config = raft::Config {
            id: config.node_id,
            election_tick: config.election_ticks,
            heartbeat_tick: config.heartbeat_ticks,
            applied,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: MAX_APPEND_BYTES,
            max_inflight_msgs: MAX_INFLIGHT_APPENDS,
            max_uncommitted_size: MAX_UNCOMMITTED_BYTES,
            ..Default::default()
        };
        raft_config
            .validate()
            .context("invalid raft configuration")?;
        let mut node = RawNode::new(&raft_config, storage, &raft_logger())
            .context("cannot create the raft node")?;
        let listener =
            match config.listen {
                Some(addr) => Some(TcpListener::bind(addr).map_err(|e| {
                    anyhow::anyhow!("cannot listen for quorum peers on {addr}: {e}")
                })?),
                None => None,
            };
        if config.is_single() {
            // Alone, there is nobody to wait for: lead now so startup stays fast.
            node.campaign().context("cannot campaign")?;
        }

        let peers = config
            .voters
            .iter()
            .chain(&config.learners)
            .filter(|(id, _)| *id != config.node_id)
            .map(|(id, addr)| (*id, Rc::new(Peer::new(*id, addr.clone()))))
            .collect::<HashMap<_, _>>();
        let core = Rc::new(Core {
            node_id: config.node_id,
            bind_address: config.bind_address,
            leader: Cell::new(None),
            is_leader: Cell::new(false),
            applied: Cell::new(applied),
            snapshot_index: Cell::new(snapshot_index),
            changed: Event::new(),
            handler: RefCell::new(None),
            shutdown: Shutdown::default(),
            inbox: LocalQueue::new(INBOX_CAPACITY),
            proposals: LocalQueue::new(PROPOSAL_QUEUE),
            peers,
            dropped_messages: Cell::new(0),
            open_inbound: Cell::new(0),
            inbound_closed: Event::new(),
        });
        let mut driver = Driver {
            node,
            core: core.clone(),
            state: Rc::new(RefCell::new(state)),
            pending: Default::default(),
            tick: config.tick,
            snapshot_every: config.snapshot_every,
        };
        if driver.node.has_ready() {
            // Makes a lone node's leadership visible before start returns.
            driver.handle_ready().await?;
        }
        tracing::info!(node = config.node_id, applied, voters = ?config.voters, learners = ?config.learners, "quorum: started");

        let state = driver.state.clone();
        let mut tasks = vec![spawn_local(driver.run())];
        if let Some(listener) = listener {
            let core = core.clone();
            tasks.push(spawn_local(async move {
                core.shutdown
                    .guard(transport::accept_loop(core.clone(), listener))
                    .await;
            }));
        }
        for peer in core.peers.values() {
            let (core, peer) = (core.clone(), peer.clone());
            tasks.push(spawn_local(async move {
                core.shutdown
                    .guard(transport::run_peer(core.clone(), peer))
                    .await;
            }));
        }
        Ok(Rc::new(Quorum {
            core,
            state,
            max_entry_bytes: config.max_entry_bytes,
            tick: config.tick,
            tasks: RefCell::new(tasks),
        }))
    }

    /// Appends an entry if this node leads; resolves once committed AND applied locally,
    /// with its index. `Dropped` means the outcome is unknown (leadership was lost before
    /// the entry was known committed): make entries idempotent or check the state.
    pub async fn propose(&self, entry: Vec<u8>) -> Result<u64, ProposeError> {
        if self.core.shutdown.is_set() {
            return Err(ProposeError::ShuttingDown);
        }
        if entry.len() > self.max_entry_bytes {
            return Err(ProposeError::TooLarge);
        }
        if entry.is_empty() {
            return Err(ProposeError::Empty);
        }
        if !self.core.is_leader.get() {
            return Err(ProposeError::NotLeader {
                leader: self.core.leader.get(),
            });
        }
        let (reply, outcome) = oneshot::channel();
        let queued = self
            .core
            .shutdown
            .guard(self.core.proposals.push(Proposal { data: entry, reply }))
            .await;
        if queued.is_none() {
            return Err(ProposeError::ShuttingDown);
        }
        proposal_outcome(outcome.await, self.core.shutdown.is_set())
    }

    pub fn leader_id(&self) -> Option<u64> {
        self.core.leader.get()
    }

    pub fn is_leader(&self) -> bool {
        self.core.is_leader.get()
    }

    pub fn node_id(&self) -> u64 {
        self.core.node_id
    }

    pub fn applied_index(&self) -> u64 {
        self.core.applied.get()
    }

    /// Index covered by the latest snapshot (made by compaction or received from the
    /// leader); the log holds only the entries after it.
    pub fn snapshot_index(&self) -> u64 {
        self.core.snapshot_index.get()
    }

    /// Raft messages dropped so far because a queue was full or a frame too large.
    pub fn dropped_messages(&self) -> u64 {
        self.core.dropped_messages.get()
    }

    pub fn with_state<R>(&self, f: impl FnOnce(&S) -> R) -> R {
        f(&self.state.borrow())
    }

    /// Fires after entries are applied and when leadership changes. Listen, then check
    /// the condition, then await, so no change slips between the check and the wait.
    pub fn subscribe(&self) -> EventListener {
        self.core.changed.listen()
    }

    /// RPC to the current leader: the leader's handler (set with set_request_handler)
    /// answers. Runs locally when this node leads; otherwise over the peer connection;
    /// retries on leader change until the timeout.
    pub async fn call_leader(
        &self,
        request: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, CallError> {
        if !transport::request_fits(request.len()) {
            return Err(CallError::TooLarge);
        }
        let attempts = async {
            loop {
                let changed = self.core.changed.listen();
                let reply = match self.core.leader.get() {
                    Some(leader) if leader == self.core.node_id => {
                        Some(self.core.serve_request(request.clone()).await)
                    }
                    Some(leader) => match self.core.peers.get(&leader) {
                        Some(peer) => peer
                            .call(request.clone())
                            .await
                            .map(|reply| (reply.status, reply.body)),
                        None => None,
                    },
                    None => None,
                };
                match reply {
                    Some((Status::Ok, body)) => return Ok(body),
                    Some((Status::TooLarge, _)) => return Err(CallError::TooLarge),
                    // No leader known: wait for one to be elected.
                    None if self.core.leader.get().is_none() => {
                        futures_lite::future::or(changed, corelog_io::sleep(self.tick)).await
                    }
                    // Refused or lost: give the cluster a tick to settle.
                    _ => corelog_io::sleep(self.tick).await,
                }
            }
        };
        let stop = async {
            futures_lite::future::or(
                async {
                    corelog_io::sleep(timeout).await;
                    CallError::Timeout
                },
                async {
                    self.core.shutdown.wait().await;
                    CallError::ShuttingDown
                },
            )
            .await
        };
        futures_lite::future::or(attempts, async { Err(stop.await) }).await
    }

    pub fn set_request_handler(&self, handler: Rc<dyn RequestHandler>) {
        *self.core.handler.borrow_mut() = Some(handler);
    }

    /// Stops tasks, closes listener and connections, flushes storage.
    pub async fn shutdown(&self) {
        self.core.shutdown.trigger();
        // The handler often holds this quorum: dropping it breaks the cycle.
        self.core.handler.borrow_mut().take();
        let tasks = std::mem::take(&mut *self.tasks.borrow_mut());
        for task in tasks {
            task.await;
        }
        loop {
            let closed = self.core.inbound_closed.listen();
            if self.core.open_inbound.get() == 0 {
                break;
            }
            closed.await;
        }
    }
}

impl<S: StateMachine> Drop for Quorum<S> {
    fn drop(&mut self) {
        self.core.shutdown.trigger();
    }
}

/// raft-rs logs through slog: forward to tracing under the target `raft`, one level down
/// (its info lines are per-election chatter; role changes are logged by the node itself).
fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let text = || {
            let mut text = KeyValues(record.msg().to_string());
            let _ = slog::KV::serialize(&record.kv(), record, &mut text);
            let _ = slog::KV::serialize(values, record, &mut text);
            text.0
        };
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", text())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", text()),
            slog::Level::Info | slog::Level::Debug => tracing::debug!(target: "raft", "{}", text()),
            slog::Level::Trace => tracing::trace!(target: "raft", "{}", text()),
        }
        Ok(())
    }
}

struct KeyValues(String);

impl slog::Serializer for KeyValues {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments) -> slog::Result {
        let _ = write!(self.0, " {key}={value}");
        Ok(())
    }
}

/// What a proposer is told. A reply dropped unsent leaves the entry's fate unknown, as a
/// lost leadership does; only a real shutdown is reported as one, since callers stop for
/// good on it (the controller's tick loop does).
fn proposal_outcome(
    reply: Result<Result<u64, ProposeError>, oneshot::Canceled>,
    shutting_down: bool,
) -> Result<u64, ProposeError> {
    match reply {
        Ok(outcome) => outcome,
        Err(oneshot::Canceled) if shutting_down => Err(ProposeError::ShuttingDown),
        Err(oneshot::Canceled) => Err(ProposeError::Dropped),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_dropped_unsent_is_a_shutdown_only_when_shutting_down() {
        let dropped = || Err(oneshot::Canceled);
        assert!(matches!(
            proposal_outcome(dropped(), false),
            Err(ProposeError::Dropped)
        ));
        assert!(matches!(
            proposal_outcome(dropped(), true),
            Err(ProposeError::ShuttingDown)
        ));
        assert!(matches!(proposal_outcome(Ok(Ok(7)), false), Ok(7)));
    }

    #[test]
    fn config_validation_names_the_problem() {
        let dir = PathBuf::from("/nonexistent");
        let mut config = QuorumConfig::single(1, dir);
        assert!(config.validate().is_ok());
        config.voters.push((2, "127.0.0.1:1".into()));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("listen"), "{err}");
        config.listen = Some("127.0.0.1:0".parse().unwrap());
        config.learners.push((2, "127.0.0.1:2".into()));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("twice"), "{err}");
        config.learners.clear();
        config.election_ticks = 2;
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("election_ticks"), "{err}");
        config.election_ticks = 10;
        config.max_entry_bytes = MAX_ENTRY_BYTES_LIMIT + 1;
        assert!(config.validate().is_err());
    }
}
