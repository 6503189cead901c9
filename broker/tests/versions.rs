//! Every version advertised is served: for each API with a simple request, every version
//! in the ApiVersions range gets a response that decodes at that version (a response
//! field set that the version cannot carry would make the broker drop the response).

mod common;

use common::{batch, Broker, Client};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Message, Request, StrBytes};

fn topic_name() -> TopicName {
    TopicName(StrBytes::from_static_str("swept"))
}

/// Sends `request` at every version of its range and checks each answer decodes.
fn sweep<R>(client: &mut Client, request: impl Fn(i16) -> R)
where
    R: Request + Encodable + HeaderVersion + Message,
    R::Response: Decodable + HeaderVersion,
{
    for version in R::VERSIONS.min..=R::VERSIONS.max {
        let sent = client.send(version, &request(version));
        let (received, _) = client.receive::<R>(version);
        assert_eq!(received, sent, "{:?} v{version}", R::KEY);
    }
}

#[test]
fn every_advertised_version_answers() {
    let broker = Broker::start(2, &["offsets.topic.num.partitions=2"]);
    let mut client = broker.client();
    client.create_topic("swept", 2);
    client.produce("swept", 0, 1, batch(&["a", "b"]));

    sweep(&mut client, |v| {
        let mut r = ApiVersionsRequest::default();
        if v >= 3 {
            r = r
                .with_client_software_name(StrBytes::from_static_str("sweep"))
                .with_client_software_version(StrBytes::from_static_str("1"));
        }
        r
    });
    sweep(&mut client, |v| {
        let topic = metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name()));
        let r = MetadataRequest::default().with_topics(Some(vec![topic]));
        if v >= 4 {
            r.with_allow_auto_topic_creation(true)
        } else {
            r
        }
    });
    sweep(&mut client, |v| {
        ProduceRequest::default()
            .with_acks(1)
            .with_timeout_ms(5000)
            .with_topic_data(vec![produce_request::TopicProduceData::default()
                .with_name(if v < 13 {
                    topic_name()
                } else {
                    TopicName::default()
                })
                .with_topic_id(if v >= 13 {
                    topic_id(&broker)
                } else {
                    uuid::Uuid::nil()
                })
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(1)
                        .with_records(Some(batch(&["swept"]))),
                ])])
    });
    sweep(&mut client, |v| {
        let partition = fetch_request::FetchPartition::default()
            .with_partition(0)
            .with_partition_max_bytes(1 << 20);
        let topic = fetch_request::FetchTopic::default().with_partitions(vec![partition]);
        let topic = if v >= 13 {
            topic.with_topic_id(topic_id(&broker))
        } else {
            topic.with_topic(topic_name())
        };
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_max_bytes(1 << 20)
            .with_session_epoch(-1)
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![topic])
    });
    sweep(&mut client, |_| {
        ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(topic_name())
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1),
                ])])
    });
    sweep(&mut client, |_| {
        DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("swept")),
        ])
    });
    sweep(&mut client, |_| DescribeClusterRequest::default());
    sweep(&mut client, |v| {
        let key = StrBytes::from_static_str("a-group");
        if v >= 4 {
            FindCoordinatorRequest::default().with_coordinator_keys(vec![key])
        } else {
            FindCoordinatorRequest::default().with_key(key)
        }
    });
    sweep(&mut client, |v| {
        let group = GroupId(StrBytes::from_static_str("a-group"));
        if v >= 8 {
            OffsetFetchRequest::default().with_groups(vec![
                offset_fetch_request::OffsetFetchRequestGroup::default().with_group_id(group),
            ])
        } else {
            OffsetFetchRequest::default()
                .with_group_id(group)
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopic::default()
                        .with_name(topic_name())
                        .with_partition_indexes(vec![0]),
                ]))
        }
    });
    sweep(&mut client, |_| {
        OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("a-group")))
            .with_generation_id_or_member_epoch(-1)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(topic_name())
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(1),
                    ]),
            ])
    });
    sweep(&mut client, |_| ListGroupsRequest::default());
    sweep(&mut client, |_| {
        DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_static_str("a-group"))])
    });
    sweep(&mut client, |v| {
        let name = TopicName(StrBytes::from_string(format!("made-v{v}")));
        CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name)
                .with_num_partitions(1)
                .with_replication_factor(1),
        ])
    });
    sweep(&mut client, |v| {
        let name = TopicName(StrBytes::from_string(format!("made-v{v}")));
        if v >= 6 {
            DeleteTopicsRequest::default().with_topics(vec![
                delete_topics_request::DeleteTopicState::default().with_name(Some(name)),
            ])
        } else {
            DeleteTopicsRequest::default().with_topic_names(vec![name])
        }
    });
    sweep(&mut client, |_| {
        CreatePartitionsRequest::default().with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(topic_name())
                .with_count(2),
        ])
    });
    sweep(&mut client, |_| {
        HeartbeatRequest::default()
            .with_group_id(GroupId(StrBytes::from_static_str("a-group")))
            .with_member_id(StrBytes::from_static_str("nobody"))
    });
}

/// The topic id of "swept", from Metadata v12.
fn topic_id(broker: &Broker) -> uuid::Uuid {
    let mut client = broker.client();
    let request = MetadataRequest::default().with_topics(Some(vec![
        metadata_request::MetadataRequestTopic::default().with_name(Some(topic_name())),
    ]));
    client.call(12, &request).topics[0].topic_id
}
