"""Consumer groups with real clients: partition sharing, handover on close and on
SIGKILL, resuming from committed offsets (each for confluent-kafka classic and KIP-848,
kafka-python, aiokafka and KafkaJS), committed offsets across a broker kill -9, running
groups across a broker kill -9, a paused member expired and rejoining, assignors (eager,
cooperative-sticky, KIP-848 server side), static membership, and the admin API
(list/describe/delete groups, lag).

Group consumers run as child processes (groups.py; node/kafkajs_group.js for KafkaJS),
one per consumer, so they can be closed gracefully or SIGKILLed. Messages are produced
only once a group's assignment is complete, so each test can demand exactly-once
delivery: every produced (partition, offset) read once, with its key, by the consumer
that owns the partition.
"""
from __future__ import annotations

import signal
import time

import pytest
from confluent_kafka import (OFFSET_INVALID, Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions,
                             ConsumerGroupType, KafkaError, KafkaException, TopicPartition)

import harness
from groups import (CLIENTS, HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS, ConsumerProc, check_exactly_once,
                    committed_offsets, create_topic, end_offsets, partition_counts, produce_keyed, report,
                    start_consumers, wait_assignment, wait_committed, wait_consumed, wait_until)

PARTITIONS = 6
N = 600           # first batch
N2 = 300          # messages produced after a group change
KIP848_SESSION_MS = 3000

pytestmark = [
    pytest.mark.broker_args(
        "--set", "group.initial.rebalance.delay.ms=300",
        "--set", "group.min.session.timeout.ms=1000",
        "--set", f"group.consumer.session.timeout.ms={KIP848_SESSION_MS}",
        "--set", "group.consumer.heartbeat.interval.ms=500",
        "--set", "offsets.topic.num.partitions=4"),
    pytest.mark.timeout(75),
]


class Procs(list):
    """The consumer processes a test started; all are killed at teardown."""

    def start(self, n, client, bootstrap, topic, group, prefix="c", **kw) -> list[ConsumerProc]:
        cs = start_consumers(n, client, bootstrap, topic, group, prefix, **kw)
        self.extend(cs)
        return cs

    def start_one(self, client, bootstrap, topic, group, name, **kw) -> ConsumerProc:
        c = ConsumerProc(client, bootstrap, topic, group, name, **kw).start()
        self.append(c)
        return c


@pytest.fixture
def procs():
    p = Procs()
    yield p
    for c in p:
        c.cleanup()


def stop_all(consumers: list[ConsumerProc]) -> None:
    """Graceful close of all of them at once (each commits and leaves)."""
    for c in consumers:
        c.stop_async()
    for c in consumers:
        c.wait_exit(30)


def session_s(client: str) -> float:
    return (KIP848_SESSION_MS if client == "confluent-kip848" else SESSION_TIMEOUT_MS) / 1000


def owners(consumers: list[ConsumerProc]) -> dict[int, str]:
    return {p: c.name for c in consumers for p in c.snapshot()[0]}


def check_owners(consumers: list[ConsumerProc], who: dict, records, own: dict[int, str]) -> None:
    """Each record of `records` was read by the consumer that owned its partition
    (own: {partition: consumer name}, taken before the consumers were closed)."""
    wrong = {po: who[po] for po in records if who.get(po) != own.get(po[0])}
    assert not wrong, (f"records read by a consumer that does not own the partition "
                       f"(owners {own}): {sorted(wrong.items())[:10]}\n{report(consumers)}")


def setup(broker, topic, prefix="g"):
    create_topic(broker.bootstrap, topic, PARTITIONS)
    return f"{prefix}-{topic}"


# --- 1. three consumers share the partitions ---------------------------------------------

@pytest.mark.parametrize("client", CLIENTS)
def test_three_consumers_share_partitions(broker, topic, client, procs):
    group = setup(broker, topic)
    cs = procs.start(3, client, broker.bootstrap, topic, group)
    wait_assignment(cs, PARTITIONS)
    expected = produce_keyed(broker.bootstrap, topic, N, "a")
    assert len(partition_counts(expected)) == PARTITIONS, partition_counts(expected)
    wait_consumed(cs, expected)
    own = owners(cs)
    stop_all(cs)  # whatever they read up to the close counts too
    check_owners(cs, check_exactly_once(cs, expected), expected, own)
    # closing commits what was read
    wait_committed(broker.bootstrap, group, topic, end_offsets(broker.bootstrap, topic, PARTITIONS), 10)


# --- 2. handover on graceful close and on SIGKILL -----------------------------------------

def _handover(broker, topic, client, procs, how: str) -> None:
    group = setup(broker, topic)
    cs = procs.start(3, client, broker.bootstrap, topic, group)
    wait_assignment(cs, PARTITIONS)
    batch1 = produce_keyed(broker.bootstrap, topic, N, "a")
    wait_consumed(cs, batch1)
    # everything read is committed (auto commit) before the member goes away
    wait_committed(broker.bootstrap, group, topic, end_offsets(broker.bootstrap, topic, PARTITIONS))

    leaving, survivors = cs[2], cs[:2]
    its_partitions = leaving.snapshot()[0]
    t0 = time.monotonic()
    if how == "close":
        leaving.stop()
        limit = 15.0
    else:
        leaving.kill()
        limit = session_s(client) + 4.0  # expiry, then the survivors' next heartbeat and a rejoin
    wait_assignment(survivors, PARTITIONS, timeout=limit + 10)
    took = time.monotonic() - t0
    print(f"{client}: partitions {sorted(its_partitions)} of the member {how}{'d' if how == 'close' else 'ed'} "
          f"handed over in {took:.2f}s")
    assert took <= limit, (f"handover after {how} took {took:.1f}s (limit {limit:.1f}s, session "
                           f"{session_s(client):.1f}s)\n{report(cs)}")

    batch2 = produce_keyed(broker.bootstrap, topic, N2, "b")
    wait_consumed(survivors, batch2)
    own = owners(survivors)
    stop_all(survivors)
    who = check_exactly_once(cs, {**batch1, **batch2})
    check_owners(survivors, who, batch2, own)
    assert any(po[0] in its_partitions for po in batch2)


@pytest.mark.parametrize("client", CLIENTS)
def test_close_hands_partitions_over(broker, topic, client, procs):
    _handover(broker, topic, client, procs, "close")


@pytest.mark.parametrize("client", CLIENTS)
def test_sigkill_hands_partitions_over_within_session_timeout(broker, topic, client, procs):
    _handover(broker, topic, client, procs, "kill")


# --- 3. a new consumer resumes from the committed offsets ---------------------------------

@pytest.mark.parametrize("client", CLIENTS)
def test_new_consumer_resumes_from_committed_offsets(broker, topic, client, procs):
    group = setup(broker, topic)
    cs = procs.start(3, client, broker.bootstrap, topic, group)
    wait_assignment(cs, PARTITIONS)
    batch1 = produce_keyed(broker.bootstrap, topic, N, "a")
    wait_consumed(cs, batch1)
    stop_all(cs)
    ends1 = end_offsets(broker.bootstrap, topic, PARTITIONS)
    wait_committed(broker.bootstrap, group, topic, ends1, 10)
    check_exactly_once(cs, batch1)

    batch2 = produce_keyed(broker.bootstrap, topic, N2, "b")
    late = procs.start_one(client, broker.bootstrap, topic, group, "late")
    wait_assignment([late], PARTITIONS)
    wait_consumed([late], batch2)
    late.stop()
    check_exactly_once([late], batch2)  # nothing of batch1 again
    wait_committed(broker.bootstrap, group, topic, end_offsets(broker.bootstrap, topic, PARTITIONS), 10)


# --- 5. committed offsets survive kill -9 of the broker -----------------------------------

def _consume_all(c: Consumer, want: set, timeout: float = 30.0) -> list:
    got, msgs = set(), []
    end = time.monotonic() + timeout
    while not want <= got:
        assert time.monotonic() < end, f"timed out: {len(want - got)} of {len(want)} records not read"
        for m in c.consume(num_messages=500, timeout=0.2):
            assert m.error() is None, m.error()
            got.add((m.partition(), m.offset()))
            msgs.append(m)
    return msgs


def _group_consumer(bootstrap: str, group: str, **extra) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group, "auto.offset.reset": "earliest",
                     "enable.auto.commit": False, "session.timeout.ms": SESSION_TIMEOUT_MS,
                     "heartbeat.interval.ms": HEARTBEAT_INTERVAL_MS, **extra})


def test_committed_offsets_survive_broker_kill9(broker, topic, procs):
    group = setup(broker, topic)
    batch1 = produce_keyed(broker.bootstrap, topic, N, "a")
    ends = end_offsets(broker.bootstrap, topic, PARTITIONS)
    c = _group_consumer(broker.bootstrap, group)
    c.subscribe([topic])
    _consume_all(c, set(batch1))
    # commit a different point of each partition, with metadata
    commit = {p: (n * (p + 1)) // (PARTITIONS + 1) for p, n in ends.items()}
    res = c.commit(offsets=[TopicPartition(topic, p, o, f"meta-{p}") for p, o in commit.items()],
                   asynchronous=False)
    assert all(tp.error is None for tp in res), res
    c.close()
    assert committed_offsets(broker.bootstrap, group, topic) == commit

    broker.kill9()
    broker.start()

    a = harness.admin(broker.bootstrap)
    got = harness.deadline_loop(
        harness.ADMIN_TIMEOUT, "committed offsets after the restart",
        lambda: a.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)],
                                              request_timeout=harness.ADMIN_TIMEOUT)[group].result())
    after = {tp.partition: (tp.offset, tp.metadata) for tp in got.topic_partitions if tp.topic == topic}
    assert after == {p: (o, f"meta-{p}") for p, o in commit.items()}, after

    # a new consumer in the group resumes exactly there
    late = procs.start_one("confluent", broker.bootstrap, topic, group, "late")
    wait_assignment([late], PARTITIONS)
    rest = {po: k for po, k in batch1.items() if po[1] >= commit[po[0]]}
    wait_consumed([late], rest)
    late.stop()
    check_exactly_once([late], rest)
    wait_committed(broker.bootstrap, group, topic, ends, 10)


@pytest.mark.parametrize("client", CLIENTS)
def test_group_rejoins_after_broker_kill9(broker, topic, client, procs):
    """Membership is not durable: after a broker kill -9 and restart the running
    consumers find their member ids unknown, rejoin, and go on from the committed offsets."""
    group = setup(broker, topic)
    cs = procs.start(3, client, broker.bootstrap, topic, group)
    wait_assignment(cs, PARTITIONS)
    batch1 = produce_keyed(broker.bootstrap, topic, N, "a")
    wait_consumed(cs, batch1)
    wait_committed(broker.bootstrap, group, topic, end_offsets(broker.bootstrap, topic, PARTITIONS))

    marks = {c.name: len(c.events) for c in cs}
    broker.kill9()
    broker.start()
    # every consumer has been assigned partitions again since the restart
    took = wait_assignment(cs, PARTITIONS, timeout=40, extra=lambda: all(
        any(e["ev"] == "assigned" for e in c.events[marks[c.name]:]) for c in cs))
    print(f"{client}: group complete again {took:.2f}s after the restart")

    batch2 = produce_keyed(broker.bootstrap, topic, N2, "b")
    wait_consumed(cs, batch2)
    own = owners(cs)
    stop_all(cs)
    who = check_exactly_once(cs, {**batch1, **batch2})
    check_owners(cs, who, batch2, own)


@pytest.mark.parametrize("client", CLIENTS)
def test_paused_member_rejoins_after_session_expiry(broker, topic, client, procs):
    """The only member of a group is paused (SIGSTOP) until the coordinator expires it.
    Resumed, it must learn it was fenced and rejoin, not die. Nothing is committed
    before the pause, so expiring the last member leaves nothing in the group (Kafka
    keeps such an empty group until its periodic cleanup, minutes later)."""
    group = setup(broker, topic)
    a = harness.admin(broker.bootstrap)
    c = procs.start_one(client, broker.bootstrap, topic, group, "solo")
    wait_assignment([c], PARTITIONS)
    mark = len(c.events)
    c.proc.send_signal(signal.SIGSTOP)
    try:
        def expired():
            try:
                return not _describe(a, group).members
            except KafkaException as e:  # a group the coordinator forgot
                return harness.is_error(e, KafkaError.GROUP_ID_NOT_FOUND)
        harness.deadline_loop(session_s(client) + 10, "the coordinator to expire the paused member", expired, 0.2)
    finally:
        c.proc.send_signal(signal.SIGCONT)
    # it finds out at its next heartbeat and joins again (before anything is produced:
    # a fenced member may still fetch, and what it reads then is read again after the rejoin)
    wait_until([c], lambda: any(e["ev"] == "assigned" for e in c.events[mark:]) and c.snapshot()[0] == set(range(PARTITIONS)),
               20, "the resumed member to be assigned the partitions again")
    batch = produce_keyed(broker.bootstrap, topic, N2, "a")
    wait_consumed([c], batch)
    c.stop()
    check_exactly_once([c], batch)


# --- 6. assignors: eager (range, roundrobin), cooperative-sticky, KIP-848 server side -----

ASSIGNORS = [
    # client, assignor, 3-member pattern, 2-member pattern, incremental (survivors keep theirs)
    ("confluent", "range", [{0, 1}, {2, 3}, {4, 5}], [{0, 1, 2}, {3, 4, 5}], False),
    ("confluent", "roundrobin", [{0, 3}, {1, 4}, {2, 5}], [{0, 2, 4}, {1, 3, 5}], False),
    ("confluent", "cooperative-sticky", None, None, True),
    ("kafka-python", "roundrobin", [{0, 3}, {1, 4}, {2, 5}], [{0, 2, 4}, {1, 3, 5}], False),
    ("aiokafka", "range", [{0, 1}, {2, 3}, {4, 5}], [{0, 1, 2}, {3, 4, 5}], False),
    ("confluent-kip848", "uniform", None, None, True),
    ("confluent-kip848", "range", [{0, 1}, {2, 3}, {4, 5}], [{0, 1, 2}, {3, 4, 5}], False),
]


def _pattern(consumers) -> list:
    return sorted((c.snapshot()[0] for c in consumers), key=min)


@pytest.mark.parametrize("client,assignor,three,two,incremental", ASSIGNORS,
                         ids=[f"{c}-{a}" for c, a, *_ in ASSIGNORS])
def test_assignor(broker, topic, procs, client, assignor, three, two, incremental):
    group = setup(broker, topic)
    cs = procs.start(3, client, broker.bootstrap, topic, group, assignor=assignor)
    wait_assignment(cs, PARTITIONS)
    if three is not None:
        assert _pattern(cs) == three, f"{assignor}: {_pattern(cs)}\n{report(cs)}"
    else:
        assert sorted(len(c.snapshot()[0]) for c in cs) == [2, 2, 2], report(cs)
    batch1 = produce_keyed(broker.bootstrap, topic, N, "a")
    wait_consumed(cs, batch1)
    check_owners(cs, check_exactly_once(cs, batch1), batch1, owners(cs))
    wait_committed(broker.bootstrap, group, topic, end_offsets(broker.bootstrap, topic, PARTITIONS))

    leaving, survivors = cs[2], cs[:2]
    before = {c.name: c.snapshot()[0] for c in survivors}
    marks = {c.name: len(c.events) for c in survivors}
    leaving.stop()
    wait_assignment(survivors, PARTITIONS)
    if two is not None:
        assert _pattern(survivors) == two, f"{assignor}: {_pattern(survivors)}\n{report(cs)}"
    revoked = {c.name: sorted({p for e in c.events[marks[c.name]:] if e["ev"] == "revoked" for p in e["removed"]})
               for c in survivors}
    if incremental:
        # survivors keep what they had and only gain the leaver's partitions
        assert all(not r for r in revoked.values()), f"survivors lost partitions: {revoked}\n{report(cs)}"
        assert all(before[c.name] <= c.snapshot()[0] for c in survivors), report(cs)
        assert sorted(len(c.snapshot()[0]) for c in survivors) == [3, 3], report(cs)
    elif client != "confluent-kip848":
        # eager: every survivor gave up all its partitions before the new assignment
        assert revoked == {n: sorted(b) for n, b in before.items()}, f"revoked {revoked}, had {before}"

    batch2 = produce_keyed(broker.bootstrap, topic, N2, "b")
    wait_consumed(survivors, batch2)
    own = owners(survivors)
    stop_all(survivors)
    who = check_exactly_once(cs, {**batch1, **batch2})
    check_owners(survivors, who, batch2, own)


# --- static membership ---------------------------------------------------------------------

@pytest.mark.parametrize("how", ["close", "kill"])
def test_static_member_rejoins_with_its_partitions(broker, topic, procs, how):
    """A static member (group.instance.id) that goes away and comes back within the
    session timeout gets its partitions back without a rebalance of the others.
    librdkafka does not send LeaveGroup for a static member on close."""
    group = setup(broker, topic)
    cs = [procs.start_one("confluent", broker.bootstrap, topic, group, f"s{i}", instance_id=f"inst-{i}",
                          session_timeout_ms=6000) for i in range(3)]
    wait_assignment(cs, PARTITIONS)
    batch1 = produce_keyed(broker.bootstrap, topic, N, "a")
    wait_consumed(cs, batch1)
    wait_committed(broker.bootstrap, group, topic, end_offsets(broker.bootstrap, topic, PARTITIONS))

    gone, others = cs[2], cs[:2]
    had = {c.name: c.snapshot()[0] for c in cs}
    marks = {c.name: len(c.events) for c in others}
    gone.stop() if how == "close" else gone.kill()
    back = procs.start_one("confluent", broker.bootstrap, topic, group, "s2-again", instance_id="inst-2",
                           session_timeout_ms=6000)
    group_now = others + [back]
    wait_assignment(group_now, PARTITIONS, timeout=5.0)  # well within the 6 s session
    assert back.snapshot()[0] == had["s2"], f"came back with {back.snapshot()[0]}, had {had['s2']}\n{report(cs)}"
    later = {c.name: [e for e in c.events[marks[c.name]:] if e["ev"] in ("revoked", "assigned")] for c in others}
    assert all(not evs for evs in later.values()), f"the other members were rebalanced: {later}\n{report(cs)}"

    batch2 = produce_keyed(broker.bootstrap, topic, N2, "b")
    wait_consumed(group_now, batch2)
    own = owners(group_now)
    stop_all(group_now)
    who = check_exactly_once(cs + [back], {**batch1, **batch2})
    check_owners(group_now, who, batch2, own)


# --- 7. admin: list, describe, delete, lag -------------------------------------------------

def _listing(a, group, **kw):
    res = a.list_consumer_groups(request_timeout=harness.ADMIN_TIMEOUT, **kw).result(timeout=harness.ADMIN_TIMEOUT + 5)
    assert not res.errors, res.errors
    return {g.group_id: g for g in res.valid}.get(group)


def _describe(a, group):
    return a.describe_consumer_groups([group], request_timeout=harness.ADMIN_TIMEOUT)[group].result(
        timeout=harness.ADMIN_TIMEOUT + 5)


def _delete(a, group):
    return a.delete_consumer_groups([group], request_timeout=harness.ADMIN_TIMEOUT)[group].result(
        timeout=harness.ADMIN_TIMEOUT + 5)


@pytest.mark.parametrize("client", ["confluent", "confluent-kip848"])
def test_admin_list_describe_delete(broker, topic, procs, client):
    group = setup(broker, topic)
    a = harness.admin(broker.bootstrap)
    kip848 = client == "confluent-kip848"
    cs = procs.start(3, client, broker.bootstrap, topic, group, assignor="range")
    wait_assignment(cs, PARTITIONS)
    wait_until(cs, lambda: all(c.member_id for c in cs), 10, "member ids")

    # list: the group, stable, of the right type; the type filter works
    g = harness.deadline_loop(10, "group listed as stable", lambda: (
        (x := _listing(a, group)) is not None and x.state == ConsumerGroupState.STABLE and x))
    assert not g.is_simple_consumer_group
    want_type, other_type = ((ConsumerGroupType.CONSUMER, ConsumerGroupType.CLASSIC) if kip848 else
                             (ConsumerGroupType.CLASSIC, ConsumerGroupType.CONSUMER))
    assert g.type == want_type, g.type
    assert _listing(a, group, types={want_type}) is not None
    assert _listing(a, group, types={other_type}) is None
    assert _listing(a, group, states={ConsumerGroupState.EMPTY}) is None

    # describe: members with their assignments, as the consumers see them
    d = _describe(a, group)
    assert d.state == ConsumerGroupState.STABLE and d.type == want_type, (d.state, d.type)
    assert d.partition_assignor == "range", d.partition_assignor
    assert d.coordinator is not None and d.coordinator.id >= 0, d.coordinator
    members = {m.member_id: m for m in d.members}
    assert set(members) == {c.member_id for c in cs}, (set(members), [c.member_id for c in cs])
    for c in cs:
        m = members[c.member_id]
        assert m.client_id == c.name and m.host, (m.client_id, m.host)
        parts = {(tp.topic, tp.partition) for tp in m.assignment.topic_partitions}
        assert parts == {(topic, p) for p in c.snapshot()[0]}, (c.name, parts, c.snapshot()[0])

    # a group with members cannot be deleted
    with pytest.raises(KafkaException) as e:
        _delete(a, group)
    assert harness.is_error(e.value, KafkaError.NON_EMPTY_GROUP), e.value

    batch1 = produce_keyed(broker.bootstrap, topic, N, "a")
    wait_consumed(cs, batch1)
    stop_all(cs)
    ends = end_offsets(broker.bootstrap, topic, PARTITIONS)
    wait_committed(broker.bootstrap, group, topic, ends, 10)

    # empty now: listed and described as such, offsets kept, then deleted
    g = _listing(a, group)
    assert g is not None and g.state == ConsumerGroupState.EMPTY, g and g.state
    d = _describe(a, group)
    assert d.state == ConsumerGroupState.EMPTY and not d.members, (d.state, d.members)
    _delete(a, group)
    assert _listing(a, group) is None
    assert committed_offsets(broker.bootstrap, group, topic) == {}
    with pytest.raises(KafkaException) as e:
        _delete(a, group)
    assert harness.is_error(e.value, KafkaError.GROUP_ID_NOT_FOUND), e.value


def _lag_admin(bootstrap, group, topic) -> dict[int, int]:
    committed = committed_offsets(bootstrap, group, topic)
    ends = end_offsets(bootstrap, topic, PARTITIONS)
    return {p: ends[p] - committed.get(p, 0) for p in range(PARTITIONS)}


def _lag_consumer(bootstrap, group, topic) -> dict[int, int]:
    """Lag the way a consumer application computes it: committed() and watermarks."""
    c = _group_consumer(bootstrap, group)
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        out = {}
        for tp in c.committed(tps, timeout=harness.ADMIN_TIMEOUT):
            assert tp.error is None, tp
            low, high = c.get_watermark_offsets(tp, timeout=harness.ADMIN_TIMEOUT)
            out[tp.partition] = high - (low if tp.offset == OFFSET_INVALID else tp.offset)
        return out
    finally:
        c.close()


def test_consumer_lag(broker, topic):
    group = setup(broker, topic)
    bs = broker.bootstrap
    batch1 = produce_keyed(bs, topic, N, "a")
    assert _lag_admin(bs, group, topic) == partition_counts(batch1)  # nothing committed yet
    assert _lag_consumer(bs, group, topic) == partition_counts(batch1)

    # read everything, commit, close: no lag; then new messages are all lag
    c = _group_consumer(bs, group)
    c.subscribe([topic])
    _consume_all(c, set(batch1))
    c.commit(asynchronous=False)
    c.close()
    assert _lag_admin(bs, group, topic) == {p: 0 for p in range(PARTITIONS)}
    batch2 = produce_keyed(bs, topic, N2, "b")
    assert _lag_admin(bs, group, topic) == partition_counts(batch2)
    assert _lag_consumer(bs, group, topic) == partition_counts(batch2)

    # process only the first half of each partition's new messages (offsets stored per
    # processed message, then committed): the lag is the unprocessed rest
    new = sorted(batch2)
    first = {p: min(o for q, o in new if q == p) for p in range(PARTITIONS)}
    processed = {(p, o) for p, o in new if o < first[p] + partition_counts(batch2)[p] // 2}
    c = _group_consumer(bs, group, **{"enable.auto.offset.store": False})
    c.subscribe([topic])
    for m in _consume_all(c, set(batch2)):
        if (m.partition(), m.offset()) in processed:
            c.store_offsets(message=m)
    c.commit(asynchronous=False)
    c.close()
    want = {p: partition_counts(batch2)[p] - partition_counts(processed).get(p, 0) for p in range(PARTITIONS)}
    assert _lag_admin(bs, group, topic) == want
    assert _lag_consumer(bs, group, topic) == want
