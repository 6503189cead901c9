//! A cluster of real `corelog` brokers on 127.0.0.1 for replication tests, with a fault
//! proxy in front of every broker's raft port and replication listener (see
//! fault_proxy.rs), so a test can kill, pause, isolate and slow brokers.
//!
//! Clients (the tests) talk to each broker's Kafka port directly; only broker-to-broker
//! traffic passes the proxies. Broker n binds its outbound inter-broker connections to
//! 127.0.1.n, which is how a proxy tells the brokers apart.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use corelog_client::admin::NewTopic;
use corelog_client::{Client, Options, PartitionInfo, TopicInfo, Topics};

use super::fault_proxy::{FaultProxy, Source};
use super::{free_addr, Broker};

/// Bounds every wait on the cluster (a leader elected, the ISR grown back).
pub const CLUSTER_TIMEOUT: Duration = Duration::from_secs(60);
/// Bounds connecting to a broker and each request: a SIGSTOPped broker accepts
/// connections (the kernel does) and never answers.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Run {
    Running,
    /// SIGSTOPped.
    Paused,
    /// Killed (or stopped) and not restarted.
    Down,
}

struct Node {
    broker: Broker,
    /// In front of the broker's raft port: what the other voters dial.
    controller: FaultProxy,
    /// In front of the broker's inter-broker Kafka listener: what followers fetch from.
    replication: FaultProxy,
    run: Run,
}

impl Node {
    fn proxies(&self) -> [&FaultProxy; 2] {
        [&self.controller, &self.replication]
    }
}

pub struct Cluster {
    /// Broker n at index n - 1.
    nodes: Vec<Node>,
    /// Brokers cut off from all others by `isolate`, until `heal_all`: their view of the
    /// cluster is stale, so metadata is not asked of them.
    isolated: BTreeSet<i32>,
}

impl Cluster {
    /// Starts `brokers` brokers of `cores_per_broker` shards, every one a controller
    /// voter, with short failure detection (and RF 3, min ISR 2 defaults), plus
    /// `extra` `--set` settings. Returns once every broker answers ApiVersions.
    pub fn start(brokers: usize, cores_per_broker: usize, extra: &[&str]) -> Cluster {
        Cluster::start_each(brokers, cores_per_broker, extra, |_| Vec::new())
    }

    /// As [`Cluster::start`], with broker n also given the settings `each(n)` (a rack).
    pub fn start_each(
        brokers: usize,
        cores_per_broker: usize,
        extra: &[&str],
        each: impl Fn(i32) -> Vec<String>,
    ) -> Cluster {
        assert!((1..=9).contains(&brokers), "node ids are 1..=9");
        let raft: Vec<SocketAddr> = (0..brokers).map(|_| free_addr()).collect();
        let inter_broker: Vec<SocketAddr> = (0..brokers).map(|_| free_addr()).collect();
        let controllers: Vec<FaultProxy> = raft.iter().map(|a| FaultProxy::start(*a)).collect();
        let replications: Vec<FaultProxy> =
            inter_broker.iter().map(|a| FaultProxy::start(*a)).collect();
        let voters = controllers
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{}@{}", i + 1, p.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes = Vec::with_capacity(brokers);
        for (i, (controller, replication)) in controllers.into_iter().zip(replications).enumerate()
        {
            let n = i + 1;
            let mut settings = vec![
                format!("node.id={n}"),
                format!("controller.quorum.voters={voters}"),
                format!("controller.listen={}", raft[i]),
                format!("inter.broker.listen={}", inter_broker[i]),
                format!("inter.broker.advertised={}", replication.addr()),
                format!("inter.broker.bind.address={}", Source::broker_ip(n as u8)),
                "broker.session.timeout.ms=2000".into(),
                "broker.heartbeat.interval.ms=300".into(),
                "replica.lag.time.max.ms=2000".into(),
                "default.replication.factor=3".into(),
                "min.insync.replicas=2".into(),
                "offsets.topic.replication.factor=3".into(),
            ];
            settings.extend(extra.iter().map(|s| s.to_string()));
            settings.extend(each(n as i32));
            let settings: Vec<&str> = settings.iter().map(String::as_str).collect();
            nodes.push(Node {
                broker: Broker::new(&format!("broker {n}"), cores_per_broker, &settings),
                controller,
                replication,
                run: Run::Down,
            });
        }
        let mut cluster = Cluster {
            nodes,
            isolated: BTreeSet::new(),
        };
        cluster.start_all();
        cluster
    }

    /// Kafka addresses of every broker, as a client bootstraps from.
    pub fn bootstrap(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.broker.addr.to_string())
            .collect()
    }

    pub fn data_dir(&self, n: i32) -> &Path {
        self.node(n).broker.data_dir()
    }

    /// Broker n's Kafka address, for a raw protocol client.
    pub fn kafka_addr(&self, n: i32) -> SocketAddr {
        self.node(n).broker.addr
    }

    pub fn broker_ids(&self) -> Vec<i32> {
        (1..=self.nodes.len() as i32).collect()
    }

    fn node(&self, n: i32) -> &Node {
        &self.nodes[usize::try_from(n - 1).expect("node ids start at 1")]
    }

    fn node_mut(&mut self, n: i32) -> &mut Node {
        &mut self.nodes[usize::try_from(n - 1).expect("node ids start at 1")]
    }

    /// Running, not paused and not isolated: its answers are current.
    fn reachable(&self, n: i32) -> bool {
        self.node(n).run == Run::Running && !self.isolated.contains(&n)
    }

    /// A client bootstrapping from the reachable brokers (the others last).
    pub fn client(&self) -> Client {
        let mut order: Vec<i32> = self.broker_ids();
        order.sort_by_key(|n| !self.reachable(*n));
        let addrs: Vec<String> = order
            .iter()
            .map(|n| self.node(*n).broker.addr.to_string())
            .collect();
        connect(&addrs).expect("no broker of the cluster answers")
    }

    /// Creates a topic through any reachable broker and waits until every partition has
    /// a leader.
    pub fn create_topic(&self, name: &str, partitions: i32, replication_factor: i16) {
        let topic = NewTopic {
            name: name.into(),
            partitions,
            replication_factor,
            configs: Vec::new(),
        };
        self.client()
            .create_topic(&topic, false)
            .unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        for p in 0..partitions {
            self.wait_for_leader(name, p);
        }
    }

    /// The topic as broker `n` describes it, if `n` answers and knows it.
    pub fn topic_seen_by(&self, n: i32, topic: &str) -> Option<TopicInfo> {
        let mut client = connect(&[self.node(n).broker.addr.to_string()]).ok()?;
        let names = [topic.to_string()];
        let metadata = client
            .metadata(Topics::Named {
                names: &names,
                auto_create: false,
            })
            .ok()?;
        metadata.topics.into_iter().find(|t| t.name == topic)
    }

    /// A partition as the first reachable broker that knows it describes it.
    pub fn partition(&self, topic: &str, partition: i32) -> Option<PartitionInfo> {
        self.broker_ids()
            .into_iter()
            .filter(|n| self.reachable(*n))
            .find_map(|n| {
                self.topic_seen_by(n, topic)?
                    .partitions
                    .into_iter()
                    .find(|p| p.partition == partition)
            })
    }

    /// The current leader, if metadata names one that is reachable.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<i32> {
        let leader = self.partition(topic, partition)?.leader;
        (leader > 0 && self.reachable(leader)).then_some(leader)
    }

    /// Waits (bounded) until the partition has a reachable leader; returns its node id.
    pub fn wait_for_leader(&self, topic: &str, partition: i32) -> i32 {
        self.wait_until(&format!("a leader of {topic}-{partition}"), || {
            self.leader_of(topic, partition)
        })
    }

    /// Connections open to broker `n`'s replication listener (through its proxy).
    pub fn replication_connections(&self, n: i32) -> usize {
        self.node(n).replication.open_connections()
    }

    /// Waits (bounded) until every partition of `topic` has every broker in its ISR.
    pub fn wait_for_full_isr(&self, topic: &str, partitions: i32) {
        let everyone: BTreeSet<i32> = self.broker_ids().into_iter().collect();
        for p in 0..partitions {
            self.wait_until(&format!("a full ISR of {topic}-{p}"), || {
                let info = self.partition(topic, p)?;
                let isr: BTreeSet<i32> = info.isr.iter().copied().collect();
                (isr == everyone && info.leader > 0).then_some(())
            });
        }
    }

    /// Polls `check` until it gives a value; panics naming `what` after CLUSTER_TIMEOUT.
    pub fn wait_until<T>(&self, what: &str, check: impl FnMut() -> Option<T>) -> T {
        self.wait_within(CLUSTER_TIMEOUT, what, check)
    }

    /// Polls `check` until it gives a value; panics naming `what` after `bound`.
    pub fn wait_within<T>(
        &self,
        bound: Duration,
        what: &str,
        mut check: impl FnMut() -> Option<T>,
    ) -> T {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(value) = check() {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within {bound:?} (brokers: {})",
                self.describe_state()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn describe_state(&self) -> String {
        self.broker_ids()
            .iter()
            .map(|n| {
                let cut = if self.isolated.contains(n) {
                    ", isolated"
                } else {
                    ""
                };
                format!("{n}: {:?}{cut}", self.node(*n).run)
            })
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn kill9(&mut self, n: i32) {
        let node = self.node_mut(n);
        node.broker.kill9();
        node.run = Run::Down;
    }

    /// SIGTERM to broker n (a controlled shutdown); panics unless it exits cleanly.
    pub fn stop(&mut self, n: i32) {
        let node = self.node_mut(n);
        assert_eq!(node.run, Run::Running, "broker {n}");
        assert!(node.broker.stop_gracefully(), "broker {n} stopped badly");
        node.run = Run::Down;
    }

    /// The active controller as the reachable brokers report it, when one reachable broker
    /// is named.
    pub fn active_controller(&self) -> Option<i32> {
        self.broker_ids()
            .into_iter()
            .filter(|n| self.reachable(*n))
            .find_map(|n| {
                let mut client = connect(&[self.node(n).broker.addr.to_string()]).ok()?;
                let controller = client.describe_cluster().ok()?.controller_id;
                (controller > 0 && self.reachable(controller)).then_some(controller)
            })
    }

    pub fn sigstop(&mut self, n: i32) {
        let node = self.node_mut(n);
        assert_eq!(node.run, Run::Running, "broker {n}");
        node.broker.signal(libc::SIGSTOP);
        node.run = Run::Paused;
    }

    pub fn sigcont(&mut self, n: i32) {
        let node = self.node_mut(n);
        assert_eq!(node.run, Run::Paused, "broker {n}");
        node.broker.signal(libc::SIGCONT);
        node.run = Run::Running;
    }

    /// Starts broker n again on its data dir (kill -9 first if it runs) and waits until it
    /// answers.
    pub fn restart(&mut self, n: i32) {
        let node = self.node_mut(n);
        node.broker.kill9();
        node.broker.start_again();
        node.run = Run::Running;
    }

    /// SIGTERM to every running broker (paused ones are resumed first); panics unless each
    /// exits cleanly.
    pub fn stop_all(&mut self) {
        for (i, node) in self.nodes.iter_mut().enumerate() {
            if node.run == Run::Paused {
                node.broker.signal(libc::SIGCONT);
            }
            if node.run != Run::Down {
                assert!(
                    node.broker.stop_gracefully(),
                    "broker {} stopped badly",
                    i + 1
                );
                node.run = Run::Down;
            }
        }
    }

    /// Starts every broker that is down, together (a broker may wait for a quorum of
    /// voters before it answers), and waits until each answers.
    pub fn start_all(&mut self) {
        for node in &mut self.nodes {
            if node.run == Run::Down {
                node.broker.launch();
            }
        }
        for node in &mut self.nodes {
            if node.run == Run::Down {
                node.broker.wait_ready();
                node.run = Run::Running;
            }
        }
        self.wait_for_membership();
    }

    /// Waits until every running broker lists all running brokers as live, under one
    /// cluster id: each has registered and been unfenced, and all share the cluster's
    /// metadata.
    fn wait_for_membership(&self) {
        let running: Vec<i32> = self
            .broker_ids()
            .into_iter()
            .filter(|&n| self.node(n).run == Run::Running)
            .collect();
        self.wait_until("every broker registered, under one cluster id", || {
            let mut cluster_ids = std::collections::BTreeSet::new();
            for &n in &running {
                let mut client = connect(&[self.node(n).broker.addr.to_string()]).ok()?;
                let metadata = client.metadata(Topics::Named {
                    names: &[],
                    auto_create: false,
                });
                let metadata = metadata.ok()?;
                let mut live: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id).collect();
                live.sort_unstable();
                if live != running {
                    return None;
                }
                cluster_ids.insert(metadata.cluster_id?);
            }
            (cluster_ids.len() == 1).then_some(())
        });
    }

    /// kill -9 of every broker, then all start again.
    pub fn restart_all(&mut self) {
        for n in self.broker_ids() {
            self.kill9(n);
        }
        self.start_all();
    }

    /// Heals every network fault, resumes paused brokers and restarts killed ones.
    pub fn recover_all(&mut self) {
        self.heal_all();
        for n in self.broker_ids() {
            if self.node(n).run == Run::Paused {
                self.sigcont(n);
            }
        }
        self.start_all();
    }

    /// Cuts every link between broker n and the others, both ways (its Kafka port stays
    /// open to clients, as a broker behind a network partition with its clients).
    pub fn isolate(&mut self, n: i32) {
        for m in self.broker_ids() {
            if m != n {
                self.cut_link(n, m);
            }
        }
        self.isolated.insert(n);
    }

    /// Cuts the raft and replication traffic between brokers a and b, both ways.
    pub fn cut_link(&mut self, a: i32, b: i32) {
        for (from, to) in [(a, b), (b, a)] {
            for proxy in self.node(to).proxies() {
                proxy.cut(Source::Broker(from as u8));
            }
        }
    }

    /// Delays every chunk between brokers a and b by `ms`, both ways.
    pub fn delay_link(&self, a: i32, b: i32, ms: u64) {
        for (from, to) in [(a, b), (b, a)] {
            for proxy in self.node(to).proxies() {
                proxy.delay(Source::Broker(from as u8), Duration::from_millis(ms));
            }
        }
    }

    pub fn heal_all(&mut self) {
        for node in &self.nodes {
            for proxy in node.proxies() {
                proxy.heal();
            }
        }
        self.isolated.clear();
    }
}

/// A client of the first of `addrs` that answers.
pub fn connect(addrs: &[String]) -> corelog_client::Result<Client> {
    Client::connect(
        addrs,
        Options {
            timeout: REQUEST_TIMEOUT,
            client_id: "corelog-cluster-test".into(),
        },
    )
}
