//! `process.roles`: a controller-only node runs the metadata quorum alone and serves no
//! clients; broker-only nodes receive the metadata log as raft learners and carry the
//! partitions.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::cluster::connect;
use common::{batch, decode_values, free_addr, Broker};
use corelog_client::admin::NewTopic;
use corelog_client::Topics;

const DEADLINE: Duration = Duration::from_secs(60);

#[test]
fn a_controller_only_node_and_two_broker_only_nodes_make_a_cluster() {
    let controller: SocketAddr = free_addr();
    let learners: Vec<SocketAddr> = (0..2).map(|_| free_addr()).collect();
    let voters = format!("controller.quorum.voters=1@{controller}");
    let learner_list = format!(
        "controller.quorum.learners=2@{},3@{}",
        learners[0], learners[1]
    );
    let common_settings = [
        voters.as_str(),
        learner_list.as_str(),
        "broker.session.timeout.ms=2000",
        "broker.heartbeat.interval.ms=300",
        "offsets.topic.replication.factor=2",
        "default.replication.factor=2",
        "min.insync.replicas=2",
    ];
    let settings = |node: i32, roles: &str, listen: SocketAddr| -> Vec<String> {
        let mut all: Vec<String> = common_settings.iter().map(|s| s.to_string()).collect();
        all.push(format!("node.id={node}"));
        all.push(format!("process.roles={roles}"));
        all.push(format!("controller.listen={listen}"));
        all
    };
    let start = |label: &str, settings: Vec<String>| {
        let refs: Vec<&str> = settings.iter().map(String::as_str).collect();
        let mut broker = Broker::new(label, 1, &refs);
        broker.launch();
        broker
    };
    let mut quorum = start("controller 1", settings(1, "controller", controller));
    let mut brokers = vec![
        start("broker 2", settings(2, "broker", learners[0])),
        start("broker 3", settings(3, "broker", learners[1])),
    ];
    for broker in &mut brokers {
        broker.wait_ready();
    }
    assert!(
        quorum.is_running(),
        "the controller exited:\n{}",
        quorum.log()
    );
    // The controller-only node serves no Kafka clients.
    assert!(TcpStream::connect(quorum.addr).is_err());

    let addrs: Vec<String> = brokers.iter().map(|b| b.addr.to_string()).collect();
    let mut client = connect(&addrs).unwrap();
    let live = wait_for(|| {
        let metadata = client.metadata(Topics::All).ok()?;
        let mut ids: Vec<i32> = metadata.brokers.iter().map(|b| b.node_id).collect();
        ids.sort_unstable();
        (ids == [2, 3]).then_some(ids)
    });
    assert_eq!(live, [2, 3], "only broker-role nodes are brokers");
    client
        .create_topic(
            &NewTopic {
                name: "roles".into(),
                partitions: 2,
                replication_factor: -1,
                configs: Vec::new(),
            },
            false,
        )
        .unwrap();
    let partitions = wait_for(|| {
        let names = ["roles".to_string()];
        let metadata = client
            .metadata(Topics::Named {
                names: &names,
                auto_create: false,
            })
            .ok()?;
        let topic = metadata.topics.into_iter().find(|t| t.name == "roles")?;
        topic
            .partitions
            .iter()
            .all(|p| p.leader > 0 && p.isr.len() == 2)
            .then_some(topic.partitions)
    });
    for partition in &partitions {
        let mut replicas = partition.replicas.clone();
        replicas.sort_unstable();
        assert_eq!(replicas, [2, 3]);
        // acks=all needs both replicas (min.insync.replicas=2): replication works.
        let leader = &brokers[(partition.leader - 2) as usize];
        let mut raw = leader.client();
        let (code, _) = raw.produce("roles", partition.partition, -1, batch(&["a", "b"]));
        assert_eq!(code, 0, "produce to partition {}", partition.partition);
        let (code, high_watermark, records) = raw.fetch("roles", partition.partition, 0, 1000);
        assert_eq!((code, high_watermark), (0, 2));
        let values: Vec<String> = decode_values(records).into_iter().map(|(_, v)| v).collect();
        assert_eq!(values, ["a", "b"]);
    }
    for broker in &mut brokers {
        assert!(broker.stop_gracefully(), "{}", broker.log());
    }
    assert!(quorum.stop_gracefully(), "{}", quorum.log());
}

fn wait_for<T>(mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "not within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
