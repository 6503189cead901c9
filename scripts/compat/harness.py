"""Shared pieces of corelog's client-compatibility tests: the expected data,
the comparison, and topic/offset helpers (done with confluent-kafka's admin API).

Nothing here waits without a deadline: every loop is bounded and fails with
what it saw.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterable

from confluent_kafka import KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]
# Each client runs every codec; across the codecs it also runs acks 0, 1 and all.
CODEC_ACKS = list(zip(CODECS, ["all", "1", "0", "all", "1"]))
PARTITIONS = 3
N_MESSAGES = 200
# Headers stay the same over runs of HEADER_RUN consecutive messages: kcat's -H
# applies to a whole invocation, so kcat runs once per run of each partition.
HEADER_RUN = 50

ADMIN_TIMEOUT = 15.0
CONSUME_TIMEOUT = 60.0

Headers = tuple  # tuple[tuple[str, bytes], ...], in wire order

# librdkafka logs through Python logging (pytest shows it with a failure), not
# straight to stderr, where clients left alive by a traceback would keep
# printing after their broker is gone.
RDKAFKA_LOG = logging.getLogger("librdkafka")


@dataclass(frozen=True)
class Msg:
    """A message as produced: an explicit partition and its payload."""

    partition: int
    key: bytes
    value: bytes
    headers: Headers
    timestamp: int | None = None  # CreateTime in ms; None: the producer's clock


@dataclass(frozen=True)
class Record:
    """A message as consumed."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers
    timestamp: int | None = None


def make_messages(n: int = N_MESSAGES, partitions: int = PARTITIONS, tag: str = "m") -> list[Msg]:
    """n keyed messages with headers, spread round-robin over the partitions.

    Values vary in length (some a few KiB) and compress well. Everything is
    printable ASCII without tab, newline, ',' or '=', so kcat's line format and
    its %h output (n=v CSV) carry it unchanged. A header name repeats, to check
    that order and duplicates survive.
    """
    msgs = []
    for i in range(n):
        filler = "abcdefgh" * (i % 37) + ("0123456789" * 400 if i % 50 == 7 else "")
        run = f"{tag}{i // HEADER_RUN}".encode()
        msgs.append(Msg(
            partition=i % partitions,
            key=f"{tag}-key-{i:05d}".encode(),
            value=f"{tag}-value-{i:05d}-{filler}".encode(),
            headers=(("src", b"corelog-compat"), ("run", run), ("dup", b"first"), ("dup", b"second")),
        ))
    return msgs


def counts(msgs: Iterable[Msg]) -> dict[int, int]:
    out: dict[int, int] = defaultdict(int)
    for m in msgs:
        out[m.partition] += 1
    return dict(out)


def assert_records_match(expected: list[Msg], records: list[Record], partitions: int = PARTITIONS) -> None:
    """Per partition, the consumed (key, value, headers) must equal the produced
    sequence exactly (no loss, duplicates or reordering), at offsets 0, 1, 2, ...
    Records are taken in the order the client returned them."""
    want: dict[int, list] = defaultdict(list)
    for m in expected:
        want[m.partition].append((m.key, m.value, tuple(m.headers)))
    got: dict[int, list] = defaultdict(list)
    offsets: dict[int, list] = defaultdict(list)
    for r in records:
        got[r.partition].append((r.key, r.value, tuple(r.headers or ())))
        offsets[r.partition].append(r.offset)

    problems = []
    for p in sorted(set(range(partitions)) | set(got)):
        w, g = want.get(p, []), got.get(p, [])
        if offsets[p] != list(range(len(g))):
            problems.append(f"partition {p}: offsets not 0..{len(g) - 1}: {_abbrev(offsets[p])}")
        if w != g:
            i = next((i for i, (a, b) in enumerate(zip(w, g)) if a != b), min(len(w), len(g)))
            problems.append(
                f"partition {p}: expected {len(w)} records, got {len(g)}; first difference at index {i}:\n"
                f"    expected {_show(w[i]) if i < len(w) else '<end>'}\n"
                f"    got      {_show(g[i]) if i < len(g) else '<end>'}")
    assert not problems, "consumed data differs from produced data:\n  " + "\n  ".join(problems)


def _show(rec) -> str:
    key, value, headers = rec
    v = value if value is None or len(value) <= 60 else value[:60] + b"..."
    return f"key={key!r} value={v!r} ({len(value or b'')} bytes) headers={list(headers)!r}"


def _abbrev(xs: list) -> str:
    return repr(xs) if len(xs) <= 12 else f"{xs[:6]} ... {xs[-6:]} ({len(xs)} items)"


def deadline_loop(timeout: float, what: str, poll: Callable[[], object], interval: float = 0.1):
    """Call poll() until it returns a truthy value, or fail after timeout seconds
    with its last return value (or exception)."""
    end = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            last = poll()
            if last:
                return last
        except (KafkaException, OSError) as e:
            last = e
        if time.monotonic() >= end:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")
        time.sleep(interval)


def unique_topic(prefix: str) -> str:
    safe = "".join(c if c.isalnum() or c in "._-" else "-" for c in prefix)[:180]
    return f"{safe}-{uuid.uuid4().hex[:8]}"


# --- admin helpers (confluent-kafka) ---------------------------------------------------

def admin(bootstrap: str) -> AdminClient:
    return AdminClient({"bootstrap.servers": bootstrap, "socket.timeout.ms": 10000, "logger": RDKAFKA_LOG})


def list_topics(bootstrap: str) -> dict:
    """All topics' metadata. Asks for every topic (a null topic list), which
    never auto-creates anything, unlike a Metadata request naming a topic.
    (librdkafka >= 2.x sends this Metadata v12+ request with 3 bytes after the
    body, librdkafka issue #5049; Apache Kafka ignores them.)"""
    return admin(bootstrap).list_topics(timeout=ADMIN_TIMEOUT).topics


def wait_for_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Wait until Metadata shows the (existing) topic with all partitions led.
    Asks for this topic only: that would auto-create a missing topic, so use
    list_topics() to check that a topic does not exist."""
    a = admin(bootstrap)

    def ready():
        t = a.list_topics(topic=topic, timeout=ADMIN_TIMEOUT).topics.get(topic)
        return (t is not None and t.error is None and len(t.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in t.partitions.values()))
    deadline_loop(ADMIN_TIMEOUT, f"topic {topic} with {partitions} led partitions in metadata", ready)


def create_topic(bootstrap: str, topic: str, partitions: int = PARTITIONS, config: dict | None = None,
                 replication_factor: int = 1) -> None:
    a = admin(bootstrap)  # keep a reference: futures never complete once it is gone
    futures = a.create_topics(
        [NewTopic(topic, num_partitions=partitions, replication_factor=replication_factor, config=config or {})],
        operation_timeout=ADMIN_TIMEOUT, request_timeout=ADMIN_TIMEOUT)
    futures[topic].result(timeout=ADMIN_TIMEOUT + 5)
    wait_for_topic(bootstrap, topic, partitions)


def list_offsets(bootstrap: str, topic: str, partitions: Iterable[int], spec: OffsetSpec) -> dict[int, int]:
    a = admin(bootstrap)
    futures = a.list_offsets({TopicPartition(topic, p): spec for p in partitions}, request_timeout=ADMIN_TIMEOUT)
    return {tp.partition: f.result(timeout=ADMIN_TIMEOUT + 5).offset for tp, f in futures.items()}


def wait_for_high_watermarks(bootstrap: str, topic: str, expected: dict[int, int]) -> dict[int, int]:
    """Wait until each partition's latest offset reaches the expected count and
    return the latest offsets. After acks=0 the produce requests may still be in
    flight on the producer's connection when the producer is done; this waits for
    them without sleeping for a guessed time. Overshoot is left to the comparison."""
    seen: dict[int, int] = {}

    def reached():
        seen.clear()
        seen.update(list_offsets(bootstrap, topic, expected, OffsetSpec.latest()))
        return all(seen[p] >= n for p, n in expected.items())

    try:
        deadline_loop(ADMIN_TIMEOUT, f"latest offsets of {topic} to reach {expected}", reached)
    except AssertionError as e:
        raise AssertionError(f"{e}; latest offsets seen: {seen}") from None
    return dict(seen)


def is_error(e: BaseException, code: int) -> bool:
    """Whether e is a KafkaException carrying the given KafkaError code."""
    err = e.args[0] if isinstance(e, KafkaException) and e.args else None
    return isinstance(err, KafkaError) and err.code() == code
