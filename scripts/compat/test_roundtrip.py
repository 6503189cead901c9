"""Every client x every codec: produce 200 keyed messages with headers to 3
partitions (explicit partition per message), then read each partition from the
beginning and compare the exact sequence. acks 0, 1 and all are spread over the
codecs (harness.CODEC_ACKS)."""
import pytest

import harness
from clients import aiokafka, confluent, kafka_python, kafkajs, kcat

# client name -> (producer, consumer). KafkaJS consumes through a consumer group
# (it has no other consumer); the others assign partitions themselves.
CLIENTS = {
    "kcat": (kcat, kcat),
    "confluent": (confluent, confluent),
    "kafka-python": (kafka_python, kafka_python),
    "aiokafka": (aiokafka, aiokafka),
    "kafkajs": (kafkajs, kafkajs),
}


@pytest.mark.parametrize("codec,acks", harness.CODEC_ACKS, ids=[f"{c}-acks{a}" for c, a in harness.CODEC_ACKS])
@pytest.mark.parametrize("client", list(CLIENTS))
def test_roundtrip(broker, topic, client, codec, acks):
    producer, consumer = CLIENTS[client]
    harness.create_topic(broker.bootstrap, topic, harness.PARTITIONS)
    msgs = harness.make_messages(tag=client)

    producer.produce(broker.bootstrap, topic, msgs, codec, acks)
    ends = harness.wait_for_high_watermarks(broker.bootstrap, topic, harness.counts(msgs))
    harness.assert_records_match(msgs, consumer.consume(broker.bootstrap, topic, ends))
