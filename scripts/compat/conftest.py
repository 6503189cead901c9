"""pytest fixtures for corelog's real-client tests.

`broker` starts the real corelog binary ($CORELOG_BIN, default
target/debug/corelog) on a free 127.0.0.1 port with a fresh data dir and
`--cores 2`, waits until the port accepts connections, and kills it at
teardown. A failed test gets the tail of the broker's log in its report.

COMPAT_BOOTSTRAP=host:port runs the tests against an already running
Kafka-compatible broker instead (e.g. Apache Kafka, to check the tests
themselves); restart()/kill9() then skip the test.

`cluster` starts three brokers (one shard each) that form a controller quorum
and replicate (RF 3, min.insync.replicas 2), for failover tests.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

import harness

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT = float(os.environ.get("CORELOG_READY_TIMEOUT", "30"))
STOP_TIMEOUT = 10.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")
TIMESTAMP = re.compile(r"^\S*\d{2}:\d{2}:\d{2}\S*\s*")


# Ports handed to brokers come from below the kernel's ephemeral range (32768-60999 by
# default): an ephemeral port, once released here, can become the source port of a
# broker's or client's outgoing connection before the broker meant to listen on it binds.
FIRST_PORT, PORT_SPAN = 10_000, 22_000
_next_port = os.getpid() % PORT_SPAN


def free_port() -> int:
    global _next_port
    for _ in range(PORT_SPAN):
        port = FIRST_PORT + _next_port % PORT_SPAN
        _next_port += 1
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {FIRST_PORT}..{FIRST_PORT + PORT_SPAN}")


def answers_api_versions(port: int) -> bool:
    """Whether a broker answers ApiVersions v0 on the port. Accepting is not enough:
    after a kill -9 the dead process's listening socket lingers until the kernel tears
    down its io_uring, and it accepts connections nobody serves."""
    # Header v1: api key 18, version 0, correlation id 1, null client id; empty body.
    request = struct.pack(">hhih", 18, 0, 1, -1)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(struct.pack(">i", len(request)) + request)
            return len(s.recv(4)) > 0
    except OSError:
        return False


class Broker:
    """One corelog process; restart() and kill9() keep its port and data dir."""

    def __init__(self, binary: Path, data_dir: Path, log_path: Path, extra_args: list[str],
                 cores: int = 2):
        self.binary, self.data_dir, self.log_path = binary, data_dir, log_path
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.extra_args = extra_args
        self.cores = cores
        self.proc: subprocess.Popen | None = None
        self.starts = 0
        self.metrics_port: int | None = None  # where it serves /metrics, if it does

    @property
    def cmd(self) -> list[str]:
        return [str(self.binary), "serve", "--listen", self.bootstrap, "--data-dir", str(self.data_dir),
                "--cores", str(self.cores), *self.extra_args]

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Starts the process without waiting for it to answer (the brokers of a
        cluster start together: one may not answer before a quorum runs)."""
        assert self.proc is None, "broker already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts}: {' '.join(self.cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env={**os.environ, "NO_COLOR": "1"})

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                code, self.proc = self.proc.returncode, None
                pytest.fail(f"corelog exited with {code} before answering on {self.bootstrap}\n"
                            f"{self.log_tail()}", pytrace=False)
            if answers_api_versions(self.port):
                return
            if time.monotonic() > deadline:
                self._signal(signal.SIGKILL)
                pytest.fail(f"corelog did not answer on {self.bootstrap} within {READY_TIMEOUT}s\n"
                            f"{self.log_tail()}", pytrace=False)
            time.sleep(0.05)

    def _signal(self, sig: int) -> int | None:
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(STOP_TIMEOUT)
        return proc.returncode

    def stop(self) -> None:
        """Graceful stop (SIGTERM; SIGKILL if it has not exited after 10 s)."""
        self._signal(signal.SIGTERM)

    def kill9(self) -> None:
        self._signal(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def exited_unexpectedly(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def log_tail(self, lines: int = 60) -> str:
        """The log's last lines, runs of lines that differ only in their timestamp
        folded into one."""
        try:
            text = ANSI.sub("", self.log_path.read_text(errors="replace")).splitlines()
        except OSError as e:
            return f"(no broker log: {e})"
        folded: list[list] = []  # [line, repeats]
        for line in text:
            if folded and TIMESTAMP.sub("", line) == TIMESTAMP.sub("", folded[-1][0]):
                folded[-1][1] += 1
            else:
                folded.append([line, 1])
        tail = [line if n == 1 else f"{line}   [x{n}]" for line, n in folded[-lines:]]
        return f"--- end of {self.log_path} ---\n" + "\n".join(tail)


class ExternalBroker:
    """A broker someone else runs (COMPAT_BOOTSTRAP)."""

    def __init__(self, bootstrap: str):
        self.bootstrap, self.data_dir, self.log_path = bootstrap, None, None

    def restart(self) -> None:
        pytest.skip("COMPAT_BOOTSTRAP: cannot restart an external broker")

    kill9 = start = stop = restart

    def exited_unexpectedly(self) -> None:
        return None

    def log_tail(self, lines: int = 60) -> str:
        return f"(external broker at {self.bootstrap}: no log)"


class Cluster:
    """Three corelog brokers of one controller quorum, replicating (RF 3, min ISR 2),
    with short failure detection. Broker n has node id n and binds its inter-broker
    connections to 127.0.1.n. Clients use the Kafka ports directly; no fault proxies
    (kill -9 needs none)."""

    SETTINGS = ["broker.session.timeout.ms=2000", "broker.heartbeat.interval.ms=300",
                "replica.lag.time.max.ms=2000", "default.replication.factor=3",
                "min.insync.replicas=2", "offsets.topic.replication.factor=3"]

    def __init__(self, binary: Path, tmp_path: Path, size: int = 3,
                 settings: tuple[str, ...] = (), each=lambda n: [], metrics: bool = False):
        """`settings` go to every broker, `each(n)` to broker n only (a rack); with
        `metrics`, broker n serves Prometheus metrics on `broker(n).metrics_port`."""
        raft = [free_port() for _ in range(size)]
        inter_broker = [free_port() for _ in range(size)]
        voters = ",".join(f"{n + 1}@127.0.0.1:{port}" for n, port in enumerate(raft))
        self.brokers: list[Broker] = []
        for i in range(size):
            n = i + 1
            node_settings = [f"node.id={n}", f"controller.quorum.voters={voters}",
                        f"controller.listen=127.0.0.1:{raft[i]}",
                        f"inter.broker.listen=127.0.0.1:{inter_broker[i]}",
                        f"inter.broker.advertised=127.0.0.1:{inter_broker[i]}",
                        f"inter.broker.bind.address=127.0.1.{n}", *self.SETTINGS, *settings,
                        *each(n)]
            metrics_port = free_port() if metrics else None
            if metrics_port is not None:
                node_settings.append(f"metrics.listen=127.0.0.1:{metrics_port}")
            data_dir = tmp_path / f"data-{n}"
            data_dir.mkdir()
            args = [a for setting in node_settings for a in ("--set", setting)]
            broker = Broker(binary, data_dir, tmp_path / f"corelog-{n}.log", args, cores=1)
            broker.metrics_port = metrics_port
            self.brokers.append(broker)
        self.bootstrap = ",".join(b.bootstrap for b in self.brokers)

    def broker(self, node_id: int) -> Broker:
        return self.brokers[node_id - 1]

    def start(self) -> None:
        for b in self.brokers:
            b.launch()
        for b in self.brokers:
            b.wait_ready()

    def kill9(self, node_id: int) -> None:
        self.broker(node_id).kill9()

    def restart(self, node_id: int) -> None:
        """Starts a killed broker again on its port and data dir."""
        self.broker(node_id).start()

    def live_bootstrap(self) -> str:
        return ",".join(b.bootstrap for b in self.brokers if b.proc is not None)

    def leader_of(self, topic: str, partition: int) -> int:
        """Waits (bounded) until a running broker leads the partition; its node id."""
        def leader():
            md = harness.admin(self.live_bootstrap()).list_topics(topic=topic, timeout=harness.ADMIN_TIMEOUT)
            p = md.topics[topic].partitions.get(partition)
            return p.leader if p is not None and p.leader > 0 and self.broker(p.leader).proc else None
        return harness.deadline_loop(harness.ADMIN_TIMEOUT, f"a live leader of {topic}-{partition}", leader)

    def exited_unexpectedly(self) -> dict[int, int]:
        return {n: code for n, b in enumerate(self.brokers, 1) if (code := b.exited_unexpectedly()) is not None}

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(b.log_tail(lines) for b in self.brokers)

    def kill_all(self) -> None:
        for b in self.brokers:
            b.kill9()


def corelog_binary() -> Path:
    binary = Path(os.environ.get("CORELOG_BIN", REPO / "target" / "debug" / "corelog"))
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        pytest.fail(f"corelog binary not found at {binary}: run `cargo build` (or set CORELOG_BIN)",
                    pytrace=False)
    return binary


@pytest.fixture
def broker(request, tmp_path):
    """A running broker. Extra `serve` arguments: @pytest.mark.broker_args("--set", "k=v")."""
    if os.environ.get("COMPAT_BOOTSTRAP"):
        yield ExternalBroker(os.environ["COMPAT_BOOTSTRAP"])
        return
    marker = request.node.get_closest_marker("broker_args")
    b = Broker(corelog_binary(), tmp_path / "data", tmp_path / "corelog.log",
               list(marker.args) if marker else [])
    b.data_dir.mkdir()
    b.start()
    try:
        yield b
        code = b.exited_unexpectedly()
        if code is not None:
            pytest.fail(f"corelog exited with {code} during the test\n{b.log_tail()}", pytrace=False)
    finally:
        b.kill9()


@pytest.fixture
def cluster(request, tmp_path):
    """Three running brokers of one cluster (not against COMPAT_BOOTSTRAP). Settings:
    @pytest.mark.cluster_settings("k=v", ..., each=lambda n: [...], metrics=True)."""
    if os.environ.get("COMPAT_BOOTSTRAP"):
        pytest.skip("COMPAT_BOOTSTRAP: the cluster tests start their own brokers")
    marker = request.node.get_closest_marker("cluster_settings")
    c = Cluster(corelog_binary(), tmp_path, settings=marker.args if marker else (),
                **(marker.kwargs if marker else {}))
    try:
        c.start()
        yield c
        exited = c.exited_unexpectedly()
        if exited:
            pytest.fail(f"brokers exited during the test: {exited}\n{c.log_tail()}", pytrace=False)
    finally:
        c.kill_all()


@pytest.fixture
def topic(request) -> str:
    """A topic name unique to this test (and run, for external brokers)."""
    return harness.unique_topic(request.node.name)


def pytest_configure(config):
    config.addinivalue_line("markers", "broker_args(*args): extra arguments for `corelog serve`")
    config.addinivalue_line("markers", "cluster_settings(*settings, each, metrics): cluster fixture settings")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    for fixture in ("broker", "cluster"):
        running = getattr(item, "funcargs", {}).get(fixture)
        if report.failed and running is not None:
            report.sections.append(("corelog log", running.log_tail()))
    return report
