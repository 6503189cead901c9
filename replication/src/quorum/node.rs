//! The loop driving raft-rs: ticks, steps inputs and proposals into the `RawNode`, and
//! handles each `Ready` (persist, send, apply, advance).
//!
//! It is the only owner of the `RawNode`. raft-rs forbids stepping between `ready()` and
//! `advance()`, so messages and proposals arriving meanwhile wait in bounded queues.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::channel::oneshot;
use raft::eraftpb::{Entry, EntryType, Message, Snapshot};
use raft::{RawNode, SnapshotStatus, StateRole};

use super::storage::LogStorage;
use super::{Core, ProposeError, StateMachine};

/// What reaches the loop from the transport.
pub(crate) enum Input {
    Raft(Message),
    Unreachable(u64),
    Snapshot(u64, SnapshotStatus),
}

pub(crate) struct Proposal {
    pub(crate) data: Vec<u8>,
    pub(crate) reply: oneshot::Sender<Result<u64, ProposeError>>,
}

/// Proposals appended but not yet applied; beyond this the loop stops taking new ones.
const MAX_PENDING_PROPOSALS: usize = 4096;
/// Inputs and proposals taken per loop turn, so one kind cannot starve the other.
const INPUT_BATCH: usize = 256;

pub(crate) struct Driver<S: StateMachine> {
    pub(crate) node: RawNode<LogStorage>,
    pub(crate) core: Rc<Core>,
    pub(crate) state: Rc<RefCell<S>>,
    /// Index -> (term, reply) of this node's proposals awaiting their entry's application.
    pub(crate) pending: BTreeMap<u64, (u64, oneshot::Sender<Result<u64, ProposeError>>)>,
    pub(crate) tick: Duration,
    pub(crate) snapshot_every: u64,
}

impl<S: StateMachine> Driver<S> {
    /// Runs until shutdown (or a storage failure, after which the node must not go on).
    pub(crate) async fn run(mut self) {
        if let Err(e) = self.drive().await {
            tracing::error!(node = self.core.node_id, error = %format!("{e:#}"), "quorum: stopping on a storage failure");
            self.core.shutdown.trigger();
        }
        for (_, (_, reply)) in std::mem::take(&mut self.pending) {
            let _ = reply.send(Err(ProposeError::ShuttingDown));
        }
        for proposal in self.core.proposals.drain() {
            let _ = proposal.reply.send(Err(ProposeError::ShuttingDown));
        }
        if let Err(e) = self.node.mut_store().flush().await {
            tracing::error!(node = self.core.node_id, error = %e, "quorum: cannot flush the commit index");
        }
        self.core.leader.set(None);
        self.core.is_leader.set(false);
        self.core.changed.notify(usize::MAX);
    }

    async fn drive(&mut self) -> anyhow::Result<()> {
        let mut next_tick = Instant::now() + self.tick;
        while !self.core.shutdown.is_set() {
            if !self.node.has_ready() {
                let core = &self.core;
                let take_proposals = self.pending.len() < MAX_PENDING_PROPOSALS;
                let wait = next_tick.saturating_duration_since(Instant::now());
                let inputs = futures_lite::future::or(core.inbox.ready(), async {
                    if take_proposals {
                        core.proposals.ready().await
                    } else {
                        std::future::pending().await
                    }
                });
                let timers =
                    futures_lite::future::or(corelog_io::sleep(wait), core.shutdown.wait());
                futures_lite::future::or(inputs, timers).await;
            }
            if Instant::now() >= next_tick {
                self.node.tick();
                next_tick = Instant::now() + self.tick;
            }
            for _ in 0..INPUT_BATCH {
                let Some(input) = self.core.inbox.try_pop() else {
                    break;
                };
                self.step(input);
            }
            for _ in 0..INPUT_BATCH {
                if self.pending.len() >= MAX_PENDING_PROPOSALS {
                    break;
                }
                let Some(proposal) = self.core.proposals.try_pop() else {
                    break;
                };
                self.propose(proposal);
            }
            if self.node.has_ready() {
                self.handle_ready().await?;
            }
        }
        Ok(())
    }

    fn step(&mut self, input: Input) {
        match input {
            Input::Raft(message) => {
                let from = message.from;
                if let Err(e) = self.node.step(message) {
                    tracing::debug!(node = self.core.node_id, from, error = %e, "quorum: message refused");
                }
            }
            Input::Unreachable(peer) => self.node.report_unreachable(peer),
            Input::Snapshot(peer, status) => self.node.report_snapshot(peer, status),
        }
    }

    fn propose(&mut self, proposal: Proposal) {
        if self.node.raft.state != StateRole::Leader {
            let leader = self.core.leader.get();
            let _ = proposal.reply.send(Err(ProposeError::NotLeader { leader }));
            return;
        }
        match self.node.propose(Vec::new(), proposal.data) {
            Ok(()) => {
                let index = self.node.raft.raft_log.last_index();
                let term = self.node.raft.term;
                self.pending.insert(index, (term, proposal.reply));
            }
            Err(e) => {
                tracing::debug!(node = self.core.node_id, error = %e, "quorum: proposal refused by raft");
                let _ = proposal.reply.send(Err(ProposeError::Dropped));
            }
        }
    }

    /// Persists, sends and applies one `Ready`, in the order raft requires: a follower's
    /// messages (votes, acknowledgements) only leave once what they promise is on disk.
    pub(crate) async fn handle_ready(&mut self) -> anyhow::Result<()> {
        let mut ready = self.node.ready();
        if let Some(soft) = ready.ss() {
            self.on_role(soft.leader_id, soft.raft_state);
        }
        // A leader's messages may leave before its own write (raft thesis 10.2.1).
        self.send(ready.take_messages());
        if !ready.snapshot().is_empty() {
            self.install_snapshot(ready.snapshot().clone()).await?;
        }
        let store = self.node.mut_store();
        store
            .append(ready.entries())
            .await
            .context("cannot append to the quorum log")?;
        if let Some(hard_state) = ready.hs() {
            store
                .set_hard_state(hard_state.clone())
                .await
                .context("cannot write the quorum hard state")?;
        }
        self.send(ready.take_persisted_messages());
        self.apply(ready.take_committed_entries()).await;
        let mut light = self.node.advance(ready);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit);
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries()).await;
        self.node.advance_apply();
        self.maybe_compact().await
    }

    fn on_role(&mut self, leader_id: u64, role: StateRole) {
        let leader = (leader_id != 0).then_some(leader_id);
        let was_leader = self.core.is_leader.get();
        let is_leader = role == StateRole::Leader;
        if leader != self.core.leader.get() || is_leader != was_leader {
            tracing::info!(node = self.core.node_id, term = self.node.raft.term, role = ?role, leader = ?leader, "quorum: leadership changed");
        } else {
            tracing::debug!(node = self.core.node_id, term = self.node.raft.term, role = ?role, "quorum: role changed");
        }
        self.core.leader.set(leader);
        self.core.is_leader.set(is_leader);
        if was_leader && !is_leader {
            // Entries past the commit index may be overwritten by the new leader; those
            // up to it will still be applied and resolve normally.
            let committed = self.node.raft.raft_log.committed;
            for (_, (_, reply)) in self.pending.split_off(&(committed + 1)) {
                let _ = reply.send(Err(ProposeError::Dropped));
            }
        }
        self.core.changed.notify(usize::MAX);
    }

    fn send(&self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let Some(peer) = self.core.peers.get(&to) else {
                tracing::warn!(
                    node = self.core.node_id,
                    to,
                    "quorum: message for an unknown node"
                );
                continue;
            };
            if !peer.send_raft(message) {
                self.core.count_dropped();
                // Back off replication to that peer instead of piling more on its queue.
                self.core.deliver(Input::Unreachable(to));
            }
        }
    }

    async fn install_snapshot(&mut self, snapshot: Snapshot) -> anyhow::Result<()> {
        let index = snapshot.get_metadata().index;
        // Restored before it is persisted: a snapshot the state machine refuses must not
        // become the node's durable state.
        self.state
            .borrow_mut()
            .restore(&snapshot.data)
            .with_context(|| format!("cannot restore the snapshot at {index}"))?;
        self.node
            .mut_store()
            .apply_snapshot(snapshot)
            .await
            .context("cannot install the snapshot")?;
        tracing::info!(
            node = self.core.node_id,
            index,
            "quorum: installed a snapshot from the leader"
        );
        self.core.applied.set(index);
        self.core.snapshot_index.set(index);
        // Whether the proposals it covers made it is unknown here.
        let rest = self.pending.split_off(&(index + 1));
        for (_, (_, reply)) in std::mem::replace(&mut self.pending, rest) {
            let _ = reply.send(Err(ProposeError::Dropped));
        }
        self.core.changed.notify(usize::MAX);
        Ok(())
    }

    async fn apply(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            return;
        }
        for entry in entries {
            // Empty normal entries are the ones raft appends on each new leadership;
            // configuration changes never happen (membership is static).
            if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
                self.state.borrow_mut().apply(entry.index, &entry.data);
            }
            self.core.applied.set(entry.index);
            self.resolve(entry.index, entry.term);
            corelog_io::yield_if_needed().await;
        }
        self.core.changed.notify(usize::MAX);
    }

    /// Answers the proposals decided by applying the entry (`index`, `term`).
    fn resolve(&mut self, index: u64, term: u64) {
        while let Some(first) = self.pending.first_entry() {
            if *first.key() > index {
                break;
            }
            let (at, (proposed_term, reply)) = first.remove_entry();
            let outcome = if at == index && proposed_term == term {
                Ok(index)
            } else {
                Err(ProposeError::Dropped)
            };
            let _ = reply.send(outcome);
        }
    }

    async fn maybe_compact(&mut self) -> anyhow::Result<()> {
        let applied = self.core.applied.get();
        let store = self.node.mut_store();
        if applied < store.snapshot_ref().get_metadata().index + self.snapshot_every {
            return Ok(());
        }
        let data = self.state.borrow().snapshot();
        store
            .compact(applied, data)
            .await
            .context("cannot compact the quorum log")?;
        self.core.snapshot_index.set(applied);
        tracing::debug!(
            node = self.core.node_id,
            index = applied,
            "quorum: compacted the log"
        );
        Ok(())
    }
}
