"""Fetch from follower (KIP-392) with a real librdkafka consumer: on a cluster
with brokers in racks a, b and c and Kafka's rack-aware replica selector, a
consumer with `client.rack` set to a follower's rack is sent there by the
leader and reads every message of the partition from that follower, which the
follower's own per-partition metrics show."""
from __future__ import annotations

import re
import time
import urllib.request

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

import harness
from harness import RDKAFKA_LOG

RACKS = {1: "a", 2: "b", 3: "c"}
MESSAGES = 500
SELECTOR = "replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector"


def records_out(port: int, topic: str) -> int:
    """Records broker (metrics on `port`) served from partition 0 of `topic`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    line = re.search(
        rf'^corelog_partition_records_out_total{{topic="{re.escape(topic)}",partition="0"}} (\d+)$',
        text, re.MULTILINE)
    return int(line.group(1)) if line else 0


def full_isr(bootstrap: str, topic: str) -> bool:
    md = harness.admin(bootstrap).list_topics(topic=topic, timeout=harness.ADMIN_TIMEOUT)
    p = md.topics[topic].partitions.get(0)
    return p is not None and len(p.isrs) == len(RACKS)


@pytest.mark.cluster_settings(SELECTOR, each=lambda n: [f"broker.rack={RACKS[n]}"], metrics=True)
def test_consumer_reads_from_a_follower_in_its_rack(cluster, topic):
    harness.create_topic(cluster.bootstrap, topic, partitions=1, replication_factor=len(RACKS))
    harness.deadline_loop(harness.ADMIN_TIMEOUT, f"a full ISR of {topic}",
                          lambda: full_isr(cluster.bootstrap, topic) or None)
    leader = cluster.leader_of(topic, 0)
    follower = min(n for n in RACKS if n != leader)

    producer = Producer({"bootstrap.servers": cluster.bootstrap, "acks": "all", "logger": RDKAFKA_LOG})
    expected = [f"m-{i}".encode() for i in range(MESSAGES)]
    for value in expected:
        producer.produce(topic, value=value, partition=0)
    assert producer.flush(30) == 0, "messages left unacknowledged"
    served_before = records_out(cluster.broker(follower).metrics_port, topic)

    consumer = Consumer({"bootstrap.servers": cluster.bootstrap, "group.id": f"{topic}-g",
                         "client.rack": RACKS[follower], "enable.auto.commit": False,
                         "logger": RDKAFKA_LOG})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got: list[bytes] = []
        deadline = time.monotonic() + harness.CONSUME_TIMEOUT
        while len(got) < MESSAGES and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    assert got == expected

    served = records_out(cluster.broker(follower).metrics_port, topic) - served_before
    assert served >= MESSAGES, f"follower {follower} (rack {RACKS[follower]}) served {served} records"
