"""Group consumers for test_groups.py: one adapter per client, each run as its own
process so a test can stop it gracefully or SIGKILL it.

A consumer is a child process (`python3 groups.py SPEC`, or `node node/kafkajs_group.js
SPEC` for KafkaJS) that subscribes to one topic in one group with the client's usual
group settings (auto commit, auto.offset.reset=earliest) and writes one JSON event a
line on stdout:

    {"ev": "assigned", "added": [p, ...], "owned": [p, ...]}   # after each assignment
    {"ev": "revoked",  "removed": [p, ...], "owned": [...]}    # revoked (or lost)
    {"ev": "records",  "recs": [[partition, offset, key], ...]}
    {"ev": "member",   "id": member_id}                        # confluent-kafka and KafkaJS
    {"ev": "error",    "msg": "..."}                           # client errors (kept for reports)
    {"ev": "closed"}                                           # after a graceful close

It reads commands on stdin: `stop` closes the consumer the client's normal way (which
commits the consumed offsets and leaves the group) and exits 0; end of input does the
same. Every child also exits on its own after SPEC["lifetime_s"].

The test side is `ConsumerProc`: it starts a child, folds its events into the current
assignment and the records read, and waits for conditions with deadlines.
"""
from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable

HERE = Path(__file__).resolve().parent
NODE_DIR = HERE / "node"

# Clients with a group consumer. "confluent-kip848" is confluent-kafka with
# group.protocol=consumer (KIP-848, server-side assignment).
CLIENTS = ["confluent", "confluent-kip848", "kafka-python", "aiokafka", "kafkajs"]

# Classic session and heartbeat settings of the clients (the broker's minimum session
# timeout is lowered to 1000 ms by the tests); KIP-848 members get theirs from the broker.
SESSION_TIMEOUT_MS = 4000
HEARTBEAT_INTERVAL_MS = 500
# Also the rebalance timeout: how long the coordinator waits for members to rejoin.
MAX_POLL_INTERVAL_MS = 20000
CHILD_LIFETIME_S = 150.0


# ======================================================================================
# Test side
# ======================================================================================

class ConsumerProc:
    """One group consumer in a child process, and what it has reported so far."""

    def __init__(self, client: str, bootstrap: str, topic: str, group: str, name: str,
                 assignor: str | None = None, instance_id: str | None = None,
                 config: dict | None = None, session_timeout_ms: int = SESSION_TIMEOUT_MS):
        self.client, self.name, self.group = client, name, group
        self.spec = {"client": client, "bootstrap": bootstrap, "topic": topic, "group": group,
                     "name": name, "assignor": assignor, "instance_id": instance_id,
                     "config": config or {}, "session_timeout_ms": session_timeout_ms,
                     "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
                     "max_poll_interval_ms": MAX_POLL_INTERVAL_MS, "lifetime_s": CHILD_LIFETIME_S}
        self.cond = threading.Condition()
        self.owned: set[int] = set()
        self.records: list[tuple[int, int, str]] = []
        self.events: list[dict] = []
        self.errors: list[str] = []
        self.member_id: str | None = None
        self.closed = False
        self.eof = False
        self.proc: subprocess.Popen | None = None
        self._stderr = tempfile.TemporaryFile()
        self._reader: threading.Thread | None = None

    # --- process -------------------------------------------------------------------------

    def start(self) -> "ConsumerProc":
        if self.client == "kafkajs":
            cmd = ["node", str(NODE_DIR / "kafkajs_group.js"), json.dumps(self.spec)]
        else:
            cmd = [sys.executable, str(HERE / "groups.py"), json.dumps(self.spec)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, cwd=HERE)
        self._reader = threading.Thread(target=self._read, name=f"reader-{self.name}", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                ev = json.loads(line)
            except ValueError:
                ev = {"ev": "error", "msg": f"unparsable line {line[:200]!r}"}
            with self.cond:
                self._apply(ev)
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def _apply(self, ev: dict) -> None:
        kind = ev.get("ev")
        if kind == "records":
            self.records.extend((p, o, k) for p, o, k in ev["recs"])
            return  # not kept in events: there are many
        self.events.append({**ev, "t": time.monotonic(), "n_records": len(self.records)})
        if kind in ("assigned", "revoked"):
            self.owned = set(ev["owned"])
        elif kind == "member":
            self.member_id = ev["id"]
        elif kind == "error":
            self.errors.append(ev["msg"])
        elif kind == "closed":
            self.closed = True

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop_async(self) -> None:
        """Ask for a graceful close (commit, leave the group, exit)."""
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def wait_exit(self, timeout: float = 30.0) -> None:
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{self.name} did not exit within {timeout:.0f}s of `stop`\n{self.report()}")
        if self._reader is not None:
            self._reader.join(5)
        assert code == 0 and self.closed, f"{self.name} exited {code} (closed={self.closed})\n{self.report()}"

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_async()
        self.wait_exit(timeout)

    def kill(self) -> None:
        """SIGKILL: no commit, no LeaveGroup, connections just drop."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self._reader is not None:
            self._reader.join(5)

    def cleanup(self) -> None:
        if self.alive:
            self.proc.kill()
            self.proc.wait(10)

    # --- state -----------------------------------------------------------------------------

    def snapshot(self) -> tuple[set[int], int]:
        with self.cond:
            return set(self.owned), len(self.records)

    def wait_for(self, pred: Callable[[], bool], timeout: float, what: str) -> None:
        end = time.monotonic() + timeout
        with self.cond:
            while not pred():
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{self.name}: timed out after {timeout:.0f}s waiting for {what}\n"
                                         f"{self.report()}")
                self.cond.wait(min(left, 0.2))

    def stderr_tail(self, chars: int = 2500) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-chars:]

    def report(self) -> str:
        code = self.proc.poll() if self.proc else None
        evs = [{k: v for k, v in e.items() if k != "t"} for e in self.events[-12:]]
        return (f"  [{self.name}: {self.client}, exit={code}, owned={sorted(self.owned)}, "
                f"{len(self.records)} records, errors={self.errors[-5:]}]\n"
                f"    last events: {evs}\n"
                f"    stderr tail: {self.stderr_tail()!s}")


def start_consumers(n: int, client: str, bootstrap: str, topic: str, group: str, prefix: str = "c",
                    **kw) -> list[ConsumerProc]:
    return [ConsumerProc(client, bootstrap, topic, group, f"{prefix}{i}", **kw).start() for i in range(n)]


def report(consumers: Iterable[ConsumerProc]) -> str:
    return "\n".join(c.report() for c in consumers)


def wait_until(consumers: list[ConsumerProc], pred: Callable[[], bool], timeout: float, what: str,
               interval: float = 0.05) -> float:
    """Wait until pred() holds (checked under no lock; it reads snapshots); returns the
    time it took."""
    start = time.monotonic()
    while not pred():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}\n{report(consumers)}")
        dead = [c.name for c in consumers if c.proc is not None and c.proc.poll() not in (None, 0)
                and not c.closed and c.proc.returncode != -signal.SIGKILL]
        if dead:
            raise AssertionError(f"consumer(s) {dead} died while waiting for {what}\n{report(consumers)}")
        time.sleep(interval)
    return time.monotonic() - start


def assignment_complete(consumers: list[ConsumerProc], partitions: int) -> bool:
    """Every consumer owns at least one partition, no partition is owned twice, together
    they own them all, and the shares differ in size by at most one (every assignor used
    here balances; an incremental protocol passes through unbalanced states on its way)."""
    owned = [c.snapshot()[0] for c in consumers]
    if any(not o for o in owned):
        return False
    flat = [p for o in owned for p in o]
    sizes = [len(o) for o in owned]
    return (len(flat) == len(set(flat)) and set(flat) == set(range(partitions))
            and max(sizes) - min(sizes) <= 1)


def wait_assignment(consumers: list[ConsumerProc], partitions: int, timeout: float = 30.0,
                    extra: Callable[[], bool] = lambda: True) -> float:
    return wait_until(consumers, lambda: assignment_complete(consumers, partitions) and extra(), timeout,
                      f"{len(consumers)} consumer(s) to own balanced, disjoint shares of {partitions} partitions")


def seen(consumers: Iterable[ConsumerProc]) -> set[tuple[int, int]]:
    out = set()
    for c in consumers:
        with c.cond:
            out.update((p, o) for p, o, _ in c.records)
    return out


def wait_consumed(consumers: list[ConsumerProc], expected: dict[tuple[int, int], str],
                  timeout: float = 30.0) -> float:
    """Wait until the consumers together have read every expected (partition, offset)."""
    want = set(expected)

    def done():
        return want <= seen(consumers)

    try:
        return wait_until(consumers, done, timeout, f"{len(want)} records to be consumed")
    except AssertionError as e:
        missing = sorted(want - seen(consumers))
        raise AssertionError(f"{e}\nstill missing {len(missing)}: {missing[:20]}") from None


def check_exactly_once(consumers: list[ConsumerProc], expected: dict[tuple[int, int], str]) -> dict:
    """All records the consumers read, together, are exactly the expected ones, each once
    and with its key. Returns {(partition, offset): consumer name}."""
    who: dict[tuple[int, int], list[str]] = {}
    problems = []
    for c in consumers:
        with c.cond:
            recs = list(c.records)
        for p, o, k in recs:
            who.setdefault((p, o), []).append(c.name)
            if (p, o) in expected and expected[(p, o)] != k:
                problems.append(f"p{p}@{o}: key {k!r}, produced {expected[(p, o)]!r}")
    dupes = {po: names for po, names in who.items() if len(names) > 1}
    missing = sorted(set(expected) - set(who))
    extra = sorted(set(who) - set(expected))
    if dupes:
        problems.append(f"{len(dupes)} records read more than once, e.g. {sorted(dupes.items())[:10]}")
    if missing:
        problems.append(f"{len(missing)} records never read, e.g. {missing[:10]}")
    if extra:
        problems.append(f"{len(extra)} unexpected records read, e.g. {extra[:10]}")
    assert not problems, "not exactly once:\n  " + "\n  ".join(problems[:20]) + "\n" + report(consumers)
    return {po: names[0] for po, names in who.items()}


# --- producing and offsets (confluent-kafka) ----------------------------------------------

def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """CreateTopics, then wait until Metadata for this topic shows every partition led.

    Unlike harness.create_topic this asks for the one topic only: librdkafka (>= 2.3)
    encodes an all-topics Metadata v9+ request with 3 bytes after its tagged fields,
    which Kafka ignores and corelog refuses (see the report of test_groups)."""
    import harness
    from confluent_kafka.admin import NewTopic
    a = harness.admin(bootstrap)
    futures = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)],
                              operation_timeout=harness.ADMIN_TIMEOUT, request_timeout=harness.ADMIN_TIMEOUT)
    futures[topic].result(timeout=harness.ADMIN_TIMEOUT + 5)

    def ready():
        t = a.list_topics(topic=topic, timeout=harness.ADMIN_TIMEOUT).topics.get(topic)
        return (t is not None and t.error is None and len(t.partitions) == partitions
                and all(p.leader >= 0 and p.error is None for p in t.partitions.values()))

    harness.deadline_loop(harness.ADMIN_TIMEOUT, f"topic {topic} with {partitions} led partitions", ready)


def produce_keyed(bootstrap: str, topic: str, n: int, tag: str, timeout: float = 30.0) -> dict[tuple[int, int], str]:
    """n keyed messages, partitioned by key (the client's default partitioner), acks=all.
    Returns {(partition, offset): key} from the delivery reports."""
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5,
                  "compression.type": "lz4"})
    out: dict[tuple[int, int], str] = {}
    errors = []

    def on_delivery(err, msg):
        if err is not None:
            errors.append(err)
        else:
            out[(msg.partition(), msg.offset())] = msg.key().decode()

    for i in range(n):
        key = f"{tag}-key-{i:05d}"
        while True:
            try:
                p.produce(topic, key=key.encode(), value=f"{tag}-value-{i:05d}-".encode() + b"x" * (i % 200),
                          on_delivery=on_delivery)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    left = p.flush(timeout)
    assert left == 0 and not errors and len(out) == n, f"{left} undelivered, {len(out)}/{n} acked, errors: {errors[:5]}"
    return out


def partition_counts(records: Iterable[tuple[int, int]]) -> dict[int, int]:
    return dict(Counter(p for p, _ in records))


def committed_offsets(bootstrap: str, group: str, topic: str | None = None) -> dict[int, int]:
    """The group's committed offsets (of topic, or of every topic if None) via AdminClient
    list_consumer_group_offsets; {partition: offset}, partitions without one left out."""
    import harness
    from confluent_kafka import ConsumerGroupTopicPartitions
    a = harness.admin(bootstrap)
    f = a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                      request_timeout=harness.ADMIN_TIMEOUT)
    res = f[group].result(timeout=harness.ADMIN_TIMEOUT + 5)
    out = {}
    for tp in res.topic_partitions:
        assert tp.error is None, f"offset fetch error for {tp}: {tp.error}"
        if (topic is None or tp.topic == topic) and tp.offset >= 0:
            out[tp.partition] = tp.offset
    return out


def wait_committed(bootstrap: str, group: str, topic: str, want: dict[int, int], timeout: float = 20.0) -> None:
    """Wait until the group's committed offsets of topic equal want (partitions with 0 may
    have none)."""
    import harness
    last: dict = {}

    def ok():
        last.clear()
        last.update(committed_offsets(bootstrap, group, topic))
        return all(last.get(p, 0) == o for p, o in want.items())

    try:
        harness.deadline_loop(timeout, f"group {group} to commit {want}", ok, interval=0.2)
    except AssertionError as e:
        raise AssertionError(f"{e}; committed: {last}") from None


def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    import harness
    from confluent_kafka.admin import OffsetSpec
    return harness.list_offsets(bootstrap, topic, range(partitions), OffsetSpec.latest())


# ======================================================================================
# Child side: one consumer per process
# ======================================================================================

class Child:
    """Event output and stdin commands of a consumer child process."""

    def __init__(self, spec: dict):
        self.spec = spec
        self.lock = threading.Lock()
        self.commands: queue.Queue[str] = queue.Queue()
        self.deadline = time.monotonic() + spec["lifetime_s"]
        self.owned: set[int] = set()
        threading.Thread(target=self._stdin, daemon=True).start()

    def _stdin(self) -> None:
        for line in sys.stdin:
            self.commands.put(line.strip())
        self.commands.put("stop")  # parent gone: close and exit

    def emit(self, **ev) -> None:
        line = json.dumps(ev) + "\n"
        with self.lock:
            sys.stdout.write(line)
            sys.stdout.flush()

    def assigned(self, partitions: Iterable[int]) -> None:
        added = sorted(partitions)
        self.owned |= set(added)
        self.emit(ev="assigned", added=added, owned=sorted(self.owned))

    def revoked(self, partitions: Iterable[int], how: str = "revoked") -> None:
        removed = sorted(partitions)
        self.owned -= set(removed)
        self.emit(ev="revoked", removed=removed, owned=sorted(self.owned), how=how)

    def records(self, recs: list) -> None:
        if recs:
            self.emit(ev="records", recs=recs)

    def should_stop(self) -> bool:
        if time.monotonic() > self.deadline:
            self.emit(ev="error", msg=f"lifetime of {self.spec['lifetime_s']}s reached")
            return True
        try:
            while True:
                if self.commands.get_nowait() == "stop":
                    return True
        except queue.Empty:
            return False


def child_confluent(ch: Child) -> None:
    from confluent_kafka import Consumer
    s = ch.spec
    kip848 = s["client"] == "confluent-kip848"
    conf = {"bootstrap.servers": s["bootstrap"], "group.id": s["group"], "client.id": s["name"],
            "auto.offset.reset": "earliest", "enable.auto.commit": True, "auto.commit.interval.ms": 500,
            "check.crcs": True, "fetch.wait.max.ms": 200,
            "error_cb": lambda err: ch.emit(ev="error", msg=f"error_cb: {err}"),
            "on_commit": lambda err, parts: err and ch.emit(ev="error", msg=f"commit failed: {err}")}
    if kip848:
        # session and heartbeat come from the broker; the assignor is the broker's
        conf["group.protocol"] = "consumer"
        if s["assignor"]:
            conf["group.remote.assignor"] = s["assignor"]
    else:
        conf.update({"session.timeout.ms": s["session_timeout_ms"],
                     "heartbeat.interval.ms": s["heartbeat_interval_ms"],
                     "max.poll.interval.ms": s["max_poll_interval_ms"]})
        if s["assignor"]:
            conf["partition.assignment.strategy"] = s["assignor"]
    if s["instance_id"]:
        conf["group.instance.id"] = s["instance_id"]
    conf.update(s["config"])
    c = Consumer(conf)
    member = [None]

    def on_assign(consumer, parts):
        ch.assigned(tp.partition for tp in parts)
        if consumer.memberid() != member[0]:
            member[0] = consumer.memberid()
            ch.emit(ev="member", id=member[0])

    c.subscribe([s["topic"]], on_assign=on_assign,
                on_revoke=lambda consumer, parts: ch.revoked((tp.partition for tp in parts), "revoked"),
                on_lost=lambda consumer, parts: ch.revoked((tp.partition for tp in parts), "lost"))
    while not ch.should_stop():
        recs = []
        for m in c.consume(num_messages=500, timeout=0.2):
            if m.error():
                ch.emit(ev="error", msg=f"consume: {m.error()}")
            else:
                recs.append([m.partition(), m.offset(), m.key().decode()])
        ch.records(recs)
    c.close()  # commits the consumed offsets (auto commit) and leaves the group
    ch.emit(ev="closed")


def child_kafka_python(ch: Child) -> None:
    from kafka import KafkaConsumer
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    s = ch.spec
    kw = dict(bootstrap_servers=s["bootstrap"], group_id=s["group"], client_id=s["name"],
              auto_offset_reset="earliest", enable_auto_commit=True, auto_commit_interval_ms=500,
              session_timeout_ms=s["session_timeout_ms"], heartbeat_interval_ms=s["heartbeat_interval_ms"],
              max_poll_interval_ms=s["max_poll_interval_ms"], fetch_max_wait_ms=200)
    if s["assignor"]:
        from kafka.coordinator.assignors.range import RangePartitionAssignor
        from kafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
        kw["partition_assignment_strategy"] = [
            {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}[s["assignor"]]]
    if s["instance_id"]:
        kw["group_instance_id"] = s["instance_id"]
    kw.update(s["config"])
    c = KafkaConsumer(**kw)

    class Listener(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            ch.revoked(tp.partition for tp in revoked)

        def on_partitions_assigned(self, assigned):
            ch.assigned(tp.partition for tp in assigned)

    c.subscribe([s["topic"]], listener=Listener())
    while not ch.should_stop():
        recs = []
        for tp, batch in c.poll(timeout_ms=200, max_records=500).items():
            recs.extend([tp.partition, r.offset, r.key.decode()] for r in batch)
        ch.records(recs)
    c.close(autocommit=True)
    ch.emit(ev="closed")


def child_aiokafka(ch: Child) -> None:
    import asyncio

    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
    s = ch.spec

    class Listener(ConsumerRebalanceListener):
        async def on_partitions_revoked(self, revoked):
            ch.revoked(tp.partition for tp in revoked)

        async def on_partitions_assigned(self, assigned):
            ch.assigned(tp.partition for tp in assigned)

    async def run():
        kw = dict(bootstrap_servers=s["bootstrap"], group_id=s["group"], client_id=s["name"],
                  auto_offset_reset="earliest", enable_auto_commit=True, auto_commit_interval_ms=500,
                  session_timeout_ms=s["session_timeout_ms"], heartbeat_interval_ms=s["heartbeat_interval_ms"],
                  max_poll_interval_ms=s["max_poll_interval_ms"], fetch_max_wait_ms=200)
        if s["assignor"]:
            from aiokafka.coordinator.assignors.range import RangePartitionAssignor
            from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
            kw["partition_assignment_strategy"] = [
                {"range": RangePartitionAssignor, "roundrobin": RoundRobinPartitionAssignor}[s["assignor"]]]
        if s["instance_id"]:
            kw["group_instance_id"] = s["instance_id"]
        kw.update(s["config"])
        c = AIOKafkaConsumer(**kw)
        c.subscribe([s["topic"]], listener=Listener())
        await c.start()
        try:
            while not ch.should_stop():
                recs = []
                for tp, batch in (await c.getmany(timeout_ms=200, max_records=500)).items():
                    recs.extend([tp.partition, r.offset, r.key.decode()] for r in batch)
                ch.records(recs)
        finally:
            await c.stop()  # commits (auto commit) and leaves the group
        ch.emit(ev="closed")

    asyncio.run(run())


def child_main(spec: dict) -> None:
    ch = Child(spec)
    run = {"confluent": child_confluent, "confluent-kip848": child_confluent,
           "kafka-python": child_kafka_python, "aiokafka": child_aiokafka}[spec["client"]]
    try:
        run(ch)
    except BaseException as e:  # report, then fail the process
        import traceback
        ch.emit(ev="error", msg=f"{type(e).__name__}: {e}")
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(3)
    sys.stdout.flush()
    os._exit(0)  # do not wait for client threads


if __name__ == "__main__":
    import logging
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    child_main(json.loads(sys.argv[1]))
