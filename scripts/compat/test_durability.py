"""Acknowledged (acks=all) data survives `kill -9` of the broker."""
import pytest

import harness
from clients import confluent

N = 10_000


@pytest.mark.timeout(600)
def test_acks_all_survives_kill9(broker, topic):
    harness.create_topic(broker.bootstrap, topic, harness.PARTITIONS)
    msgs = harness.make_messages(N, tag="durable")
    acked = confluent.produce(broker.bootstrap, topic, msgs, "none", "all")
    for p, n in harness.counts(msgs).items():
        assert acked.get(p) == list(range(n)), f"partition {p}: acknowledged offsets are not 0..{n - 1}"

    broker.kill9()
    broker.start()  # same port, same data dir

    ends = harness.wait_for_high_watermarks(broker.bootstrap, topic, harness.counts(msgs))
    assert ends == harness.counts(msgs), "latest offsets after restart"
    harness.assert_records_match(msgs, confluent.consume(broker.bootstrap, topic, ends))

    # The log goes on where it stopped: new messages get the next offsets.
    more = harness.make_messages(30, tag="after-restart")
    acked = confluent.produce(broker.bootstrap, topic, more, "lz4", "all")
    for p, n in harness.counts(more).items():
        start = harness.counts(msgs)[p]
        assert acked.get(p) == list(range(start, start + n)), f"partition {p}: offsets after restart"
    ends = harness.wait_for_high_watermarks(broker.bootstrap, topic, harness.counts(msgs + more))
    harness.assert_records_match(msgs + more, confluent.consume(broker.bootstrap, topic, ends))
