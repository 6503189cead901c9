"""KIP-227 incremental fetch sessions with a real client that uses them.

kafka-python 2.1+ keeps a FetchSessionHandler per broker (on by default); the Java
client does too, while librdkafka (confluent-kafka, kcat) always fetches without a
session. The consumer reads three rounds: all partitions, then data on one partition
only (the others are left out of the incremental responses), then after dropping a
partition from its assignment (sent as forgotten_topics_data), whose new data must not
come back. The client's session handler shows the fetches went through one session.
"""
import time

import harness
from clients import kafka_python

PARTITIONS = 4
QUIET_POLL_S = 1.5


def test_kafka_python_consumes_through_one_fetch_session(broker, topic):
    from kafka import KafkaConsumer, TopicPartition

    harness.create_topic(broker.bootstrap, topic, PARTITIONS)
    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=None,
                             enable_auto_commit=False, fetch_max_wait_ms=100)
    records, expected = [], []

    def produce(msgs):
        kafka_python.produce(broker.bootstrap, topic, msgs, "none", "1")
        expected.extend(msgs)

    def consume_until(ends):
        deadline = time.monotonic() + harness.CONSUME_TIMEOUT
        pos = {p: sum(1 for r in records if r.partition == p) for p in range(PARTITIONS)}
        while any(pos[p] < n for p, n in ends.items()):
            assert time.monotonic() < deadline, f"consume timed out at {pos}, expected {ends}"
            for tp, batch in consumer.poll(timeout_ms=200).items():
                for r in batch:
                    records.append(harness.Record(tp.partition, r.offset, r.key, r.value,
                                                  tuple(r.headers or ())))
                    pos[tp.partition] = r.offset + 1

    def session():
        (handler,) = consumer._fetcher._session_handlers.values()
        return handler.next_metadata.session_id, handler.next_metadata.epoch

    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)

        produce(harness.make_messages(200, PARTITIONS, tag="all"))
        consume_until(harness.counts(expected))
        harness.assert_records_match(expected, records, PARTITIONS)
        session_id, _ = session()
        assert session_id > 0, "the broker started no fetch session"

        # Data on one partition only: incremental responses carry just that one.
        produce([m for m in harness.make_messages(40, PARTITIONS, tag="one") if m.partition == 1])
        consume_until(harness.counts(expected))
        harness.assert_records_match(expected, records, PARTITIONS)
        assert session()[0] == session_id and session()[1] > 1, f"no incremental fetches: {session()}"

        # Drop partition 3; its later data must not be fetched.
        kept = tps[:3]
        consumer.assign(kept)
        for tp in kept:
            consumer.seek(tp, harness.counts(expected)[tp.partition])
        late = harness.make_messages(80, PARTITIONS, tag="late")
        kafka_python.produce(broker.bootstrap, topic, late, "none", "1")
        expected.extend(m for m in late if m.partition != 3)
        consume_until({p: n for p, n in harness.counts(expected).items() if p != 3})
        deadline = time.monotonic() + QUIET_POLL_S
        while time.monotonic() < deadline:
            assert not consumer.poll(timeout_ms=200), "records after the last expected ones"
        harness.assert_records_match(expected, records, PARTITIONS)
        assert session()[0] == session_id, "the session was replaced instead of updated"
    finally:
        consumer.close()
