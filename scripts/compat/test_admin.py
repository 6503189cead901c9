"""Metadata, ListOffsets and the admin APIs, through confluent-kafka (and kcat -L)."""
import json
import subprocess
import time

import pytest
from confluent_kafka import OFFSET_END, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic, OffsetSpec, ResourceType

import harness
from clients import confluent, kcat


def test_metadata_lists_topic_and_partitions(broker, topic):
    harness.create_topic(broker.bootstrap, topic, 3)
    md = harness.admin(broker.bootstrap).list_topics(timeout=harness.ADMIN_TIMEOUT)
    assert len(md.brokers) == 1
    (node,) = md.brokers.values()
    if broker.data_dir is not None:  # our own broker: it must advertise where it listens
        assert f"{node.host}:{node.port}" == broker.bootstrap
    t = md.topics[topic]
    assert t.error is None
    assert sorted(t.partitions) == [0, 1, 2]
    for p in t.partitions.values():
        assert (p.error, p.leader, list(p.replicas), list(p.isrs)) == (None, node.id, [node.id], [node.id])

    # kcat (librdkafka 2.0) sees the same.
    out = subprocess.run([kcat.BIN, "-L", "-J", "-b", broker.bootstrap, "-t", topic],
                         capture_output=True, timeout=30, check=True).stdout
    (kt,) = json.loads(out)["topics"]
    assert kt["topic"] == topic and "error" not in kt
    assert sorted(p["partition"] for p in kt["partitions"]) == [0, 1, 2]
    assert {p["leader"] for p in kt["partitions"]} == {node.id}


def test_describe_cluster(broker):
    a = harness.admin(broker.bootstrap)
    desc = a.describe_cluster(request_timeout=harness.ADMIN_TIMEOUT).result(timeout=harness.ADMIN_TIMEOUT + 5)
    assert len(desc.nodes) == 1
    assert desc.controller is not None and desc.controller.id == desc.nodes[0].id
    if broker.data_dir is not None:
        assert f"{desc.nodes[0].host}:{desc.nodes[0].port}" == broker.bootstrap


def test_describe_configs_shows_topic_config(broker, topic):
    harness.create_topic(broker.bootstrap, topic, 1, config={"retention.ms": "86400000"})
    a = harness.admin(broker.bootstrap)
    res = ConfigResource(ResourceType.TOPIC, topic)
    configs = a.describe_configs([res], request_timeout=harness.ADMIN_TIMEOUT)[res].result(
        timeout=harness.ADMIN_TIMEOUT + 5)
    assert configs["retention.ms"].value == "86400000"


def test_list_offsets_and_offsets_for_times(broker, topic):
    harness.create_topic(broker.bootstrap, topic, 3)
    base = (int(time.time()) - 3600) * 1000  # an hour ago, one second per message
    msgs = [harness.Msg(m.partition, m.key, m.value, m.headers, timestamp=base + i * 1000)
            for i, m in enumerate(harness.make_messages(60, tag="ts"))]
    confluent.produce(broker.bootstrap, topic, msgs, "none", "all")
    n = harness.counts(msgs)

    assert harness.list_offsets(broker.bootstrap, topic, n, OffsetSpec.earliest()) == {p: 0 for p in n}
    assert harness.list_offsets(broker.bootstrap, topic, n, OffsetSpec.latest()) == n

    # Timestamps: message j of partition p is message 3j+p overall. The answer
    # is the first offset whose timestamp is >= the one asked for; -1 past the end.
    ts = lambda p, j: base + (3 * j + p) * 1000
    queries = {}
    for p in n:
        queries[(p, ts(p, 0) - 5000)] = 0
        for j in (0, 7, n[p] - 1):
            queries[(p, ts(p, j))] = j
            queries[(p, ts(p, j) - 1)] = j
        queries[(p, ts(p, n[p] - 1) + 1)] = OFFSET_END

    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": "corelog-compat-unused",
                  "enable.auto.commit": False, "logger": harness.RDKAFKA_LOG})
    try:
        got = {}
        for (p, t) in queries:
            (tp,) = c.offsets_for_times([TopicPartition(topic, p, t)], timeout=harness.ADMIN_TIMEOUT)
            assert tp.error is None, tp.error
            got[(p, t)] = tp.offset
        lows_highs = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=harness.ADMIN_TIMEOUT,
                                                 cached=False) for p in n}
    finally:
        c.close()
    assert got == queries
    assert lows_highs == {p: (0, n[p]) for p in n}

    for (p, t), want in queries.items():
        got = harness.list_offsets(broker.bootstrap, topic, [p], OffsetSpec.for_timestamp(t))[p]
        assert got == want, f"admin list_offsets(partition {p}, timestamp {t})"

    # CreateTime survives the round trip.
    records = confluent.consume(broker.bootstrap, topic, n)
    assert sorted(r.timestamp for r in records) == sorted(m.timestamp for m in msgs)


def test_create_topics_validate_only_creates_nothing(broker, topic):
    a = harness.admin(broker.bootstrap)
    fs = a.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)], validate_only=True,
                         request_timeout=harness.ADMIN_TIMEOUT)
    fs[topic].result(timeout=harness.ADMIN_TIMEOUT + 5)
    assert topic not in harness.list_topics(broker.bootstrap)
    # ...and the real thing afterwards works.
    harness.create_topic(broker.bootstrap, topic, 3)


def test_create_existing_topic_fails(broker, topic):
    harness.create_topic(broker.bootstrap, topic, 2)
    a = harness.admin(broker.bootstrap)
    fs = a.create_topics([NewTopic(topic, num_partitions=5, replication_factor=1)],
                         request_timeout=harness.ADMIN_TIMEOUT)
    try:
        fs[topic].result(timeout=harness.ADMIN_TIMEOUT + 5)
        raise AssertionError("creating an existing topic succeeded")
    except Exception as e:
        assert harness.is_error(e, KafkaError.TOPIC_ALREADY_EXISTS), repr(e)
    harness.wait_for_topic(broker.bootstrap, topic, 2)  # unchanged


def test_delete_topics_removes_topic(broker, topic):
    harness.create_topic(broker.bootstrap, topic, 3)
    msgs = harness.make_messages(30, tag="doomed")
    confluent.produce(broker.bootstrap, topic, msgs, "none", "1")

    a = harness.admin(broker.bootstrap)
    a.delete_topics([topic], request_timeout=harness.ADMIN_TIMEOUT)[topic].result(
        timeout=harness.ADMIN_TIMEOUT + 5)
    harness.deadline_loop(harness.ADMIN_TIMEOUT, f"{topic} to leave the metadata",
                          lambda: topic not in harness.list_topics(broker.bootstrap))

    # A new topic of the same name starts empty (Kafka may still be finishing the
    # delete: retry while it says the topic exists).
    def recreate():
        try:
            harness.create_topic(broker.bootstrap, topic, 3)
            return True
        except Exception as e:
            if harness.is_error(e, KafkaError.TOPIC_ALREADY_EXISTS):
                return False
            raise
    harness.deadline_loop(harness.ADMIN_TIMEOUT, f"{topic} to be created again", recreate)
    assert harness.list_offsets(broker.bootstrap, topic, range(3), OffsetSpec.latest()) == {0: 0, 1: 0, 2: 0}


def test_create_partitions_grows_topic(broker, topic):
    harness.create_topic(broker.bootstrap, topic, 1)
    before = harness.make_messages(20, partitions=1, tag="before")
    confluent.produce(broker.bootstrap, topic, before, "none", "all")

    a = harness.admin(broker.bootstrap)
    a.create_partitions([NewPartitions(topic, 3)], request_timeout=harness.ADMIN_TIMEOUT)[topic].result(
        timeout=harness.ADMIN_TIMEOUT + 5)
    harness.wait_for_topic(broker.bootstrap, topic, 3)

    after = harness.make_messages(30, partitions=3, tag="after")
    confluent.produce(broker.bootstrap, topic, after, "zstd", "all")
    ends = harness.wait_for_high_watermarks(broker.bootstrap, topic, harness.counts(before + after))
    harness.assert_records_match(before + after, confluent.consume(broker.bootstrap, topic, ends), partitions=3)


@pytest.mark.broker_args("--set", "num.partitions=4")
def test_produce_auto_creates_topic_with_num_partitions(broker, topic):
    msgs = harness.make_messages(10, partitions=1, tag="auto")
    confluent.produce(broker.bootstrap, topic, msgs, "none", "1")  # no CreateTopics first
    harness.wait_for_topic(broker.bootstrap, topic, 4)
    assert harness.list_offsets(broker.bootstrap, topic, range(4), OffsetSpec.latest()) == {0: 10, 1: 0, 2: 0, 3: 0}
