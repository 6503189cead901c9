"""One produce/consume adapter per client, all with the same shape:

    produce(bootstrap, topic, msgs, codec, acks)  # returns once every message is acknowledged
    consume(bootstrap, topic, ends) -> [Record]    # reads each partition from offset 0 up to ends[p]

codec is one of harness.CODECS, acks one of "0", "1", "all". Consumers use
manual assignment with no group and no offset commits (the broker has no
consumer groups yet); every loop has a deadline.
"""
from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import subprocess
import time
from collections import defaultdict
from pathlib import Path

from harness import CONSUME_TIMEOUT, RDKAFKA_LOG, Record

NODE_DIR = Path(__file__).resolve().parent / "node"
PRODUCE_TIMEOUT = 60.0


def _progress(ends: dict[int, int], positions: dict[int, int]) -> str:
    return ", ".join(f"p{p}: {positions.get(p, 0)}/{n}" for p, n in sorted(ends.items()))


def _run(cmd: list[str], timeout: float, **kw) -> subprocess.CompletedProcess:
    """Run a client process; fail with its stderr tail if it fails or overruns."""
    tail = lambda b: (b or b"").decode(errors="replace")[-3000:]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{cmd[0]} timed out after {timeout}s: {cmd}\nstderr:\n{tail(e.stderr)}") from None
    if proc.returncode != 0:
        raise AssertionError(f"{cmd[0]} exited {proc.returncode}: {cmd}\nstderr:\n{tail(proc.stderr)}")
    return proc


# --- kcat (librdkafka 2.0.x, Debian's) ------------------------------------------------

class kcat:
    BIN = os.environ.get("KCAT", "kcat")

    @staticmethod
    def produce(bootstrap, topic, msgs, codec, acks):
        # -H applies to every message of an invocation: run kcat once per stretch of
        # consecutive same-header messages of a partition, in order. -K splits each
        # input line into key and value.
        for partition in sorted({m.partition for m in msgs}):
            in_partition = (m for m in msgs if m.partition == partition)
            for headers, run in itertools.groupby(in_partition, key=lambda m: m.headers):
                cmd = [kcat.BIN, "-P", "-q", "-b", bootstrap, "-t", topic, "-p", str(partition),
                       "-K", "\t", "-z", codec, "-X", f"acks={acks}", "-X", "linger.ms=5",
                       "-X", "enable.idempotence=false"]
                for name, value in headers:
                    cmd += ["-H", f"{name}={value.decode()}"]
                _run(cmd, PRODUCE_TIMEOUT, input=b"".join(m.key + b"\t" + m.value + b"\n" for m in run))

    @staticmethod
    def consume(bootstrap, topic, ends):
        # Simple (group-less) consumer over all partitions; -e exits at the end of each.
        cmd = [kcat.BIN, "-C", "-q", "-b", bootstrap, "-t", topic, "-o", "beginning", "-e",
               "-X", "check.crcs=true", "-f", "%p\t%o\t%k\t%s\t%h\n"]
        out = _run(cmd, CONSUME_TIMEOUT).stdout
        records = []
        for line in out.split(b"\n")[:-1]:
            p, o, k, v, h = line.split(b"\t")
            headers = tuple((n.decode(), val) for n, _, val in
                            (kv.partition(b"=") for kv in h.split(b","))) if h else ()
            records.append(Record(int(p), int(o), k, v, headers))
        return records


# --- confluent-kafka (bundled librdkafka) ---------------------------------------------

class confluent:
    @staticmethod
    def producer_config(bootstrap, codec, acks):
        return {"bootstrap.servers": bootstrap, "acks": acks, "compression.type": codec,
                "linger.ms": 5, "enable.idempotence": False, "logger": RDKAFKA_LOG}

    @staticmethod
    def produce(bootstrap, topic, msgs, codec, acks) -> dict[int, list[int]]:
        """Returns the acknowledged offsets per partition, in delivery-report order
        (-1 with acks=0). Uses each Msg's timestamp when it has one."""
        from confluent_kafka import Producer
        p = Producer(confluent.producer_config(bootstrap, codec, acks))
        errors, offsets = [], defaultdict(list)

        def on_delivery(err, msg):
            if err is not None:
                errors.append(err)
            else:
                offsets[msg.partition()].append(msg.offset())

        for m in msgs:
            while True:
                try:
                    p.produce(topic, value=m.value, key=m.key, partition=m.partition, headers=list(m.headers),
                              timestamp=m.timestamp or 0, on_delivery=on_delivery)
                    break
                except BufferError:  # local queue full: serve delivery reports, retry
                    p.poll(0.1)
            p.poll(0)
        left = p.flush(PRODUCE_TIMEOUT)
        assert left == 0 and not errors, f"{left} undelivered, errors: {errors[:5]}"
        assert sum(map(len, offsets.values())) == len(msgs)
        return dict(offsets)

    @staticmethod
    def consume(bootstrap, topic, ends):
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
        # confluent-kafka refuses to build a Consumer without group.id; it is only
        # a name here: partitions are assigned by hand and nothing is committed.
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": "corelog-compat-unused",
                      "enable.auto.commit": False, "enable.auto.offset.store": False,
                      "check.crcs": True, "logger": RDKAFKA_LOG})
        try:
            c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p, n in ends.items() if n > 0])
            records, pos = [], defaultdict(int)
            deadline = time.monotonic() + CONSUME_TIMEOUT
            while any(pos[p] < n for p, n in ends.items()):
                assert time.monotonic() < deadline, f"confluent consume timed out at {_progress(ends, pos)}"
                for msg in c.consume(num_messages=500, timeout=0.5):
                    if msg.error():
                        raise AssertionError(f"consume error: {msg.error()}")
                    records.append(Record(msg.partition(), msg.offset(), msg.key(), msg.value(),
                                          tuple(msg.headers() or ()), msg.timestamp()[1]))
                    pos[msg.partition()] = msg.offset() + 1
            return records
        finally:
            c.close()


# --- kafka-python ---------------------------------------------------------------------

class kafka_python:
    @staticmethod
    def produce(bootstrap, topic, msgs, codec, acks):
        from kafka import KafkaProducer
        p = KafkaProducer(bootstrap_servers=bootstrap, acks=acks if acks == "all" else int(acks),
                          compression_type=None if codec == "none" else codec, linger_ms=5,
                          enable_idempotence=False)
        try:
            futures = [p.send(topic, value=m.value, key=m.key, partition=m.partition, headers=list(m.headers))
                       for m in msgs]
            p.flush(timeout=PRODUCE_TIMEOUT)
            for f in futures:
                f.get(timeout=PRODUCE_TIMEOUT)  # raises the delivery error, if any
        finally:
            p.close(timeout=10)

    @staticmethod
    def consume(bootstrap, topic, ends):
        from kafka import KafkaConsumer, TopicPartition
        c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                          check_crcs=True)
        try:
            tps = [TopicPartition(topic, p) for p, n in ends.items() if n > 0]
            c.assign(tps)
            c.seek_to_beginning(*tps)
            records, pos = [], defaultdict(int)
            deadline = time.monotonic() + CONSUME_TIMEOUT
            while any(pos[p] < n for p, n in ends.items()):
                assert time.monotonic() < deadline, f"kafka-python consume timed out at {_progress(ends, pos)}"
                for tp, batch in c.poll(timeout_ms=500).items():
                    for r in batch:
                        records.append(Record(tp.partition, r.offset, r.key, r.value, tuple(r.headers or ())))
                        pos[tp.partition] = r.offset + 1
            return records
        finally:
            c.close()


# --- aiokafka -------------------------------------------------------------------------

class aiokafka:
    @staticmethod
    def produce(bootstrap, topic, msgs, codec, acks):
        from aiokafka import AIOKafkaProducer

        async def run():
            p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=acks if acks == "all" else int(acks),
                                 compression_type=None if codec == "none" else codec, linger_ms=5,
                                 enable_idempotence=False, request_timeout_ms=30000)
            await p.start()
            try:
                futures = [await p.send(topic, value=m.value, key=m.key, partition=m.partition,
                                        headers=list(m.headers)) for m in msgs]
                await asyncio.wait_for(asyncio.gather(*futures), PRODUCE_TIMEOUT)
            finally:
                await p.stop()

        asyncio.run(run())

    @staticmethod
    def consume(bootstrap, topic, ends):
        from aiokafka import AIOKafkaConsumer, TopicPartition

        async def run():
            c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                 check_crcs=True)
            await c.start()
            try:
                tps = [TopicPartition(topic, p) for p, n in ends.items() if n > 0]
                c.assign(tps)
                await c.seek_to_beginning(*tps)
                records, pos = [], defaultdict(int)
                deadline = time.monotonic() + CONSUME_TIMEOUT
                while any(pos[p] < n for p, n in ends.items()):
                    assert time.monotonic() < deadline, f"aiokafka consume timed out at {_progress(ends, pos)}"
                    for tp, batch in (await c.getmany(timeout_ms=500)).items():
                        for r in batch:
                            records.append(Record(tp.partition, r.offset, r.key, r.value, tuple(r.headers or ())))
                            pos[tp.partition] = r.offset + 1
                return records
            finally:
                await c.stop()

        return asyncio.run(run())


# --- KafkaJS (node/kafkajs_client.js) -------------------------------------------------

class kafkajs:
    ACKS = {"0": 0, "1": 1, "all": -1}

    @staticmethod
    def call(request: dict, timeout: float) -> dict:
        proc = _run(["node", str(NODE_DIR / "kafkajs_client.js")], timeout,
                    input=json.dumps(request).encode())
        return json.loads(proc.stdout)

    @staticmethod
    def produce(bootstrap, topic, msgs, codec, acks):
        b64 = lambda b: base64.b64encode(b).decode()
        out = kafkajs.call({
            "mode": "produce", "bootstrap": bootstrap, "topic": topic, "codec": codec,
            "acks": kafkajs.ACKS[acks],
            "messages": [{"partition": m.partition, "key": b64(m.key), "value": b64(m.value),
                          "headers": [[n, b64(v)] for n, v in m.headers]} for m in msgs],
        }, PRODUCE_TIMEOUT)
        assert out["produced"] == len(msgs), out

    @staticmethod
    def consume(bootstrap, topic, ends):
        """KafkaJS has no group-less consumer: it reads through a consumer group."""
        unb64 = lambda s: None if s is None else base64.b64decode(s)
        out = kafkajs.call({"mode": "consume", "bootstrap": bootstrap, "topic": topic, "group": f"{topic}-reader",
                            "counts": {str(p): n for p, n in ends.items()},
                            "timeout_ms": int(CONSUME_TIMEOUT * 1000) // 2}, CONSUME_TIMEOUT)
        return [Record(r["partition"], r["offset"], unb64(r["key"]), unb64(r["value"]),
                       tuple((n, unb64(v)) for n, v in r["headers"])) for r in out["records"]]
