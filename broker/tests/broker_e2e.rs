//! End-to-end tests of the real broker binary over real sockets: protocol negotiation,
//! bad input, produce/fetch across shards, long poll, pipelining, durability.

mod common;

use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{
    batch, batch_with, decode_values, fetch_request, produce_request, without_assigned_fields,
    Broker, Client,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::Compression;

const CORRUPT_MESSAGE: i16 = 2;
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
const MESSAGE_TOO_LARGE: i16 = 10;
const INVALID_REQUIRED_ACKS: i16 = 21;
const UNSUPPORTED_VERSION: i16 = 35;
const TOPIC_ALREADY_EXISTS: i16 = 36;
const INVALID_PARTITIONS: i16 = 37;
const INVALID_REPLICATION_FACTOR: i16 = 38;
const INVALID_CONFIG: i16 = 40;
const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;

#[test]
fn api_versions_advertises_what_is_served_and_falls_back_to_v0() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.client();
    let response = client.call(
        3,
        &ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("t"))
            .with_client_software_version(StrBytes::from_static_str("1")),
    );
    assert_eq!(response.error_code, 0);
    let produce = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Produce as i16)
        .unwrap();
    assert_eq!((produce.min_version, produce.max_version), (3, 13));
    let fetch = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::Fetch as i16)
        .unwrap();
    assert_eq!((fetch.min_version, fetch.max_version), (4, 18));
    let join = response
        .api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::JoinGroup as i16)
        .unwrap();
    assert_eq!((join.min_version, join.max_version), (0, 9));
    assert!(
        !response
            .api_keys
            .iter()
            .any(|k| k.api_key == ApiKey::InitProducerId as i16),
        "idempotent producers are not served yet"
    );

    // A version from the future: the v0-format answer with our ranges.
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions as i16)
        .with_request_api_version(99)
        .with_correlation_id(7)
        .encode(&mut body, 1)
        .unwrap();
    client.send_raw(&body);
    let mut frame = client.read_frame().unwrap();
    let header = ResponseHeader::decode(&mut frame, 0).unwrap();
    assert_eq!(header.correlation_id, 7);
    let fallback = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(fallback.error_code, UNSUPPORTED_VERSION);
    assert!(fallback
        .api_keys
        .iter()
        .any(|k| k.api_key == ApiKey::Produce as i16));
}

#[test]
fn bad_frames_close_only_their_connection() {
    let broker = Broker::start(
        1,
        &["socket.request.max.bytes=65536", "message.max.bytes=1024"],
    );
    let mut healthy = broker.client();
    healthy.create_topic("t", 1);

    // Oversize frame: closed before the body is read.
    let mut oversize = broker.client();
    oversize.send_raw(&vec![0u8; 70_000]);
    assert!(oversize.is_closed_by_broker());

    // Unknown API key.
    let mut unknown = broker.client();
    unknown.send_raw(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
    assert!(unknown.is_closed_by_broker());

    // Unsupported version of a served API (Produce v2 used message format v0/v1).
    let mut old = broker.client();
    old.send_raw(&[0, ApiKey::Produce as u8, 0, 2, 0, 0, 0, 1, 0, 0]);
    assert!(old.is_closed_by_broker());

    // A body that does not decode.
    let mut garbage = broker.client();
    let mut body = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(ApiKey::Metadata as i16)
        .with_request_api_version(1)
        .with_correlation_id(1)
        .encode(&mut body, 1)
        .unwrap();
    body.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]); // a topic array of 2^31-1 entries
    garbage.send_raw(&body);
    assert!(garbage.is_closed_by_broker());

    // The broker still serves the healthy connection.
    assert_eq!(
        healthy.produce("t", 0, 1, batch(&["still", "fine"])),
        (0, 0)
    );
}

#[test]
fn invalid_batches_are_refused_and_change_nothing() {
    let broker = Broker::start(
        2,
        &["message.max.bytes=2048", "auto.create.topics.enable=false"],
    );
    let mut client = broker.client();
    client.create_topic("t", 2);
    let good = batch(&["a", "b", "c"]);

    let mut corrupt = BytesMut::from(&good[..]);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(
        client.produce("t", 0, -1, corrupt.freeze()).0,
        CORRUPT_MESSAGE
    );

    let mut old_magic = BytesMut::from(&good[..]);
    old_magic[16] = 1;
    assert_eq!(
        client.produce("t", 0, -1, old_magic.freeze()).0,
        UNSUPPORTED_FOR_MESSAGE_FORMAT
    );

    let mut torn = good.clone();
    torn.truncate(good.len() - 5);
    assert_eq!(client.produce("t", 0, -1, torn).0, CORRUPT_MESSAGE);

    let big = "x".repeat(4096);
    assert_eq!(
        client.produce("t", 0, -1, batch(&[&big])).0,
        MESSAGE_TOO_LARGE
    );

    // A good batch followed by a corrupt one: the whole request is refused.
    let mut mixed = BytesMut::from(&good[..]);
    let mut bad = BytesMut::from(&good[..]);
    bad[30] ^= 1;
    mixed.extend_from_slice(&bad);
    assert_eq!(
        client.produce("t", 1, -1, mixed.freeze()).0,
        CORRUPT_MESSAGE
    );

    assert_eq!(
        client.produce("t", 0, 7, good.clone()).0,
        INVALID_REQUIRED_ACKS
    );
    assert_eq!(
        client.produce("nope", 0, 1, good.clone()).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        client.produce("t", 2, 1, good.clone()).0,
        UNKNOWN_TOPIC_OR_PARTITION
    );

    for partition in 0..2 {
        assert_eq!(
            client.list_offset("t", partition, -1),
            (0, 0),
            "nothing was appended"
        );
    }
    assert_eq!(client.produce("t", 0, -1, good), (0, 0));
    assert_eq!(client.list_offset("t", 0, -1), (0, 3));
}

#[test]
fn produce_and_fetch_across_two_shards() {
    let broker = Broker::start(2, &[]);
    let mut client = broker.client();
    client.create_topic("spread", 4);
    for partition in 0..4 {
        for round in 0..3 {
            let values: Vec<String> = (0..5)
                .map(|i| format!("p{partition}-r{round}-{i}"))
                .collect();
            let refs: Vec<&str> = values.iter().map(String::as_str).collect();
            let (code, base) = client.produce("spread", partition, 1, batch(&refs));
            assert_eq!((code, base), (0, round * 5));
        }
    }
    for partition in 0..4 {
        let (code, hw, records) = client.fetch("spread", partition, 0, 0);
        assert_eq!((code, hw), (0, 15));
        let values = decode_values(records);
        let expected: Vec<(i64, String)> = (0..15)
            .map(|o| (o, format!("p{partition}-r{}-{}", o / 5, o % 5)))
            .collect();
        assert_eq!(values, expected);
        // From the middle of a batch: the whole batch comes back, as in Kafka.
        let (_, _, records) = client.fetch("spread", partition, 7, 0);
        assert_eq!(decode_values(records).first().unwrap().0, 5);
    }
    let (code, _, _) = client.fetch("spread", 0, 99, 0);
    assert_eq!(code, 1, "OFFSET_OUT_OF_RANGE");
}

#[test]
fn compressed_batches_are_stored_as_sent() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.client();
    client.create_topic("z", 1);
    let mut offset = 0;
    for compression in [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let sent = batch_with(&["one", "two", "three"], compression);
        assert_eq!(client.produce("z", 0, 1, sent.clone()), (0, offset));
        let (_, _, records) = client.fetch("z", 0, offset, 0);
        // Byte for byte, apart from the offset and leader epoch the broker assigned.
        assert_eq!(
            without_assigned_fields(&records),
            without_assigned_fields(&sent)
        );
        assert_eq!(decode_values(records).len(), 3);
        offset += 3;
    }
}

#[test]
fn long_poll_wakes_on_append() {
    let broker = Broker::start(2, &[]);
    let mut setup = broker.client();
    setup.create_topic("tail", 2);
    for partition in 0..2 {
        let mut consumer = broker.client();
        let mut producer = broker.client();
        let waiting = std::thread::spawn(move || consumer.fetch("tail", partition, 0, 15_000));
        std::thread::sleep(Duration::from_millis(200));
        producer.produce("tail", partition, 1, batch(&["wake"]));
        let (code, hw, records) = waiting.join().unwrap();
        assert_eq!((code, hw), (0, 1));
        assert_eq!(decode_values(records), vec![(0, "wake".to_string())]);
    }
}

/// A follower whose log runs past the leader's in the leader's epoch learns where to
/// truncate at once, as from Kafka, not after the long poll (KIP-320).
#[test]
fn a_diverging_follower_is_answered_without_waiting() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.client();
    client.create_topic("diverge", 1);
    assert_eq!(client.produce("diverge", 0, 1, batch(&["only"])), (0, 0));
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(2))
        .with_max_wait_ms(10_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("diverge")))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(5)
                .with_last_fetched_epoch(0)
                .with_partition_max_bytes(1 << 20)])]);
    let asked = std::time::Instant::now();
    let response = client.call(12, &request);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    let p = &response.responses[0].partitions[0];
    assert_eq!(
        (
            p.error_code,
            p.diverging_epoch.epoch,
            p.diverging_epoch.end_offset
        ),
        (0, 0, 1)
    );
}

#[test]
fn pipelined_responses_keep_request_order() {
    let broker = Broker::start(2, &[]);
    let mut client = broker.client();
    client.create_topic("order", 4);
    let sent: Vec<i32> = (0..40)
        .map(|i| client.send(9, &produce_request("order", i % 4, 1, batch(&["v"]))))
        .collect();
    for expected in sent {
        let (received, response) = client.receive::<ProduceRequest>(9);
        assert_eq!(received, expected);
        assert_eq!(response.responses[0].partition_responses[0].error_code, 0);
    }
}

/// Answers leave a connection in request order, so a long poll would hold back the answer
/// of a request sent after it on the same connection: it ends once that answer is ready.
#[test]
fn long_poll_ends_once_a_later_request_is_answered() {
    let broker = Broker::start(2, &[]);
    let mut client = broker.client();
    client.create_topic("idle", 2);
    let sent_at = Instant::now();
    let poll = client.send(12, &fetch_request("idle", 0, 0, 15_000));
    let produce = client.send(9, &produce_request("idle", 1, 1, batch(&["v"])));
    let (received, fetched) = client.receive::<FetchRequest>(12);
    assert_eq!(received, poll);
    let partition = &fetched.responses[0].partitions[0];
    assert_eq!((partition.error_code, partition.high_watermark), (0, 0));
    assert!(partition.records.as_ref().is_none_or(|r| r.is_empty()));
    let (received, produced) = client.receive::<ProduceRequest>(9);
    assert_eq!(received, produce);
    assert_eq!(produced.responses[0].partition_responses[0].error_code, 0);
    assert!(
        sent_at.elapsed() < Duration::from_secs(10),
        "the idle fetch waited out its 15 s before the produce's answer could leave"
    );
}

#[test]
fn acks_zero_gets_no_response_but_is_stored() {
    let broker = Broker::start(1, &[]);
    let mut client = broker.client();
    client.create_topic("fire", 1);
    client.send(9, &produce_request("fire", 0, 0, batch(&["a", "b"])));
    // The next response on the connection answers the ListOffsets, not the produce.
    assert_eq!(client.list_offset("fire", 0, -1), (0, 2));
}

#[test]
fn topic_admin_errors() {
    let broker = Broker::start(2, &[]);
    let mut client = broker.client();
    client.create_topic("a", 3);
    let create =
        |name: &str, partitions: i32, rf: i16, configs: Vec<(&str, &str)>, validate_only: bool| {
            CreateTopicsRequest::default()
                .with_validate_only(validate_only)
                .with_topics(vec![create_topics_request::CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(name.into())))
                    .with_num_partitions(partitions)
                    .with_replication_factor(rf)
                    .with_configs(
                        configs
                            .into_iter()
                            .map(|(k, v)| {
                                create_topics_request::CreatableTopicConfig::default()
                                    .with_name(StrBytes::from_string(k.into()))
                                    .with_value(Some(StrBytes::from_string(v.into())))
                            })
                            .collect(),
                    )])
        };
    let code = |client: &mut Client, request: CreateTopicsRequest| {
        client.call(7, &request).topics[0].error_code
    };
    assert_eq!(
        code(&mut client, create("a", 1, 1, vec![], false)),
        TOPIC_ALREADY_EXISTS
    );
    assert_eq!(
        code(&mut client, create("b", 0, 1, vec![], false)),
        INVALID_PARTITIONS
    );
    assert_eq!(
        code(&mut client, create("b", 1, 3, vec![], false)),
        INVALID_REPLICATION_FACTOR
    );
    assert_eq!(
        code(
            &mut client,
            create("b", 1, 1, vec![("retention.ms", "soon")], false)
        ),
        INVALID_CONFIG
    );
    assert_eq!(
        code(
            &mut client,
            create("b", 1, 1, vec![("no.such.config", "1")], false)
        ),
        INVALID_CONFIG
    );
    assert_eq!(
        code(&mut client, create("bad name", 1, 1, vec![], false)),
        17
    );
    assert_eq!(
        code(
            &mut client,
            create("b", 1, 1, vec![("retention.ms", "1000")], true)
        ),
        0
    );
    assert_eq!(
        client.produce("b", 0, 1, batch(&["x"])).0,
        0,
        "auto-created after validate_only"
    );
    let response = client.call(7, &create("c", 2, 1, vec![("retention.ms", "1000")], false));
    let retention = response.topics[0]
        .configs
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.name.as_str() == "retention.ms")
        .unwrap();
    assert_eq!(retention.value.as_ref().unwrap().as_str(), "1000");
}

#[test]
fn acks_all_data_survives_kill9() {
    let mut broker = Broker::start(2, &[]);
    let mut client = broker.client();
    client.create_topic("durable", 2);
    let mut expected = [Vec::new(), Vec::new()];
    for i in 0..200 {
        let partition = i % 2;
        let value = format!("m{i}");
        let (code, _) = client.produce("durable", partition as i32, -1, batch(&[&value]));
        assert_eq!(code, 0);
        expected[partition].push(value);
    }
    broker.restart_after_kill9();
    let mut client = broker.client();
    for (partition, values) in expected.iter().enumerate() {
        let (code, hw, records) = client.fetch("durable", partition as i32, 0, 0);
        assert_eq!((code, hw), (0, values.len() as i64));
        let got: Vec<String> = decode_values(records).into_iter().map(|(_, v)| v).collect();
        assert_eq!(&got, values);
    }
}

/// Checkpoints and `partition.metadata` are written without fsync, so a crash can leave
/// them empty or cut: the data must survive that (rebuilt checkpoints, no mistaking the
/// partition for an older topic's).
#[test]
fn emptied_checkpoints_after_a_crash_lose_nothing() {
    let mut broker = Broker::start(1, &[]);
    let mut client = broker.client();
    client.create_topic("torn", 1);
    for values in [&["a", "b"][..], &["c"]] {
        assert_eq!(client.produce("torn", 0, -1, batch(values)).0, 0);
    }
    broker.kill9();
    let dir = broker.data_dir().join("torn-0");
    for (file, content) in [
        ("partition.metadata", &b""[..]),
        ("leader-epoch-checkpoint", b"0\n"),
        // The shard's recovery points and high watermarks, cut after its entry count.
        ("../offset-checkpoint-shard-0", b"0\n51\n"),
    ] {
        std::fs::write(dir.join(file), content).unwrap();
    }
    broker.start_again();
    let mut client = broker.client();
    let (code, hw, records) = client.fetch("torn", 0, 0, 0);
    assert_eq!((code, hw), (0, 3));
    let values: Vec<String> = decode_values(records).into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["a", "b", "c"]);
    let stored = std::fs::read_to_string(dir.join("partition.metadata")).unwrap();
    assert!(stored.starts_with("version: 0\ntopic_id: "), "{stored:?}");
}

/// After a crash, recovery starts at the recovery points the shards checkpointed: sealed
/// segments flushed before the crash are trusted, and only what follows is scanned.
#[test]
fn a_restart_after_a_crash_trusts_checkpointed_segments() {
    let partitions = 4;
    let mut broker = Broker::start(
        2,
        &[
            "log.segment.bytes=1024",
            "log.flush.interval.ms=50",
            "offsets.topic.num.partitions=2",
        ],
    );
    let mut client = broker.client();
    client.create_topic("steady", partitions);
    let values: Vec<String> = (0..100 * partitions)
        .map(|i| format!("value-{i:04}"))
        .collect();
    for (i, value) in values.iter().enumerate() {
        assert_eq!(
            client
                .produce("steady", i as i32 % partitions, 1, batch(&[value]))
                .0,
            0
        );
    }
    // Every partition's entry shows a recovery point past their first sealed segments.
    let checkpointed_partitions = || {
        let mut moved = 0;
        for entry in std::fs::read_dir(broker.data_dir()).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with("offset-checkpoint-shard-") && !name.ends_with(".tmp") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                moved += text
                    .lines()
                    .skip(2)
                    .filter(|line| line.split(' ').nth(2).is_some_and(|point| point != "0"))
                    .count();
            }
        }
        moved
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while checkpointed_partitions() < partitions as usize {
        assert!(
            std::time::Instant::now() < deadline,
            "no checkpoint was written"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    broker.restart_after_kill9();
    let restart_log = broker.log();
    let restart_log = &restart_log[restart_log.rfind("corelog starting").unwrap()..];
    let trusted: usize = restart_log
        .lines()
        .filter(|line| line.contains("partition logs opened"))
        .filter_map(|line| line.split("segments_trusted=").nth(1))
        .filter_map(|rest| rest.split(' ').next()?.parse::<usize>().ok())
        .sum();
    assert!(
        trusted >= partitions as usize,
        "too few segments trusted: {restart_log}"
    );
    let mut client = broker.client();
    for partition in 0..partitions {
        let mut got = Vec::new();
        while got.len() < 100 {
            let (code, _, records) = client.fetch("steady", partition, got.len() as i64, 0);
            assert_eq!(code, 0);
            let batch = decode_values(records);
            assert!(
                !batch.is_empty(),
                "partition {partition} ends at {}",
                got.len()
            );
            got.extend(batch.into_iter().map(|(_, v)| v));
        }
        let expected: Vec<&String> = (values.iter().skip(partition as usize))
            .step_by(partitions as usize)
            .collect();
        assert_eq!(got.iter().collect::<Vec<_>>(), expected);
    }
}

#[test]
fn committed_offsets_survive_kill9() {
    let mut broker = Broker::start(2, &["offsets.topic.num.partitions=4"]);
    let mut client = broker.client();
    client.create_topic("events", 2);
    let groups: Vec<String> = (0..8).map(|i| format!("group-{i}")).collect();
    for (i, group) in groups.iter().enumerate() {
        assert_eq!(
            client.commit_offset(group, "", -1, "events", (i % 2) as i32, 100 + i as i64),
            0
        );
    }
    // A generation from a group that never formed is refused.
    assert_eq!(
        client.commit_offset("group-0", "someone", 3, "events", 0, 1),
        22,
        "ILLEGAL_GENERATION"
    );
    assert_eq!(
        client.commit_offset("group-0", "", -1, "nope", 0, 1),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    broker.restart_after_kill9();
    let mut client = broker.client();
    for (i, group) in groups.iter().enumerate() {
        assert_eq!(
            client.fetch_offset(group, "events", (i % 2) as i32),
            100 + i as i64
        );
    }
    assert_eq!(client.fetch_offset("never-committed", "events", 0), -1);
}

/// Joins `group` as a new classic member (JoinGroup v9 then SyncGroup v5); returns the
/// member id and generation. The broker runs with no initial rebalance delay.
fn join_alone(client: &mut Client, group: &str) -> (String, i32) {
    let join = |member: &str| {
        JoinGroupRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_member_id(StrBytes::from_string(member.into()))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![join_group_request::JoinGroupRequestProtocol::default(
            )
            .with_name(StrBytes::from_static_str("range"))
            .with_metadata(bytes::Bytes::from_static(b"m"))])
    };
    let first = client.call(9, &join(""));
    assert_eq!(first.error_code, 79, "MEMBER_ID_REQUIRED");
    let joined = client.call(9, &join(first.member_id.as_str()));
    assert_eq!(joined.error_code, 0);
    assert_eq!(joined.leader, joined.member_id);
    let sync = SyncGroupRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id(joined.generation_id)
        .with_member_id(joined.member_id.clone())
        .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
        .with_protocol_name(Some(StrBytes::from_static_str("range")))
        .with_assignments(vec![
            sync_group_request::SyncGroupRequestAssignment::default()
                .with_member_id(joined.member_id.clone())
                .with_assignment(bytes::Bytes::from_static(b"a")),
        ]);
    let synced = client.call(5, &sync);
    assert_eq!((synced.error_code, &synced.assignment[..]), (0, &b"a"[..]));
    (joined.member_id.to_string(), joined.generation_id)
}

#[test]
fn commits_are_checked_against_member_and_generation() {
    let broker = Broker::start(
        2,
        &[
            "offsets.topic.num.partitions=4",
            "group.initial.rebalance.delay.ms=0",
        ],
    );
    let mut client = broker.client();
    client.create_topic("orders", 1);
    for group in ["g-a", "g-b", "g-c", "g-d"] {
        let (member, generation) = join_alone(&mut client, group);
        assert_eq!(
            client.commit_offset(group, &member, generation, "orders", 0, 5),
            0
        );
        assert_eq!(
            client.commit_offset(group, &member, generation + 1, "orders", 0, 6),
            22,
            "ILLEGAL_GENERATION"
        );
        assert_eq!(
            client.commit_offset(group, "stranger", generation, "orders", 0, 6),
            25,
            "UNKNOWN_MEMBER_ID"
        );
        assert_eq!(
            client.commit_offset(group, "", -1, "orders", 0, 6),
            25,
            "a simple commit into a live group"
        );
        assert_eq!(client.fetch_offset(group, "orders", 0), 5);
    }
}

#[test]
fn sigterm_stops_cleanly_and_the_restart_skips_recovery() {
    let mut broker = Broker::start(2, &["offsets.topic.num.partitions=2"]);
    let mut client = broker.client();
    client.create_topic("calm", 2);
    for i in 0..300 {
        let value = format!("m{i}");
        // acks=1: nothing forces these to disk before the stop does.
        assert_eq!(client.produce("calm", i % 2, 1, batch(&[&value])).0, 0);
    }
    assert_eq!(client.commit_offset("g", "", -1, "calm", 0, 42), 0);
    assert!(broker.stop_gracefully(), "exit status 0 after SIGTERM");
    assert!(broker.log().contains("stopped cleanly"), "{}", broker.log());
    broker.start_again();
    let restart_log = broker.log();
    let restart_log = &restart_log[restart_log.rfind("corelog starting").unwrap()..];
    let opened: Vec<&str> = restart_log
        .lines()
        .filter(|l| l.contains("partition logs opened"))
        .collect();
    assert_eq!(opened.len(), 2, "one summary per shard: {restart_log}");
    for line in opened {
        assert!(line.contains("segments_trusted=2"), "{line}");
        assert!(
            line.contains("segments_recovered=0"),
            "a log was scanned: {line}"
        );
    }
    let mut client = broker.client();
    for partition in 0..2 {
        let (code, hw, records) = client.fetch("calm", partition, 0, 0);
        assert_eq!((code, hw), (0, 150));
        let values: Vec<String> = decode_values(records).into_iter().map(|(_, v)| v).collect();
        let expected: Vec<String> = (0..300)
            .filter(|i| i % 2 == partition)
            .map(|i| format!("m{i}"))
            .collect();
        assert_eq!(values, expected);
    }
    assert_eq!(client.fetch_offset("g", "calm", 0), 42);
    // Appends continue where the log ended.
    assert_eq!(client.produce("calm", 0, -1, batch(&["after"])), (0, 150));
}

fn alter_topic_config(
    client: &mut Client,
    topic: &str,
    name: &str,
    value: &str,
    validate_only: bool,
) -> i16 {
    let request = IncrementalAlterConfigsRequest::default()
        .with_validate_only(validate_only)
        .with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_string(topic.into()))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_string(name.into()))
                        .with_config_operation(0)
                        .with_value(Some(StrBytes::from_string(value.into()))),
                ]),
        ]);
    client.call(1, &request).responses[0].error_code
}

fn topic_config(client: &mut Client, topic: &str, name: &str) -> String {
    let request = DescribeConfigsRequest::default().with_resources(vec![
        describe_configs_request::DescribeConfigsResource::default()
            .with_resource_type(2)
            .with_resource_name(StrBytes::from_string(topic.into()))
            .with_configuration_keys(Some(vec![StrBytes::from_string(name.into())])),
    ]);
    let response = client.call(4, &request);
    response.results[0].configs[0]
        .value
        .as_ref()
        .unwrap()
        .to_string()
}

#[test]
fn altered_retention_applies_to_the_running_log() {
    let broker = Broker::start(2, &["log.retention.check.interval.ms=100"]);
    let mut client = broker.client();
    let create = CreateTopicsRequest::default().with_topics(vec![
        create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("shrink")))
            .with_num_partitions(1)
            .with_replication_factor(1)
            .with_configs(vec![create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_static_str("segment.bytes"))
                .with_value(Some(StrBytes::from_static_str("1024")))]),
    ]);
    assert_eq!(client.call(7, &create).topics[0].error_code, 0);
    let value = "v".repeat(200);
    for _ in 0..40 {
        assert_eq!(client.produce("shrink", 0, 1, batch(&[&value])).0, 0);
    }
    assert_eq!(client.list_offset("shrink", 0, -2), (0, 0));

    assert_eq!(
        alter_topic_config(&mut client, "shrink", "retention.bytes", "soon", false),
        INVALID_CONFIG
    );
    assert_eq!(
        alter_topic_config(&mut client, "shrink", "retention.bytes", "2048", true),
        0
    );
    assert_eq!(
        topic_config(&mut client, "shrink", "retention.bytes"),
        "-1",
        "validate_only changed nothing"
    );
    assert_eq!(
        alter_topic_config(&mut client, "nope", "retention.bytes", "2048", false),
        UNKNOWN_TOPIC_OR_PARTITION
    );
    assert_eq!(
        alter_topic_config(&mut client, "shrink", "retention.bytes", "2048", false),
        0
    );
    assert_eq!(
        topic_config(&mut client, "shrink", "retention.bytes"),
        "2048"
    );

    // Retention runs every 100 ms; give it up to 10 s to drop the old segments.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut earliest = 0;
    while earliest == 0 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        earliest = client.list_offset("shrink", 0, -2).1;
    }
    assert!(
        earliest > 0,
        "old segments were deleted and the log start advanced"
    );
    assert_eq!(client.list_offset("shrink", 0, -1), (0, 40));
    let (code, _, records) = client.fetch("shrink", 0, earliest, 0);
    assert_eq!(code, 0);
    assert_eq!(decode_values(records)[0].0, earliest);
    let (code, _, _) = client.fetch("shrink", 0, 0, 0);
    assert_eq!(code, 1, "OFFSET_OUT_OF_RANGE below the log start");
}

/// The partition directories of `topic` in `data_dir` (deleted ones included).
fn partition_dirs(data_dir: &std::path::Path, topic: &str) -> usize {
    let prefix = format!("{topic}-");
    std::fs::read_dir(data_dir)
        .unwrap()
        .filter(|entry| {
            let name = entry.as_ref().unwrap().file_name();
            name.to_str().is_some_and(|n| n.starts_with(&prefix))
        })
        .count()
}

#[test]
fn a_big_topic_creation_leaves_the_shard_serving() {
    const BIG: i32 = 2_000;
    let broker = Broker::start(1, &[]);
    let mut client = broker.client();
    client.create_topic("warm", 1);
    assert_eq!(client.produce("warm", 0, 1, batch(&["w"])).0, 0);
    let mut creator = broker.client();
    let creation = std::thread::spawn(move || creator.create_topic("big", BIG));
    // Once the first log of the new topic is on disk, the shard is opening them: a
    // produce sent then must be answered before the last one is opened, not after.
    while partition_dirs(broker.data_dir(), "big") == 0 {
        assert!(
            !creation.is_finished(),
            "the creation ended before opening a log"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(client.produce("warm", 0, 1, batch(&["during"])).0, 0);
    let opened_by_then = partition_dirs(broker.data_dir(), "big");
    assert!(
        opened_by_then < BIG as usize,
        "the produce waited for all {BIG} partitions to open"
    );
    creation.join().unwrap();
    for partition in [0, BIG / 2, BIG - 1] {
        assert_eq!(client.produce("big", partition, 1, batch(&["x"])), (0, 0));
    }
    assert!(!broker.log().contains("fencing"), "{}", broker.log());
}

#[test]
fn deleted_topics_leave_no_data_even_across_a_crash() {
    let mut broker = Broker::start(2, &[]);
    let mut client = broker.client();
    client.create_topic("gone", 4);
    for partition in 0..4 {
        assert_eq!(
            client.produce("gone", partition, 1, batch(&["a", "b"])).0,
            0
        );
    }
    assert_eq!(partition_dirs(broker.data_dir(), "gone"), 4);
    let delete = DeleteTopicsRequest::default()
        .with_topic_names(vec![TopicName(StrBytes::from_static_str("gone"))])
        .with_timeout_ms(10_000);
    assert_eq!(client.call(4, &delete).responses[0].error_code, 0);
    // The name is free at once: the same name is a new, empty topic.
    client.create_topic("gone", 1);
    assert_eq!(client.produce("gone", 0, 1, batch(&["new"])), (0, 0));
    let deadline = Instant::now() + Duration::from_secs(20);
    while partition_dirs(broker.data_dir(), "gone") > 1 {
        assert!(
            Instant::now() < deadline,
            "deleted partitions still on disk"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // A crash between the rename and the removal: the restart removes the leftover.
    let leftover = broker
        .data_dir()
        .join("old-0.0123456789abcdef0123456789abcdef-delete");
    std::fs::create_dir(&leftover).unwrap();
    std::fs::write(leftover.join("00000000000000000000.log"), b"stale").unwrap();
    broker.restart_after_kill9();
    let deadline = Instant::now() + Duration::from_secs(20);
    while leftover.exists() {
        assert!(
            Instant::now() < deadline,
            "the leftover of a deletion stayed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut client = broker.client();
    let (code, high_watermark, records) = client.fetch("gone", 0, 0, 0);
    assert_eq!((code, high_watermark), (0, 1));
    assert_eq!(decode_values(records), vec![(0, "new".to_string())]);
}

/// Shards bind with SO_REUSEPORT, so a second broker on a served port would bind fine and
/// get half of the new clients: it must refuse to start instead, and leave the first
/// broker serving.
#[test]
fn a_second_broker_on_a_served_port_is_refused() {
    let broker = Broker::start(1, &[]);
    let other_dir = tempfile::tempdir().unwrap();
    let mut second = std::process::Command::new(env!("CARGO_BIN_EXE_corelog"))
        .args([
            "serve",
            "--listen",
            &broker.addr.to_string(),
            "--cores",
            "1",
        ])
        .arg("--data-dir")
        .arg(other_dir.path())
        .env("NO_COLOR", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start a second corelog");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            second.kill().unwrap();
            second.wait().unwrap();
            panic!("a second broker on {} kept running", broker.addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("already listens there"),
        "unexpected error: {stderr}"
    );
    let mut client = broker.client();
    client.create_topic("still-served", 1);
    let (code, _) = client.produce("still-served", 0, 1, batch(&["a"]));
    assert_eq!(code, 0);
}
