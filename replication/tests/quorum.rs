//! The controller quorum over real TCP on 127.0.0.1 and real files: each node runs on its
//! own thread with its own glommio executor, driven from the test thread through a job
//! channel.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::rc::{Rc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use futures::channel::mpsc;
use futures::future::LocalBoxFuture;
use futures::{SinkExt, StreamExt};
use glommio::LocalExecutorBuilder;

use corelog_replication::quorum::{
    CallError, ProposeError, Quorum, QuorumConfig, RequestHandler, StateMachine,
};

/// Upper bound for any single wait in these tests.
const WAIT: Duration = Duration::from_secs(30);

/// The state machine under test: the entries applied, in order.
#[derive(Default)]
struct Strings {
    entries: Vec<String>,
    last_index: u64,
}

impl StateMachine for Strings {
    fn apply(&mut self, index: u64, entry: &[u8]) {
        assert!(
            index > self.last_index,
            "entry {index} applied after {}",
            self.last_index
        );
        self.last_index = index;
        self.entries
            .push(String::from_utf8(entry.to_vec()).unwrap());
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&(self.last_index, &self.entries)).unwrap()
    }

    fn restore(&mut self, snapshot: &[u8]) -> anyhow::Result<()> {
        (self.last_index, self.entries) = serde_json::from_slice(snapshot)?;
        Ok(())
    }
}

/// On the leader: proposes the request and answers its index, or the error.
struct ProposeHandler(Weak<Quorum<Strings>>);

impl RequestHandler for ProposeHandler {
    fn handle(&self, request: Vec<u8>) -> LocalBoxFuture<'static, Vec<u8>> {
        let quorum = self.0.clone();
        Box::pin(async move {
            let Some(quorum) = quorum.upgrade() else {
                return b"ERR gone".to_vec();
            };
            match quorum.propose(request).await {
                Ok(index) => index.to_string().into_bytes(),
                Err(e) => format!("ERR {e}").into_bytes(),
            }
        })
    }
}

type Job = Box<dyn FnOnce(Rc<Quorum<Strings>>) -> LocalBoxFuture<'static, ()> + Send>;

/// A quorum member on its own executor thread.
struct Node {
    id: u64,
    jobs: mpsc::Sender<Job>,
    thread: JoinHandle<()>,
}

impl Node {
    fn start(config: QuorumConfig) -> Node {
        let id = config.node_id;
        let (jobs, mut incoming) = mpsc::channel::<Job>(16);
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("quorum-node-{id}"))
            .spawn(move || {
                LocalExecutorBuilder::default()
                    .make()
                    .expect("cannot make an executor")
                    .run(async move {
                        let quorum = match Quorum::start(config, Strings::default()).await {
                            Ok(quorum) => quorum,
                            Err(e) => {
                                started_tx.send(Err(format!("{e:#}"))).unwrap();
                                return;
                            }
                        };
                        quorum.set_request_handler(Rc::new(ProposeHandler(Rc::downgrade(&quorum))));
                        started_tx.send(Ok(())).unwrap();
                        while let Some(job) = incoming.next().await {
                            job(quorum.clone()).await;
                        }
                        quorum.shutdown().await;
                    })
            })
            .unwrap();
        started_rx
            .recv_timeout(WAIT)
            .expect("node did not start in time")
            .unwrap_or_else(|e| panic!("node {id} failed to start: {e}"));
        Node { id, jobs, thread }
    }

    /// Runs `f` on the node's executor and returns its result.
    fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(Rc<Quorum<Strings>>) -> LocalBoxFuture<'static, R> + Send + 'static,
    ) -> R {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let job: Job = Box::new(move |quorum| {
            Box::pin(async move {
                let _ = tx.send(f(quorum).await);
            })
        });
        futures::executor::block_on(self.jobs.clone().send(job)).expect("node thread is gone");
        rx.recv_timeout(WAIT).expect("node did not answer in time")
    }

    fn entries(&self) -> Vec<String> {
        self.run(|q| Box::pin(async move { q.with_state(|s| s.entries.clone()) }))
    }

    fn leader(&self) -> Option<u64> {
        self.run(|q| Box::pin(async move { q.leader_id() }))
    }

    fn is_leader(&self) -> bool {
        self.run(|q| Box::pin(async move { q.is_leader() }))
    }

    fn propose(&self, entry: &str) -> Result<u64, ProposeError> {
        let entry = entry.as_bytes().to_vec();
        self.run(move |q| Box::pin(async move { q.propose(entry).await }))
    }

    fn call(&self, request: &str) -> Result<String, CallError> {
        let request = request.as_bytes().to_vec();
        self.run(move |q| {
            Box::pin(async move {
                q.call_leader(request, Duration::from_secs(10))
                    .await
                    .map(|answer| String::from_utf8(answer).unwrap())
            })
        })
    }

    /// Shuts the quorum down (flushing its storage) and joins the thread.
    fn stop(self) {
        drop(self.jobs);
        self.thread.join().expect("node thread panicked");
    }
}

fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn addr(port: u16) -> String {
    format!("127.0.0.1:{port}")
}

/// Test timings: ticks short enough for a quick suite, elections slow enough not to
/// flap on a loaded two-core machine.
fn config(
    id: u64,
    voters: &[(u64, u16)],
    learners: &[(u64, u16)],
    dir: &Path,
    snapshot_every: u64,
) -> QuorumConfig {
    let own = voters
        .iter()
        .chain(learners)
        .find(|(node, _)| *node == id)
        .unwrap()
        .1;
    let listed = |nodes: &[(u64, u16)]| nodes.iter().map(|(n, p)| (*n, addr(*p))).collect();
    QuorumConfig {
        voters: listed(voters),
        learners: listed(learners),
        listen: Some(SocketAddr::from(([127, 0, 0, 1], own))),
        // Each node connects from its own loopback address, as behind a proxy.
        bind_address: Some(format!("127.0.1.{id}").parse().unwrap()),
        tick: Duration::from_millis(25),
        election_ticks: 20,
        heartbeat_ticks: 2,
        snapshot_every,
        max_entry_bytes: 64 << 10,
        ..QuorumConfig::single(id, dir.join(format!("node-{id}")))
    }
}

/// Waits until every node agrees on one leader among `voters`, and returns it.
fn agreed_leader(nodes: &[&Node], voters: &[u64]) -> u64 {
    let mut leader = None;
    wait_until("the nodes agree on a leader", || {
        let seen: Vec<Option<u64>> = nodes.iter().map(|n| n.leader()).collect();
        leader = seen[0];
        leader.is_some_and(|l| voters.contains(&l))
            && seen.iter().all(|s| *s == leader)
            && nodes
                .iter()
                .any(|n| n.id == leader.unwrap() && n.is_leader())
    });
    leader.unwrap()
}

fn all(nodes: &[Option<Node>]) -> Vec<&Node> {
    nodes.iter().flatten().collect()
}

fn wait_same_entries(nodes: &[&Node], expected: &[String]) {
    for node in nodes {
        wait_until(&format!("node {} applied every entry", node.id), || {
            node.entries() == expected
        });
    }
}

#[test]
fn three_voters_and_a_learner_replicate_fail_over_and_catch_up() {
    let dir = tempfile::tempdir().unwrap();
    let voters: Vec<(u64, u16)> = (1..=3).map(|id| (id, free_port())).collect();
    let learners = [(4, free_port())];
    let voter_ids = [1, 2, 3];
    let snapshot_every = 5;
    let make = |id| config(id, &voters, &learners, dir.path(), snapshot_every);
    let mut nodes: Vec<Option<Node>> = (1..=4).map(|id| Some(Node::start(make(id)))).collect();

    let leader = agreed_leader(&all(&nodes), &voter_ids);
    let leader_node = nodes[leader as usize - 1].as_ref().unwrap();
    let mut expected = Vec::new();
    let mut last_index = 0;
    for k in 0..6 {
        let entry = format!("a{k}");
        let index = leader_node.propose(&entry).unwrap();
        assert!(index > last_index, "index {index} after {last_index}");
        last_index = index;
        expected.push(entry);
    }
    // Followers and the learner go through the leader's request handler.
    for node in all(&nodes).into_iter().filter(|n| n.id != leader) {
        assert_eq!(
            node.propose("direct"),
            Err(ProposeError::NotLeader {
                leader: Some(leader)
            })
        );
        let entry = format!("b{}", node.id);
        let answer = node.call(&entry).unwrap();
        let index: u64 = answer
            .parse()
            .unwrap_or_else(|_| panic!("handler said {answer}"));
        assert!(index > last_index);
        last_index = index;
        expected.push(entry);
    }
    wait_same_entries(&all(&nodes), &expected);
    assert!(!nodes[3].as_ref().unwrap().is_leader());

    // The leader goes away: the other two voters elect a new one and keep going, far
    // enough to compact past everything the stopped node holds.
    let stopped = nodes[leader as usize - 1].take().unwrap();
    let stopped_entries = stopped.entries();
    stopped.stop();
    let new_leader = agreed_leader(&all(&nodes), &voter_ids);
    assert_ne!(new_leader, leader);
    let new_leader_node = nodes[new_leader as usize - 1].as_ref().unwrap();
    for k in 0..3 * snapshot_every {
        let entry = format!("c{k}");
        new_leader_node.propose(&entry).unwrap();
        expected.push(entry);
    }
    for node in all(&nodes).into_iter().filter(|n| n.id != new_leader) {
        let entry = format!("d{}", node.id);
        node.call(&entry).unwrap().parse::<u64>().unwrap();
        expected.push(entry);
    }
    wait_same_entries(&all(&nodes), &expected);
    let compacted_to = new_leader_node.run(|q| Box::pin(async move { q.snapshot_index() }));
    let stopped_applied = last_index;
    assert!(
        compacted_to > stopped_applied,
        "the leader compacted to {compacted_to}, not past {stopped_applied}"
    );

    // The stopped node restarts from its data dir with what it had, and can only catch up
    // through the leader's snapshot.
    let restarted = Node::start(make(leader));
    let restored = restarted.entries();
    assert!(
        restored.starts_with(&stopped_entries) || restored == expected,
        "restarted with {restored:?}, had {stopped_entries:?}"
    );
    nodes[leader as usize - 1] = Some(restarted);
    wait_same_entries(&all(&nodes), &expected);
    let restarted = nodes[leader as usize - 1].as_ref().unwrap();
    assert!(restarted.run(|q| Box::pin(async move { q.snapshot_index() })) > stopped_applied);

    // The learner followed everything and never led.
    let learner = nodes[3].as_ref().unwrap();
    assert!(!learner.is_leader());
    assert_ne!(learner.leader(), Some(4));
    for node in nodes.into_iter().flatten() {
        node.stop();
    }
}

#[test]
fn a_single_voter_leads_at_once_and_restores_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let make = || QuorumConfig {
        snapshot_every: 10,
        max_entry_bytes: 1024,
        ..QuorumConfig::single(7, dir.path().join("meta"))
    };
    let node = Node::start(make());
    assert!(node.run(|q| Box::pin(async move { q.is_leader() && q.leader_id() == Some(7) })));
    let expected: Vec<String> = (0..25).map(|k| format!("e{k}")).collect();
    for entry in &expected {
        node.propose(entry).unwrap();
    }
    assert_eq!(node.propose(&"x".repeat(1025)), Err(ProposeError::TooLarge));
    assert_eq!(node.propose(""), Err(ProposeError::Empty));
    let answer = node.call("via-call").unwrap();
    assert!(answer.parse::<u64>().is_ok(), "handler said {answer}");
    let mut expected = expected;
    expected.push("via-call".into());
    assert_eq!(node.entries(), expected);
    assert!(node.run(|q| Box::pin(async move { q.snapshot_index() })) >= 20);
    node.stop();

    let node = Node::start(make());
    assert!(node.run(|q| Box::pin(async move { q.is_leader() })));
    assert_eq!(node.entries(), expected);
    node.propose("after-restart").unwrap();
    expected.push("after-restart".into());
    assert_eq!(node.entries(), expected);
    node.stop();
}

#[test]
fn garbage_on_the_peer_port_closes_only_that_connection() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let node = Node::start(QuorumConfig {
        listen: Some(SocketAddr::from(([127, 0, 0, 1], port))),
        ..QuorumConfig::single(1, dir.path().join("meta"))
    });
    let closed_after = |bytes: &[u8]| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.write_all(bytes).unwrap();
        let mut buf = [0u8; 64];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            other => panic!("connection not closed after {bytes:?}: {other:?}"),
        }
    };
    // An HTTP request reads as a frame length far beyond the limit.
    closed_after(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    // A well-sized frame of an unknown kind.
    closed_after(&[0, 0, 0, 2, 9, 1, 2]);
    // A raft frame that is not a raft message.
    closed_after(&[0, 0, 0, 3, 1, 0xff, 0xff, 0xff]);

    let first = node.propose("still-here").unwrap();
    assert_eq!(node.propose("and-here"), Ok(first + 1));
    assert_eq!(node.entries(), ["still-here", "and-here"]);
    node.stop();
}

#[test]
fn without_a_majority_there_is_no_leader_and_calls_time_out() {
    let dir = tempfile::tempdir().unwrap();
    let voters: Vec<(u64, u16)> = (1..=3).map(|id| (id, free_port())).collect();
    let node = Node::start(config(1, &voters, &[], dir.path(), 100));
    // Several election timeouts pass without a leader.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(node.leader(), None);
    assert_eq!(
        node.propose("lonely"),
        Err(ProposeError::NotLeader { leader: None })
    );
    let outcome = node.run(|q| {
        Box::pin(async move {
            q.call_leader(b"lonely".to_vec(), Duration::from_millis(300))
                .await
        })
    });
    assert_eq!(outcome, Err(CallError::Timeout));
    node.stop();
}
