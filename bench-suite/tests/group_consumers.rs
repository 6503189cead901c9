//! Built-in consumers in a KIP-848 group against the real corelog broker: the group splits
//! the partitions among them exactly once, they read every message once, and they leave
//! the group at the end so the next run's members get every partition at once.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use corelog_bench::client::admin::Admin;
use corelog_bench::client::group;
use corelog_bench::workload::runner::{run, Driver, RunOptions};
use corelog_bench::workload::scenario::Scenario;

/// The corelog binary of this build profile (target/<profile>/corelog), built first:
/// cargo builds another package's binaries only for that package's own tests.
fn corelog_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    build.args(["build", "-p", "corelog-broker", "--bin", "corelog"]);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    assert!(build.status().unwrap().success(), "building corelog");
    profile_dir.join("corelog")
}

struct Broker {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker() -> Broker {
    let dir = tempfile::tempdir().unwrap();
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new(corelog_binary())
        .args(["serve", "--listen", &addr.to_string(), "--cores", "1"])
        .arg("--data-dir")
        .arg(dir.path())
        // Heartbeats every 200 ms, so reconciliation does not wait 5 s per step.
        .args(["--set", "group.consumer.heartbeat.interval.ms=200"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "corelog did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker {
        child,
        addr,
        _dir: dir,
    }
}

fn scenario() -> Scenario {
    Scenario::parse(
        r#"
        name = "group-it"
        partitions = 12
        consumers = 3
        group_protocol = "consumer"
        consumer_group = "bench-it"
        commit_offsets = true
        rate = 3000
        duration_secs = 2
        warmup_secs = 0
        drain_secs = 5
        fetch_max_wait_ms = 20
        "#,
    )
    .unwrap()
}

#[test]
fn group_members_split_the_partitions_exactly_once() {
    let broker = start_broker();
    let s = scenario();
    let mut admin = Admin::connect(broker.addr).unwrap();
    let (layout, _) = admin.ensure_topics(&s.topic_names(), 12).unwrap();
    let members = group::join_settled(broker.addr, "split", &layout, 3, 30_000).unwrap();
    let mut seen = BTreeSet::new();
    for m in &members {
        assert!(!m.owned.is_empty(), "every member gets partitions");
        for &p in &m.owned {
            assert!(seen.insert(p), "partition {p} assigned twice");
        }
    }
    assert_eq!(seen, (0..layout.partitions.len()).collect());
    for m in members {
        m.leave(&layout).unwrap();
    }
}

#[test]
fn group_consumers_read_every_message_once_and_leave() {
    let broker = start_broker();
    let opts = RunOptions {
        target: "corelog".into(),
        bootstrap: broker.addr.to_string(),
        broker_pid: None,
        cpus: Vec::new(),
        driver: Driver::Builtin,
        progress: false,
        command: "cargo test".into(),
    };
    // Twice with the same group: had the first run's members not left, they would hold
    // the partitions for the session timeout (45 s) and the second could not settle.
    for _ in 0..2 {
        let r = run(&scenario(), &opts).unwrap();
        assert_eq!(r.total_sent, 6_000);
        assert_eq!(r.total_acked, r.total_sent);
        assert_eq!(
            r.total_consumed, r.total_acked,
            "each message read exactly once"
        );
        assert_eq!(r.total_errors, 0);
    }
}
