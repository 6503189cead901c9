//! What clients see of a real three-broker cluster (common/cluster.rs), spoken to with
//! corelog-client's raw requests: leader hints in misdirected Produce and Fetch answers
//! (KIP-951), and consumers reading from followers in their rack (KIP-392).

mod common;

use common::cluster::{Cluster, REQUEST_TIMEOUT};
use common::{batch, decode_values, produce_request};
use corelog_client::kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use corelog_client::kafka_protocol::messages::{
    fetch_response, BrokerId, FetchRequest, FetchResponse, TopicName,
};
use corelog_client::kafka_protocol::protocol::StrBytes;
use corelog_client::{Connection, Options, PartitionInfo, TopicInfo};

const NOT_LEADER_OR_FOLLOWER: i16 = 6;
const FENCED_LEADER_EPOCH: i16 = 74;
const RACK_AWARE: &str =
    "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector";

fn connection(cluster: &Cluster, n: i32) -> Connection {
    let options = Options {
        timeout: REQUEST_TIMEOUT,
        client_id: "corelog-cluster-clients-test".into(),
    };
    let addr = address(cluster, n);
    Connection::open(&addr, &options).unwrap_or_else(|e| panic!("broker {n} at {addr}: {e}"))
}

fn address(cluster: &Cluster, n: i32) -> String {
    cluster.bootstrap()[(n - 1) as usize].clone()
}

/// Creates a one-partition topic and waits until its whole replica set is in sync.
fn create_topic(cluster: &Cluster, name: &str, replication_factor: i16) -> (TopicInfo, i32) {
    cluster.create_topic(name, 1, replication_factor);
    let leader = cluster.wait_until(&format!("a full ISR of {name}"), || {
        let info = cluster.partition(name, 0)?;
        let full = info.isr.len() == replication_factor as usize;
        (full && info.leader > 0).then_some(info.leader)
    });
    (cluster.topic_seen_by(leader, name).unwrap(), leader)
}

fn partition_info(cluster: &Cluster, topic: &str) -> PartitionInfo {
    cluster.partition(topic, 0).expect("the partition is known")
}

/// A consumer's fetch of partition 0 from `offset`, by name before v13 and by id after.
fn fetch_request(
    topic: &TopicInfo,
    version: i16,
    offset: i64,
    current_leader_epoch: i32,
    rack: &str,
) -> FetchRequest {
    let mut wanted = FetchTopic::default().with_partitions(vec![FetchPartition::default()
        .with_partition(0)
        .with_fetch_offset(offset)
        .with_current_leader_epoch(current_leader_epoch)
        .with_partition_max_bytes(1 << 20)]);
    if version >= 13 {
        wanted.topic_id = topic.topic_id;
    } else {
        wanted.topic = TopicName(StrBytes::from_string(topic.name.clone()));
    }
    let request = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![wanted]);
    if version >= 11 {
        request.with_rack_id(StrBytes::from_string(rack.into()))
    } else {
        request
    }
}

fn fetch(
    cluster: &Cluster,
    n: i32,
    version: i16,
    request: &FetchRequest,
) -> (FetchResponse, fetch_response::PartitionData) {
    let response = connection(cluster, n)
        .call(version, request)
        .unwrap_or_else(|e| panic!("Fetch v{version} from broker {n}: {e}"));
    let partition = response.responses[0].partitions[0].clone();
    (response, partition)
}

/// Checks a refused partition's hint and the response's endpoint of that leader.
fn assert_hint(
    cluster: &Cluster,
    what: &str,
    (leader_id, leader_epoch): (BrokerId, i32),
    endpoints: &[(BrokerId, String, i32)],
    leader: &PartitionInfo,
) {
    assert_eq!(
        (leader_id.0, leader_epoch),
        (leader.leader, leader.leader_epoch),
        "{what}: the hinted leader and epoch"
    );
    let (host, port) = address(cluster, leader.leader)
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse::<i32>().unwrap()))
        .unwrap();
    assert_eq!(
        endpoints,
        [(BrokerId(leader.leader), host, port)],
        "{what}: the leader's endpoint"
    );
}

/// (id, host, port) of a response's node endpoints: Produce and Fetch each have their own
/// endpoint type.
macro_rules! endpoints {
    ($response:expr) => {
        $response
            .node_endpoints
            .iter()
            .map(|e| (e.node_id, e.host.to_string(), e.port))
            .collect::<Vec<_>>()
    };
}

#[test]
fn misdirected_produce_and_fetch_name_the_leader_and_its_endpoint() {
    let mut cluster = Cluster::start(3, 1, &[]);
    let (topic, leader) = create_topic(&cluster, "hinted", 2);
    let info = partition_info(&cluster, "hinted");
    let follower = *info.replicas.iter().find(|id| **id != leader).unwrap();
    let outsider = *cluster
        .broker_ids()
        .iter()
        .find(|id| !info.replicas.contains(id))
        .unwrap();

    // Produce v12 (hints from v10) to a follower and to a broker without a replica.
    for n in [follower, outsider] {
        let request = produce_request("hinted", 0, 1, batch(&["misdirected"]));
        let response = connection(&cluster, n).call(12, &request).unwrap();
        let p = &response.responses[0].partition_responses[0];
        assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER, "produce to {n}");
        let hint = (p.current_leader.leader_id, p.current_leader.leader_epoch);
        let endpoints = endpoints!(response);
        assert_hint(
            &cluster,
            &format!("produce to {n}"),
            hint,
            &endpoints,
            &info,
        );
    }
    // Before v10 there is no hint to give.
    let request = produce_request("hinted", 0, 1, batch(&["old client"]));
    let old = connection(&cluster, outsider).call(9, &request).unwrap();
    let p = &old.responses[0].partition_responses[0];
    assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER);
    assert_eq!(p.current_leader.leader_id, BrokerId(-1), "no hint in v9");

    // Fetch v12 names the leader; v16 (by topic id) adds its endpoint.
    for version in [12, 16] {
        let request = fetch_request(&topic, version, 0, -1, "");
        let (response, p) = fetch(&cluster, outsider, version, &request);
        assert_eq!(p.error_code, NOT_LEADER_OR_FOLLOWER, "Fetch v{version}");
        let hint = (p.current_leader.leader_id, p.current_leader.leader_epoch);
        let endpoints = endpoints!(response);
        if version >= 16 {
            assert_hint(&cluster, "Fetch v16", hint, &endpoints, &info);
        } else {
            assert_eq!(
                (hint.0 .0, hint.1),
                (leader, info.leader_epoch),
                "Fetch v12"
            );
            assert!(endpoints.is_empty(), "no endpoints before Fetch v16");
        }
    }

    // After a failover, a fetch in the old epoch is fenced and told the new leader.
    cluster.kill9(leader);
    let new_info = cluster.wait_until("the follower leading", || {
        let info = cluster.partition("hinted", 0)?;
        (info.leader == follower).then_some(info)
    });
    assert!(new_info.leader_epoch > info.leader_epoch);
    let request = fetch_request(&topic, 16, 0, info.leader_epoch, "");
    let (response, p) = fetch(&cluster, follower, 16, &request);
    assert_eq!(p.error_code, FENCED_LEADER_EPOCH);
    let hint = (p.current_leader.leader_id, p.current_leader.leader_epoch);
    let endpoints = endpoints!(response);
    assert_hint(&cluster, "fenced Fetch v16", hint, &endpoints, &new_info);
    let request = produce_request("hinted", 0, 1, batch(&["after failover"]));
    let response = connection(&cluster, outsider).call(12, &request).unwrap();
    let p = &response.responses[0].partition_responses[0];
    let hint = (p.current_leader.leader_id, p.current_leader.leader_epoch);
    let endpoints = endpoints!(response);
    assert_hint(
        &cluster,
        "produce after failover",
        hint,
        &endpoints,
        &new_info,
    );
}

fn rack_of(n: i32) -> String {
    ["a", "b", "c"][(n - 1) as usize].to_string()
}

#[test]
fn rack_aware_leader_sends_consumers_to_an_in_sync_follower_in_their_rack() {
    let cluster = Cluster::start_each(3, 1, &[RACK_AWARE], |n| {
        vec![format!("broker.rack={}", rack_of(n))]
    });
    let (topic, leader) = create_topic(&cluster, "racked", 3);
    let info = partition_info(&cluster, "racked");
    let follower = *info.replicas.iter().find(|id| **id != leader).unwrap();
    let values: Vec<String> = (0..20).map(|i| format!("value-{i}")).collect();
    let refs: Vec<&str> = values.iter().map(String::as_str).collect();
    let response = connection(&cluster, leader)
        .call(9, &produce_request("racked", 0, -1, batch(&refs)))
        .unwrap();
    assert_eq!(response.responses[0].partition_responses[0].error_code, 0);

    // The leader sends a consumer of the follower's rack there, without records.
    let request = fetch_request(&topic, 11, 0, -1, &rack_of(follower));
    let (_, p) = fetch(&cluster, leader, 11, &request);
    assert_eq!(p.error_code, 0);
    assert_eq!(p.preferred_read_replica, BrokerId(follower));
    assert!(
        p.records.unwrap_or_default().is_empty(),
        "records from the leader"
    );
    // A consumer in the leader's own rack is served by the leader.
    let request = fetch_request(&topic, 11, 0, -1, &rack_of(leader));
    let (_, p) = fetch(&cluster, leader, 11, &request);
    assert_eq!(p.preferred_read_replica, BrokerId(-1));
    assert_eq!(decode_values(p.records.unwrap_or_default()).len(), 20);

    // The follower serves the consumer everything below its high watermark.
    let request = fetch_request(&topic, 11, 0, -1, &rack_of(follower));
    let read = cluster.wait_until("the follower serving every record", || {
        let (_, p) = fetch(&cluster, follower, 11, &request);
        assert_eq!(p.error_code, 0, "fetch from the follower");
        let read = decode_values(p.records.unwrap_or_default());
        (read.len() == values.len()).then_some(read)
    });
    let read: Vec<String> = read.into_iter().map(|(_, v)| v).collect();
    assert_eq!(read, values);
    // Past its high watermark there is nothing yet: an empty answer, not an error.
    let request = fetch_request(&topic, 11, values.len() as i64, -1, &rack_of(follower));
    let (_, p) = fetch(&cluster, follower, 11, &request);
    assert_eq!(p.error_code, 0);
    assert!(p.records.unwrap_or_default().is_empty());
    // Before v11 consumers read from leaders only.
    let request = fetch_request(&topic, 10, 0, -1, "");
    let (_, p) = fetch(&cluster, follower, 10, &request);
    assert_eq!(
        p.error_code, NOT_LEADER_OR_FOLLOWER,
        "Fetch v10 from a follower"
    );
}
