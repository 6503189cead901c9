//! KIP-227 incremental fetch sessions against the real broker binary, in raw Fetch v12
//! (topics by name) and v13+ (topics by id).

mod common;

use std::time::{Duration, Instant};

use common::{batch, decode_values, Broker, Client};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
const FETCH_SESSION_TOPIC_ID_ERROR: i16 = 106;

/// How a request names its topic: by name (v12) or by id (v13+).
#[derive(Clone, Copy)]
struct Topic<'a> {
    name: &'a str,
    id: Uuid,
    version: i16,
}

impl Topic<'_> {
    fn fetch_topic(&self, partitions: &[(i32, i64)]) -> FetchTopic {
        let topic = FetchTopic::default().with_partitions(
            partitions
                .iter()
                .map(|&(partition, offset)| {
                    FetchPartition::default()
                        .with_partition(partition)
                        .with_fetch_offset(offset)
                        .with_partition_max_bytes(1 << 20)
                })
                .collect(),
        );
        if self.version >= 13 {
            topic.with_topic_id(self.id)
        } else {
            topic.with_topic(name(self.name))
        }
    }

    fn forgotten(&self, partitions: &[i32]) -> ForgottenTopic {
        let forgotten = ForgottenTopic::default().with_partitions(partitions.to_vec());
        if self.version >= 13 {
            forgotten.with_topic_id(self.id)
        } else {
            forgotten.with_topic(name(self.name))
        }
    }

    /// One fetch of this session metadata: `partitions` added or updated, `forgotten`
    /// removed, waiting up to `max_wait_ms` for a byte.
    fn fetch(
        &self,
        client: &mut Client,
        (session_id, epoch): (i32, i32),
        partitions: &[(i32, i64)],
        forgotten: &[i32],
        max_wait_ms: i32,
    ) -> FetchResponse {
        let request = FetchRequest::default()
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(if partitions.is_empty() {
                vec![]
            } else {
                vec![self.fetch_topic(partitions)]
            })
            .with_forgotten_topics_data(if forgotten.is_empty() {
                vec![]
            } else {
                vec![self.forgotten(forgotten)]
            });
        client.call(self.version, &request)
    }
}

fn name(topic: &str) -> TopicName {
    TopicName(StrBytes::from_string(topic.into()))
}

fn topic_id(client: &mut Client, topic: &str) -> Uuid {
    let request = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(name(topic))),
    ]));
    client.call(12, &request).topics[0].topic_id
}

/// (partition, values) of each partition in a response, in response order.
fn answered(response: &FetchResponse) -> Vec<(i32, Vec<String>)> {
    assert_eq!(response.error_code, 0, "top-level error");
    response
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .map(|p| {
            assert_eq!(p.error_code, 0, "partition {} error", p.partition_index);
            let values = decode_values(p.records.clone().unwrap_or_default());
            (
                p.partition_index,
                values.into_iter().map(|(_, v)| v).collect(),
            )
        })
        .collect()
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|v| v.to_string()).collect()
}

/// The whole session life in one version: create, quiet incremental, new data, long poll
/// woken by a partition the request did not name, forget, errors, close.
fn session_life(version: i16) {
    let broker = Broker::start(1, &[]);
    let mut client = broker.client();
    let topic_name = format!("sessions-v{version}");
    client.create_topic(&topic_name, 3);
    let topic = Topic {
        name: &topic_name,
        id: topic_id(&mut client, &topic_name),
        version,
    };
    assert_eq!(client.produce(&topic_name, 0, 1, batch(&["a0"])).0, 0);

    // A full fetch asking for a session gets one, and every partition.
    let all = [(0, 0), (1, 0), (2, 0)];
    let full = topic.fetch(&mut client, (0, 0), &all, &[], 0);
    let id = full.session_id;
    assert!(id > 0, "no session created");
    assert_eq!(
        answered(&full),
        vec![(0, strings(&["a0"])), (1, vec![]), (2, vec![])]
    );

    // Nothing new: the incremental answer has no partitions at all.
    let quiet = topic.fetch(&mut client, (id, 1), &[(0, 1)], &[], 10);
    assert_eq!(quiet.session_id, id);
    assert_eq!(answered(&quiet), vec![]);

    // New data on a partition the request does not mention still comes back.
    assert_eq!(client.produce(&topic_name, 1, 1, batch(&["b0"])).0, 0);
    let news = topic.fetch(&mut client, (id, 2), &[], &[], 10);
    assert_eq!(answered(&news), vec![(1, strings(&["b0"]))]);

    // A long poll on the session wakes for an append to any session partition.
    let started = Instant::now();
    let sent = client.send(
        version,
        &FetchRequest::default()
            .with_max_wait_ms(15_000)
            .with_min_bytes(1)
            .with_max_bytes(50 << 20)
            .with_session_id(id)
            .with_session_epoch(3)
            .with_topics(vec![topic.fetch_topic(&[(1, 1)])]),
    );
    std::thread::sleep(Duration::from_millis(200));
    let mut producer = broker.client();
    assert_eq!(producer.produce(&topic_name, 2, 1, batch(&["c0"])).0, 0);
    let (correlation, woken) = client.receive::<FetchRequest>(version);
    assert_eq!(correlation, sent);
    assert_eq!(answered(&woken), vec![(2, strings(&["c0"]))]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the long poll was not woken by the append"
    );

    // A forgotten partition is no longer fetched: its new data does not come back.
    let forget = topic.fetch(&mut client, (id, 4), &[(2, 1)], &[1], 10);
    assert_eq!(answered(&forget), vec![]);
    assert_eq!(producer.produce(&topic_name, 1, 1, batch(&["b1"])).0, 0);
    assert_eq!(producer.produce(&topic_name, 0, 1, batch(&["a1"])).0, 0);
    let after_forget = topic.fetch(&mut client, (id, 5), &[], &[], 10);
    assert_eq!(answered(&after_forget), vec![(0, strings(&["a1"]))]);

    // Errors are top-level, with no partitions, and leave the session as it was.
    let wrong_epoch = topic.fetch(&mut client, (id, 99), &[], &[], 0);
    assert_eq!(wrong_epoch.error_code, INVALID_FETCH_SESSION_EPOCH);
    assert!(wrong_epoch.responses.is_empty());
    let unknown = topic.fetch(&mut client, (id ^ 0x5555, 1), &[], &[], 0);
    assert_eq!(unknown.error_code, FETCH_SESSION_ID_NOT_FOUND);
    assert!(unknown.responses.is_empty());
    let other = Topic {
        version: if version >= 13 { 12 } else { 13 },
        ..topic
    };
    let mixed = other.fetch(&mut client, (id, 6), &[], &[], 0);
    assert_eq!(mixed.error_code, FETCH_SESSION_TOPIC_ID_ERROR);

    // The session is still there and still expects epoch 6; another connection may use it.
    let mut second = broker.client();
    let resumed = topic.fetch(&mut second, (id, 6), &[(0, 2)], &[], 10);
    assert_eq!(resumed.session_id, id);
    assert_eq!(answered(&resumed), vec![]);

    // Epoch -1 closes it: a sessionless full answer, then the id is unknown.
    let closed = topic.fetch(&mut client, (id, -1), &[(0, 0)], &[], 0);
    assert_eq!(closed.session_id, 0);
    assert_eq!(answered(&closed), vec![(0, strings(&["a0", "a1"]))]);
    let gone = topic.fetch(&mut client, (id, 7), &[], &[], 0);
    assert_eq!(gone.error_code, FETCH_SESSION_ID_NOT_FOUND);
}

#[test]
fn session_by_topic_names_v12() {
    session_life(12);
}

#[test]
fn session_by_topic_ids_v13_and_later() {
    session_life(13);
}

#[test]
fn full_cache_evicts_a_smaller_session_or_serves_without_one() {
    let broker = Broker::start(1, &["max.incremental.fetch.session.cache.slots=1"]);
    let mut client = broker.client();
    client.create_topic("evict", 3);
    let topic = Topic {
        name: "evict",
        id: Uuid::nil(),
        version: 12,
    };
    let two = topic.fetch(&mut client, (0, 0), &[(0, 0), (1, 0)], &[], 0);
    assert!(two.session_id > 0);
    // No room, and a session of one partition does not displace one of two.
    let one = topic.fetch(&mut client, (0, 0), &[(0, 0)], &[], 0);
    assert_eq!(one.session_id, 0);
    assert_eq!(answered(&one).len(), 1);
    // A larger session does.
    let three = topic.fetch(&mut client, (0, 0), &[(0, 0), (1, 0), (2, 0)], &[], 0);
    assert!(three.session_id > 0);
    let evicted = topic.fetch(&mut client, (two.session_id, 1), &[], &[], 0);
    assert_eq!(evicted.error_code, FETCH_SESSION_ID_NOT_FOUND);
    let kept = topic.fetch(&mut client, (three.session_id, 1), &[], &[], 0);
    assert_eq!(kept.error_code, 0);
}

#[test]
fn no_sessions_when_the_cache_has_no_slots() {
    let broker = Broker::start(1, &["max.incremental.fetch.session.cache.slots=0"]);
    let mut client = broker.client();
    client.create_topic("nocache", 1);
    let topic = Topic {
        name: "nocache",
        id: Uuid::nil(),
        version: 12,
    };
    let full = topic.fetch(&mut client, (0, 0), &[(0, 0)], &[], 0);
    assert_eq!(full.session_id, 0);
    assert_eq!(answered(&full), vec![(0, vec![])]);
}
