//! The admin command line end to end: the real `corelog` binary serving, and the same
//! binary run as `corelog topic|produce|consume|group|cluster ...` against it.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Broker;
use corelog_client::groups::{Heartbeat, Member, LEAVE_EPOCH};
use corelog_client::partitioner::partition_for_key;
use serde_json::Value;

/// A command line run should take well under this; past it the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(60);

fn start_broker() -> Broker {
    Broker::start(2, &["group.initial.rebalance.delay.ms=0"])
}

struct Run {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `corelog ARGS` against `brokers` with `stdin`, within [`RUN_LIMIT`].
fn run_with(brokers: &str, args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_corelog"))
        .args(args)
        .env("CORELOG_BROKERS", brokers)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run corelog");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let deadline = Instant::now() + RUN_LIMIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("corelog {args:?} did not finish within {RUN_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let output = child.wait_with_output().unwrap();
    Run {
        success: output.status.success(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

/// A command line against one broker.
struct Cli {
    brokers: String,
}

impl Cli {
    fn new(broker: &Broker) -> Cli {
        Cli {
            brokers: broker.addr.to_string(),
        }
    }

    fn run(&self, args: &[&str], stdin: &str) -> Run {
        run_with(&self.brokers, args, stdin)
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        self.ok_with(args, "")
    }

    fn ok_with(&self, args: &[&str], stdin: &str) -> String {
        let run = self.run(args, stdin);
        assert!(run.success, "corelog {args:?} failed: {}", run.stderr);
        run.stdout
    }

    /// Runs a command that must fail with one line on stderr; returns that line.
    fn fails(&self, args: &[&str]) -> String {
        let run = self.run(args, "");
        assert!(!run.success, "corelog {args:?} succeeded: {}", run.stdout);
        assert_eq!(run.stderr.lines().count(), 1, "one line: {:?}", run.stderr);
        run.stderr
    }

    /// Runs a command with `--format json`; returns the parsed document.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--format", "json"]);
        serde_json::from_str(&self.ok(&args)).expect("one JSON document")
    }

    fn consume(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["consume"];
        all.extend(args);
        self.ok(&all).lines().map(str::to_string).collect()
    }
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

#[test]
fn topics_are_created_listed_described_altered_grown_and_deleted() {
    let broker = start_broker();
    let cli = Cli::new(&broker);

    let created = cli.ok(&[
        "topic",
        "create",
        "orders",
        "-p",
        "3",
        "-r",
        "1",
        "-c",
        "retention.ms=60000",
    ]);
    assert!(
        created.starts_with("created topic orders (3 partitions"),
        "{created}"
    );
    let again = cli.fails(&["topic", "create", "orders", "-p", "3"]);
    assert!(again.contains("TOPIC_ALREADY_EXISTS"), "{again}");
    let checked = cli.json(&["topic", "create", "dry", "-p", "2", "--validate-only"]);
    assert_eq!(checked["validate_only"], true);
    assert_eq!(checked["partitions"], 2);

    let listed = cli.json(&["topic", "list"]);
    let names: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"orders") && !names.contains(&"dry"),
        "{names:?}"
    );
    let orders = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "orders")
        .unwrap();
    assert_eq!(orders["partitions"], 3);
    assert_eq!(orders["replication_factor"], 1);
    assert!(cli
        .ok(&["topic", "list"])
        .lines()
        .any(|l| l.starts_with("orders ")));

    cli.ok_with(&["produce", "orders", "-p", "1"], "a\nb\n");
    let described = cli.json(&["topic", "describe", "orders"]);
    let topic = &described[0];
    assert_eq!(topic["name"], "orders");
    assert_eq!(topic["topic_id"], orders["topic_id"]);
    let partitions = topic["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 3);
    for (i, p) in partitions.iter().enumerate() {
        assert_eq!(p["partition"], i);
        assert_eq!(p["leader"], 1);
        assert_eq!(p["replicas"], serde_json::json!([1]));
        assert_eq!(p["isr"], serde_json::json!([1]));
        assert_eq!(p["log_start_offset"], 0);
        assert_eq!(p["log_end_offset"], if i == 1 { 2 } else { 0 });
    }
    assert_eq!(
        config(topic, "retention.ms"),
        ("60000".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    let human = cli.ok(&["topic", "describe", "orders"]);
    assert!(
        human.contains("LOG-END") && human.contains("retention.ms"),
        "{human}"
    );

    cli.ok(&[
        "topic",
        "alter-config",
        "orders",
        "--set",
        "retention.ms=120000",
        "--set",
        "segment.bytes=1048576",
        "--delete",
        "retention.ms",
    ]);
    let altered = &cli.json(&["topic", "describe", "orders"])[0];
    assert_eq!(
        config(altered, "segment.bytes"),
        ("1048576".into(), "DYNAMIC_TOPIC_CONFIG".into())
    );
    assert_eq!(config(altered, "retention.ms").1, "DEFAULT_CONFIG");
    cli.ok(&[
        "topic",
        "alter-config",
        "orders",
        "--set",
        "retention.ms=90000",
    ]);
    assert_eq!(
        config(
            &cli.json(&["topic", "describe", "orders"])[0],
            "retention.ms"
        )
        .0,
        "90000"
    );
    let bad = cli.fails(&[
        "topic",
        "alter-config",
        "orders",
        "--set",
        "cleanup.policy=compact",
    ]);
    assert!(bad.contains("alter configs of topic orders"), "{bad}");

    let grown = cli.ok(&["topic", "add-partitions", "orders", "-n", "5"]);
    assert!(grown.contains("5 partitions"), "{grown}");
    assert_eq!(
        cli.json(&["topic", "describe", "orders"])[0]["partitions"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let shrink = cli.fails(&["topic", "add-partitions", "orders", "-n", "2"]);
    assert!(shrink.contains("INVALID_PARTITIONS"), "{shrink}");

    let unknown = cli.fails(&["topic", "describe", "nope"]);
    assert!(
        unknown.contains("UNKNOWN_TOPIC_OR_PARTITION") && unknown.contains("nope"),
        "{unknown}"
    );
    let deleted = cli.json(&["topic", "delete", "orders"]);
    assert_eq!(deleted["results"][0]["ok"], true);
    assert!(!cli.ok(&["topic", "list"]).contains("orders"));
    let missing = cli.fails(&["topic", "delete", "orders"]);
    assert!(
        missing.contains("delete topic orders: UNKNOWN_TOPIC_OR_PARTITION"),
        "{missing}"
    );
}

/// A config's value and source in a `topic describe` document.
fn config(topic: &Value, name: &str) -> (String, String) {
    let entry = topic["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no config {name}"));
    (
        entry["value"].as_str().unwrap().to_string(),
        entry["source"].as_str().unwrap().to_string(),
    )
}

#[test]
fn produced_lines_consume_back_with_keys_headers_and_formats() {
    let broker = start_broker();
    let cli = Cli::new(&broker);
    cli.ok(&["topic", "create", "events", "-p", "4"]);

    let lines: Vec<String> = (0..40)
        .map(|i| format!("user-{}:event {i}", i % 7))
        .collect();
    let input = lines.join("\n") + "\n";
    let summary: Value = serde_json::from_str(&cli.ok_with(
        &[
            "produce",
            "events",
            "-k",
            ":",
            "-H",
            "source=cli",
            "-H",
            "run=1",
            "-z",
            "zstd",
            "--acks",
            "all",
            "--batch-records",
            "16",
            "--format",
            "json",
        ],
        &input,
    ))
    .unwrap();
    assert_eq!(summary["records"], 40);
    let counted: u64 = summary["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["records"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 40);

    // Every record comes back in the partition Kafka's partitioner picks for its key,
    // with its headers; offsets within a partition count up from 0.
    let consumed = cli.consume(&["events", "-f", "%p|%o|%k|%v|%h\\n"]);
    assert_eq!(consumed.len(), 40);
    let mut next_offset: BTreeMap<i32, i64> = BTreeMap::new();
    let mut values = Vec::new();
    for line in &consumed {
        let fields: Vec<&str> = line.split('|').collect();
        let (partition, offset, key, value, headers) = (
            fields[0].parse::<i32>().unwrap(),
            fields[1].parse::<i64>().unwrap(),
            fields[2],
            fields[3],
            fields[4],
        );
        assert_eq!(partition, partition_for_key(key.as_bytes(), 4), "{line}");
        let expected = next_offset.entry(partition).or_default();
        assert_eq!(offset, *expected, "{line}");
        *expected += 1;
        assert_eq!(headers, "source=cli,run=1");
        values.push(format!("{key}:{value}"));
    }
    assert_eq!(sorted(values), sorted(lines.clone()));

    // Unkeyed lines go round robin, one partition per batch.
    cli.ok_with(
        &["produce", "events", "--batch-records", "2"],
        "x1\nx2\ny1\ny2\n",
    );
    let unkeyed: Vec<String> = cli
        .consume(&["events", "-f", "%p %k%v\\n"])
        .into_iter()
        .filter(|l| l.contains(" x") || l.contains(" y"))
        .collect();
    assert_eq!(unkeyed.len(), 4);
    assert_ne!(
        unkeyed.iter().find(|l| l.ends_with("x1")).unwrap()[..1],
        unkeyed.iter().find(|l| l.ends_with("y1")).unwrap()[..1]
    );

    // Every codec, and acks 0 (no answer, so no offsets) and 1.
    cli.ok(&["topic", "create", "codecs", "-p", "1"]);
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let produced = cli.ok_with(
            &["produce", "codecs", "-z", codec, "--acks", "1"],
            &format!("{codec}\n"),
        );
        assert!(produced.contains("produced 1 records"), "{produced}");
    }
    let unacknowledged: Value = serde_json::from_str(&cli.ok_with(
        &["produce", "codecs", "--acks", "0", "--format", "json"],
        "unacknowledged\n",
    ))
    .unwrap();
    assert_eq!(unacknowledged["partitions"][0]["records"], 1);
    assert!(unacknowledged["partitions"][0]["first_offset"].is_null());
    let expected = ["none", "gzip", "snappy", "lz4", "zstd", "unacknowledged"];
    let deadline = Instant::now() + Duration::from_secs(10);
    while cli.consume(&["codecs"]).len() < expected.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(cli.consume(&["codecs"]), expected);

    // Positions: a partition from an offset, a count, the end, a timestamp.
    let partition_0: Vec<String> = cli.consume(&["events", "-p", "0", "-f", "%o\\n"]);
    let from_1 = cli.consume(&["events", "-p", "0", "-o", "1", "-f", "%o\\n"]);
    assert_eq!(from_1, partition_0[1..]);
    assert_eq!(cli.consume(&["events", "-n", "3"]).len(), 3);
    assert!(cli.consume(&["events", "-o", "end"]).is_empty());
    assert!(cli.consume(&["events", "-o", "@99999999999999"]).is_empty());
    assert_eq!(cli.consume(&["events", "-o", "@0"]).len(), 44);

    let records = cli.json(&["consume", "events", "-p", "0", "-n", "1"]);
    let first = &records[0];
    assert_eq!(first["topic"], "events");
    assert_eq!(first["partition"], 0);
    assert_eq!(first["offset"], 0);
    assert_eq!(first["headers"]["source"], "cli");
    assert!(first["timestamp"].as_i64().unwrap() > 0);

    let unknown = cli.fails(&["consume", "nope"]);
    assert!(unknown.contains("UNKNOWN_TOPIC_OR_PARTITION"), "{unknown}");
    let bad_format = cli.fails(&["consume", "events", "-f", "%q"]);
    assert!(bad_format.contains("%q"), "{bad_format}");
}

#[test]
fn groups_commit_resume_report_lag_seek_and_delete() {
    let broker = start_broker();
    let cli = Cli::new(&broker);
    cli.ok(&["topic", "create", "jobs", "-p", "2"]);
    let numbers = |range: std::ops::Range<i32>| range.map(|i| format!("{i}\n")).collect::<String>();
    cli.ok_with(&["produce", "jobs", "-p", "0"], &numbers(0..6));
    cli.ok_with(&["produce", "jobs", "-p", "1"], &numbers(6..10));

    // Four of ten records consumed and committed: the lag is the rest, per partition.
    let first = cli.consume(&["jobs", "--group", "workers", "-n", "4"]);
    assert_eq!(first.len(), 4);
    let described = cli.json(&["group", "describe", "workers"]);
    let group = &described[0];
    assert_eq!(group["group_id"], "workers");
    assert_eq!(group["group_type"], "consumer");
    assert_eq!(group["members"].as_array().unwrap().len(), 0);
    let mut lag_total = 0;
    for partition in group["offsets"].as_array().unwrap() {
        let (committed, end, lag) = (
            partition["committed_offset"].as_i64().unwrap(),
            partition["log_end_offset"].as_i64().unwrap(),
            partition["lag"].as_i64().unwrap(),
        );
        assert_eq!(end, if partition["partition"] == 0 { 6 } else { 4 });
        assert_eq!(lag, end - committed);
        lag_total += lag;
    }
    assert_eq!(lag_total, 6);
    assert!(cli.ok(&["group", "describe", "workers"]).contains("LAG"));

    // The next run resumes after the commits; then nothing is left; then only new records.
    let second = cli.consume(&["jobs", "--group", "workers"]);
    assert_eq!(
        sorted([first.clone(), second].concat()),
        sorted(numbers(0..10).lines().map(String::from).collect())
    );
    assert!(cli.consume(&["jobs", "--group", "workers"]).is_empty());
    cli.ok_with(&["produce", "jobs"], &numbers(10..13));
    assert_eq!(
        sorted(cli.consume(&["jobs", "--group", "workers"])),
        ["10", "11", "12"]
    );
    let caught_up = cli.json(&["group", "describe", "workers"]);
    assert!(caught_up[0]["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["lag"] == 0));

    let listed = cli.json(&["group", "list"]);
    let workers = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == "workers")
        .unwrap();
    assert_eq!(workers["group_type"], "consumer");
    assert!(cli.ok(&["group", "list"]).contains("workers"));

    // Seeking repositions the group for its next run.
    let sought = cli.json(&[
        "group",
        "seek",
        "workers",
        "--topic",
        "jobs",
        "--to-offset",
        "4",
        "-p",
        "0",
    ]);
    assert_eq!(sought["offsets"][0]["offset"], 4);
    let from_4 = cli.consume(&["jobs", "--group", "workers", "-f", "%p:%o\\n"]);
    assert_eq!(
        from_4.iter().filter(|l| l.starts_with("0:")).count(),
        from_4.len()
    );
    assert_eq!(from_4.first().map(String::as_str), Some("0:4"));
    cli.ok(&[
        "group",
        "seek",
        "workers",
        "--topic",
        "jobs",
        "--to-earliest",
    ]);
    assert_eq!(cli.consume(&["jobs", "--group", "workers"]).len(), 13);
    cli.ok(&[
        "group",
        "seek",
        "workers",
        "--topic",
        "jobs",
        "--to-timestamp",
        "0",
    ]);
    assert_eq!(cli.consume(&["jobs", "--group", "workers"]).len(), 13);
    cli.ok(&["group", "seek", "workers", "--topic", "jobs", "--to-latest"]);
    assert!(cli.consume(&["jobs", "--group", "workers"]).is_empty());

    // While a member is in the group: it shows with its assignment, and neither seeking
    // nor deleting is allowed (the broker's error is reported).
    let mut member = GroupMember::join(&broker, "workers", "jobs");
    let active = &cli.json(&["group", "describe", "workers"])[0];
    assert_eq!(active["state"], "Stable");
    let members = active["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["member_id"], member.member.member_id.as_str());
    assert_eq!(members[0]["assignment"][0]["topic"], "jobs");
    assert_eq!(
        members[0]["assignment"][0]["partitions"],
        serde_json::json!([0, 1])
    );
    assert!(active["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["member_id"] == members[0]["member_id"]));
    let refused = cli.fails(&[
        "group",
        "seek",
        "workers",
        "--topic",
        "jobs",
        "--to-earliest",
    ]);
    assert!(
        refused.contains("commit offset of group workers") && refused.contains("UNKNOWN_MEMBER_ID"),
        "{refused}"
    );
    let busy = cli.fails(&["group", "delete", "workers"]);
    assert!(busy.contains("NON_EMPTY_GROUP"), "{busy}");
    member.leave();

    let deleted = cli.ok(&["group", "delete", "workers"]);
    assert_eq!(deleted, "deleted group workers\n");
    assert!(!cli.ok(&["group", "list"]).contains("workers"));
    let gone = cli.fails(&["group", "delete", "workers"]);
    assert!(gone.contains("GROUP_ID_NOT_FOUND"), "{gone}");
    let undescribed = cli.fails(&["group", "describe", "workers"]);
    assert!(undescribed.contains("GROUP_ID_NOT_FOUND"), "{undescribed}");
}

/// A KIP-848 member held by the test itself, as another consumer would be.
struct GroupMember {
    client: corelog_client::Client,
    group: String,
    member: Member,
}

impl GroupMember {
    fn join(broker: &Broker, group: &str, topic: &str) -> GroupMember {
        let options = corelog_client::Options {
            timeout: Duration::from_secs(10),
            client_id: "cli-tests".into(),
        };
        let mut client =
            corelog_client::Client::connect(&[broker.addr.to_string()], options).unwrap();
        let mut member = Member {
            member_id: uuid::Uuid::new_v4().to_string(),
            member_epoch: 0,
        };
        let topics = [topic.to_string()];
        let heartbeat = Heartbeat {
            subscription: Some(&topics),
            owned: None,
            rebalance_timeout_ms: 30_000,
        };
        let answer = client.heartbeat(group, &member, &heartbeat).unwrap();
        member.member_epoch = answer.member_epoch;
        assert!(answer.assignment.is_some_and(|a| !a.is_empty()));
        GroupMember {
            client,
            group: group.to_string(),
            member,
        }
    }

    fn leave(&mut self) {
        self.member.member_epoch = LEAVE_EPOCH;
        let heartbeat = Heartbeat {
            subscription: None,
            owned: None,
            rebalance_timeout_ms: 30_000,
        };
        self.client
            .heartbeat(&self.group, &self.member, &heartbeat)
            .unwrap();
    }
}

#[test]
fn cluster_info_and_unreachable_brokers() {
    let broker = start_broker();
    let cli = Cli::new(&broker);

    let info = cli.json(&["cluster", "info"]);
    assert!(!info["cluster_id"].as_str().unwrap().is_empty());
    assert_eq!(info["controller_id"], 1);
    assert_eq!(info["brokers"][0]["node_id"], 1);
    assert_eq!(info["brokers"][0]["port"], broker.addr.port());
    assert!(info.get("api_versions").is_none());
    let verbose = cli.json(&["cluster", "info", "--verbose"]);
    let apis = verbose["api_versions"].as_array().unwrap();
    let heartbeat = apis.iter().find(|a| a["key"] == 68).unwrap();
    assert_eq!(heartbeat["api"], "ConsumerGroupHeartbeat");
    let human = cli.ok(&["cluster", "info", "--verbose"]);
    assert!(
        human.contains(&info["cluster_id"].as_str().unwrap().to_string())
            && human.contains("ApiVersions"),
        "{human}"
    );

    // --brokers wins over CORELOG_BROKERS; a refused connection is one line and exit 1.
    let closed = common::free_addr().to_string();
    let refused = cli.fails(&["topic", "list", "--brokers", &closed]);
    assert!(
        refused.contains("cannot connect") && refused.contains(&closed),
        "{refused}"
    );
    let from_env = run_with(&closed, &["cluster", "info"], "");
    assert!(!from_env.success && from_env.stderr.contains("cannot connect"));
    let fallback = format!("{closed},{}", broker.addr);
    assert!(run_with(&fallback, &["cluster", "info"], "").success);
}
