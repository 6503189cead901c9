"""Real clients across a leader failover on a three-broker cluster: each keeps
producing (acks=all) and consuming while the leader of a partition is killed
with -9 and restarted. Every acknowledged message must be consumed, and
production to every partition must resume within MAX_PAUSE of the kill."""
from __future__ import annotations

import threading
import time

import pytest

import harness
from harness import RDKAFKA_LOG


PARTITIONS = 3
BEFORE_KILL = 3.0   # seconds of traffic before the kill
KILLED_FOR = 5.0    # seconds the old leader stays down
AFTER_RESTART = 8.0
MAX_PAUSE = 15.0
SEND_INTERVAL = 0.005


class Producer(threading.Thread):
    """Sends `<tag>-<i>` to partition i % PARTITIONS until stopped; records the
    acknowledgement time of each delivered message."""

    def __init__(self, tag: str):
        super().__init__(daemon=True)
        self.tag, self.stop, self.sent = tag, threading.Event(), 0
        self.acked: dict[bytes, tuple[int, float]] = {}  # value -> (partition, when)
        self.errors: list[str] = []
        self.lock = threading.Lock()

    def on_ack(self, value: bytes, partition: int) -> None:
        with self.lock:
            self.acked[value] = (partition, time.monotonic())

    def on_error(self, error) -> None:
        with self.lock:
            self.errors.append(str(error))

    def messages(self):
        while not self.stop.is_set():
            i = self.sent
            self.sent += 1
            yield i % PARTITIONS, f"{self.tag}-{i}".encode()
            time.sleep(SEND_INTERVAL)


class ConfluentProducer(Producer):
    def __init__(self, bootstrap: str, topic: str):
        super().__init__("confluent")
        from confluent_kafka import Producer as P
        # No idempotence: the cluster check must hold for plain retrying producers.
        self.p = P({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                    "enable.idempotence": False, "message.timeout.ms": 60000,
                    "topic.metadata.refresh.interval.ms": 1000, "logger": RDKAFKA_LOG})
        self.topic = topic

    def run(self):
        def delivered(err, msg):
            if err is None:
                self.on_ack(msg.value(), msg.partition())
            else:
                self.on_error(err)

        for partition, value in self.messages():
            while True:
                try:
                    self.p.produce(self.topic, value=value, partition=partition, on_delivery=delivered)
                    break
                except BufferError:
                    self.p.poll(0.1)
            self.p.poll(0)
        self.p.flush(60)


class KafkaPythonProducer(Producer):
    def __init__(self, bootstrap: str, topic: str):
        super().__init__("kafka-python")
        from kafka import KafkaProducer
        self.p = KafkaProducer(bootstrap_servers=bootstrap.split(","), acks="all", linger_ms=5,
                               enable_idempotence=False, retries=1000, retry_backoff_ms=200,
                               request_timeout_ms=10000, metadata_max_age_ms=1000,
                               delivery_timeout_ms=60000)
        self.topic = topic

    def run(self):
        for partition, value in self.messages():
            future = self.p.send(self.topic, value=value, partition=partition)
            future.add_callback(lambda md, v=value: self.on_ack(v, md.partition))
            future.add_errback(self.on_error)
        self.p.flush(timeout=60)
        self.p.close(timeout=10)


class Consumer(threading.Thread):
    """Reads every partition from the beginning until stopped (no group)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.values: set[bytes] = set()
        self.lock = threading.Lock()

    def seen(self) -> set[bytes]:
        with self.lock:
            return set(self.values)

    def add(self, value: bytes) -> None:
        with self.lock:
            self.values.add(value)


class ConfluentConsumer(Consumer):
    def __init__(self, bootstrap: str, topic: str):
        super().__init__()
        from confluent_kafka import OFFSET_BEGINNING, Consumer as C, TopicPartition
        # group.id is only a name: partitions are assigned by hand, nothing is committed.
        self.c = C({"bootstrap.servers": bootstrap, "group.id": "corelog-failover-unused",
                    "enable.auto.commit": False, "check.crcs": True,
                    "topic.metadata.refresh.interval.ms": 1000, "logger": RDKAFKA_LOG})
        self.c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])

    def run(self):
        try:
            while not self.stop.is_set():
                for msg in self.c.consume(num_messages=500, timeout=0.2):
                    if msg.error() is None:
                        self.add(msg.value())
        finally:
            self.c.close()


class KafkaPythonConsumer(Consumer):
    def __init__(self, bootstrap: str, topic: str):
        super().__init__()
        from kafka import KafkaConsumer, TopicPartition
        self.c = KafkaConsumer(bootstrap_servers=bootstrap.split(","), group_id=None,
                               enable_auto_commit=False, check_crcs=True, metadata_max_age_ms=1000)
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        self.c.assign(tps)
        self.c.seek_to_beginning(*tps)

    def run(self):
        try:
            while not self.stop.is_set():
                for batch in self.c.poll(timeout_ms=200).values():
                    for r in batch:
                        self.add(r.value)
        finally:
            self.c.close()


CLIENTS = {
    "confluent": (ConfluentProducer, ConfluentConsumer),
    "kafka-python": (KafkaPythonProducer, KafkaPythonConsumer),
}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_produce_and_consume_across_leader_kill(cluster, topic, client):
    harness.create_topic(cluster.bootstrap, topic, PARTITIONS, replication_factor=3)
    make_producer, make_consumer = CLIENTS[client]
    producer, consumer = make_producer(cluster.bootstrap, topic), make_consumer(cluster.bootstrap, topic)
    producer.start()
    consumer.start()
    try:
        time.sleep(BEFORE_KILL)
        leader = cluster.leader_of(topic, 0)
        cluster.kill9(leader)
        killed = time.monotonic()
        time.sleep(KILLED_FOR)
        cluster.restart(leader)
        time.sleep(AFTER_RESTART)
    finally:
        producer.stop.set()
        producer.join(90)
    assert not producer.is_alive(), "the producer did not finish flushing"

    acked = dict(producer.acked)
    resumed = {}
    for p in range(PARTITIONS):
        after = [when for partition, when in acked.values() if partition == p and when > killed]
        resumed[p] = min(after) - killed if after else None
    print(f"{client}: sent {producer.sent}, acknowledged {len(acked)}, "
          f"failed {len(producer.errors)}; killed leader {leader}; "
          f"first acknowledgement after the kill per partition (s): {resumed}")
    assert acked, f"nothing was acknowledged; errors: {producer.errors[:5]}"
    for p, pause in resumed.items():
        assert pause is not None and pause <= MAX_PAUSE, \
            f"partition {p}: production did not resume within {MAX_PAUSE}s of the kill ({resumed})"

    try:
        harness.deadline_loop(harness.CONSUME_TIMEOUT, "the consumer to read every acknowledged message",
                              lambda: set(acked) <= consumer.seen())
    except AssertionError:
        missing = sorted(set(acked) - consumer.seen())
        raise AssertionError(f"{len(missing)} of {len(acked)} acknowledged messages were not consumed, "
                             f"e.g. {missing[:5]}") from None
    finally:
        consumer.stop.set()
        consumer.join(30)
