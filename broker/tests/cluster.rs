//! Replication under faults, on a real three-broker cluster (common/cluster.rs): a
//! Jepsen-style check that acknowledged writes survive crashes, pauses and partitions,
//! the controller quorum, and failover time. Also the fault proxy's own tests.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::cluster::{connect, Cluster, CLUSTER_TIMEOUT};
use common::fault_proxy::{connect_from, FaultProxy, Source};
use corelog_client::records::{record, FetchPosition, ProduceOptions};
use corelog_client::Client;
use kafka_protocol::records::Compression;

// --- the fault proxy ------------------------------------------------------------------

/// Echoes every connection back to its sender, until dropped.
struct EchoServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl EchoServer {
    fn start() -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        let mut reader = stream.try_clone().unwrap();
                        let mut writer = stream;
                        // Ends when the peer (the proxy) closes the connection.
                        std::thread::spawn(move || std::io::copy(&mut reader, &mut writer));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        EchoServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
    }
}

fn with_timeout(stream: TcpStream) -> TcpStream {
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
}

/// Sends `data` and reads as many bytes back.
fn echo(stream: &mut TcpStream, data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut writer = stream.try_clone()?;
    let owned = data.to_vec();
    // Written from another thread: the echo comes back while we still write.
    let sender = std::thread::spawn(move || writer.write_all(&owned));
    let mut back = vec![0u8; data.len()];
    let read = stream.read_exact(&mut back);
    sender.join().unwrap()?;
    read.map(|()| back)
}

/// Whether the proxy closed the connection: a read ends (EOF or reset) instead of
/// timing out.
fn closed_by_proxy(stream: &mut TcpStream) -> bool {
    let _ = stream.write_all(b"x");
    let mut byte = [0u8; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn proxy_passes_bytes_both_ways() {
    let echo_server = EchoServer::start();
    let proxy = FaultProxy::start(echo_server.addr);
    let mut stream = with_timeout(TcpStream::connect(proxy.addr()).unwrap());
    // More than the proxy buffers, to go through its bounded queues many times over.
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i * 7 + i / 251) as u8).collect();
    assert!(echo(&mut stream, &data).unwrap() == data, "bytes changed");
    assert_eq!(proxy.open_connections(), 1);
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(5);
    while proxy.open_connections() > 0 {
        assert!(Instant::now() < deadline, "the proxy kept a closed link");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn proxy_cut_closes_and_refuses_until_healed() {
    let echo_server = EchoServer::start();
    let proxy = FaultProxy::start(echo_server.addr);
    let mut before = with_timeout(TcpStream::connect(proxy.addr()).unwrap());
    assert_eq!(echo(&mut before, b"hello").unwrap(), b"hello");

    proxy.cut(Source::External);
    assert!(
        closed_by_proxy(&mut before),
        "a cut left the connection open"
    );
    let mut during = with_timeout(TcpStream::connect(proxy.addr()).unwrap());
    assert!(closed_by_proxy(&mut during), "a cut source got through");

    proxy.heal();
    let mut after = with_timeout(TcpStream::connect(proxy.addr()).unwrap());
    assert_eq!(echo(&mut after, b"again").unwrap(), b"again");
}

#[test]
fn proxy_tells_brokers_apart_by_source_address() {
    let echo_server = EchoServer::start();
    let proxy = FaultProxy::start(echo_server.addr);
    let broker = |n| with_timeout(connect_from(Source::broker_ip(n), proxy.addr()).unwrap());
    let mut two = broker(2);
    let mut three = broker(3);
    let mut external = with_timeout(
        connect_from(Ipv4Addr::LOCALHOST, proxy.addr()).expect("connect from 127.0.0.1"),
    );
    for stream in [&mut two, &mut three, &mut external] {
        assert_eq!(echo(stream, b"up").unwrap(), b"up");
    }

    proxy.cut(Source::Broker(2));
    assert!(
        closed_by_proxy(&mut two),
        "broker 2's link survived its cut"
    );
    assert!(
        closed_by_proxy(&mut broker(2)),
        "broker 2 got through a cut"
    );
    assert_eq!(echo(&mut three, b"still").unwrap(), b"still");
    assert_eq!(echo(&mut external, b"still").unwrap(), b"still");
    assert_eq!(echo(&mut broker(3), b"new").unwrap(), b"new");

    proxy.heal();
    assert_eq!(echo(&mut broker(2), b"back").unwrap(), b"back");
}

#[test]
fn proxy_delay_holds_chunks_of_that_source_only() {
    let echo_server = EchoServer::start();
    let proxy = FaultProxy::start(echo_server.addr);
    let delay = Duration::from_millis(300);
    proxy.delay(Source::Broker(2), delay);
    let round_trip = |n| {
        let mut stream = with_timeout(connect_from(Source::broker_ip(n), proxy.addr()).unwrap());
        let start = Instant::now();
        assert_eq!(echo(&mut stream, b"ping").unwrap(), b"ping");
        start.elapsed()
    };
    // Held once each way: a lower bound, whatever the machine's load.
    assert!(round_trip(2) >= 2 * delay, "the delay was not applied");
    proxy.heal();
    let healed = round_trip(2);
    assert!(healed < 2 * delay, "heal left a delay ({healed:?})");
}

// --- cluster helpers ------------------------------------------------------------------

const PARTITIONS: i32 = 3;

/// One client per producer, rebuilt after any failure: a broker it talked to may be dead,
/// paused or no longer the leader, and a fresh client asks for fresh metadata.
struct Producer {
    bootstrap: Vec<String>,
    client: Option<Client>,
    /// Rotates which broker a new client tries first, so a dead one is not always first.
    reconnects: usize,
    encoded: BytesMut,
}

impl Producer {
    fn new(bootstrap: Vec<String>) -> Producer {
        Producer {
            bootstrap,
            client: None,
            reconnects: 0,
            encoded: BytesMut::new(),
        }
    }

    /// One try at producing `value` to `topic`-`partition` with acks=all; the offset on
    /// acknowledgement.
    fn try_produce(
        &mut self,
        topic: &str,
        partition: i32,
        value: &str,
    ) -> corelog_client::Result<i64> {
        let result = self.produce_once(topic, partition, value);
        if result.is_err() {
            self.client = None;
        }
        result
    }

    fn produce_once(
        &mut self,
        topic: &str,
        partition: i32,
        value: &str,
    ) -> corelog_client::Result<i64> {
        if self.client.is_none() {
            self.reconnects += 1;
            let mut order = self.bootstrap.clone();
            let first = self.reconnects % order.len();
            order.rotate_left(first);
            self.client = Some(connect(&order)?);
        }
        let client = self.client.as_mut().unwrap();
        let info = client.topic(topic, false)?;
        let records = vec![record(
            None,
            Some(Bytes::copy_from_slice(value.as_bytes())),
            &[],
            common::now_ms(),
        )];
        let options = ProduceOptions {
            acks: -1,
            compression: Compression::None,
            timeout_ms: 5_000,
        };
        let produced = client.produce(
            &info,
            &mut [(partition, records)],
            &options,
            &mut self.encoded,
        )?;
        Ok(produced[0].1.expect("acks=all gives an offset"))
    }

    /// Tries until acknowledged or `deadline`; returns the tries and the offset.
    fn produce_until(
        &mut self,
        topic: &str,
        partition: i32,
        value: &str,
        deadline: Instant,
    ) -> (u32, Option<i64>) {
        let mut tries = 0;
        while Instant::now() < deadline {
            tries += 1;
            match self.try_produce(topic, partition, value) {
                Ok(offset) => return (tries, Some(offset)),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        (tries, None)
    }
}

/// Every record of a partition from offset 0 up to its high watermark, read from its
/// leader: (offset, value), and the high watermark.
fn read_partition(cluster: &Cluster, topic: &str, partition: i32) -> (Vec<(i64, String)>, i64) {
    let leader = cluster.wait_for_leader(topic, partition);
    let mut client = cluster.client();
    let info = client.topic(topic, false).unwrap();
    let mut records = Vec::new();
    let mut offset = 0;
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    loop {
        let position = FetchPosition {
            topic: &info,
            partition,
            offset,
        };
        let fetched = client
            .fetch(leader, &[position], 100)
            .unwrap_or_else(|e| panic!("fetch {topic}-{partition} at {offset}: {e}"));
        let high_watermark = fetched[0].high_watermark;
        for r in &fetched[0].records {
            let value = String::from_utf8(r.value.as_deref().unwrap_or_default().to_vec());
            records.push((r.offset, value.expect("utf-8 payload")));
            offset = r.offset + 1;
        }
        if offset >= high_watermark {
            return (records, high_watermark);
        }
        assert!(
            Instant::now() < deadline,
            "{topic}-{partition}: read to {offset} of {high_watermark} before the deadline"
        );
    }
}

/// The bytes of every record batch of a partition's log below `high_watermark`, read from
/// the segment files in a broker's data dir, and the offset after the last one.
fn log_below(data_dir: &Path, topic: &str, partition: i32, high_watermark: i64) -> (Vec<u8>, i64) {
    let dir = data_dir.join(format!("{topic}-{partition}"));
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    // Named by their 20-digit base offset: name order is log order.
    segments.sort();
    let mut below = Vec::new();
    let mut next = 0;
    for segment in segments {
        let data = std::fs::read(&segment).unwrap();
        let mut at = 0;
        // Batch v2: baseOffset i64, batchLength i32 (the bytes after it), ...,
        // lastOffsetDelta i32 at byte 23. A short or zero length ends the written part.
        while at + 27 <= data.len() {
            let base = i64::from_be_bytes(data[at..at + 8].try_into().unwrap());
            let length = i32::from_be_bytes(data[at + 8..at + 12].try_into().unwrap());
            let end = at + 12 + usize::try_from(length).unwrap_or(0);
            if length < 49 || end > data.len() {
                break;
            }
            let last_delta = i32::from_be_bytes(data[at + 23..at + 27].try_into().unwrap());
            let last = base + i64::from(last_delta);
            if last >= high_watermark {
                return (below, next);
            }
            below.extend_from_slice(&data[at..end]);
            next = last + 1;
            at = end;
        }
    }
    (below, next)
}

/// The checker's own segment reader, on a single broker: the batches it finds in the
/// files are the ones a fetch returns, cut at the high watermark asked for.
#[test]
fn segment_files_hold_the_fetched_batches() {
    let mut broker = common::Broker::start(1, &[]);
    let mut client = broker.client();
    client.create_topic("segments", 1);
    for values in [&["a", "b"][..], &["c"], &["d", "e", "f"]] {
        assert_eq!(
            client.produce("segments", 0, -1, common::batch(values)).0,
            0
        );
    }
    let (error, high_watermark, fetched) = client.fetch("segments", 0, 0, 100);
    assert_eq!((error, high_watermark), (0, 6));
    assert!(broker.stop_gracefully());

    let dir = broker.data_dir();
    assert_eq!(log_below(dir, "segments", 0, 6), (fetched.to_vec(), 6));
    // Offset 3 starts the last batch: the two batches before it.
    let (below, next) = log_below(dir, "segments", 0, 3);
    assert_eq!(next, 3);
    let values: Vec<String> = common::decode_values(below.into())
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(values, ["a", "b", "c"]);
    // A batch reaching the high watermark is left out whole.
    assert_eq!(log_below(dir, "segments", 0, 1), (Vec::new(), 0));
}

// --- the Jepsen-style check -----------------------------------------------------------

const PRODUCERS: u32 = 4;
const PRODUCE_FOR: Duration = Duration::from_secs(25);

/// A message a producer sent: payload `p<producer>-s<seq>`.
struct Sent {
    producer: u32,
    seq: u32,
    partition: i32,
    /// Tries until acknowledged (or given up).
    tries: u32,
    acked_at: Option<i64>,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    Kill,
    Pause,
    Isolate,
}

/// Faults the leader of a partition after another, round robin over the fault kinds,
/// until `until`; returns what it did.
fn nemesis(cluster: &mut Cluster, topic: &str, until: Instant) -> Vec<String> {
    let faults = [Fault::Kill, Fault::Pause, Fault::Isolate];
    let hold = Duration::from_secs(4);
    let settle = Duration::from_secs(3);
    let start = Instant::now();
    let mut done = Vec::new();
    std::thread::sleep(settle);
    for i in 0.. {
        if Instant::now() + hold >= until {
            break;
        }
        let fault = faults[i % faults.len()];
        let partition = i as i32 % PARTITIONS;
        let leader = cluster.wait_for_leader(topic, partition);
        done.push(format!(
            "{:>5.1}s {fault:?} broker {leader} (leader of {topic}-{partition})",
            start.elapsed().as_secs_f64()
        ));
        match fault {
            Fault::Kill => cluster.kill9(leader),
            Fault::Pause => cluster.sigstop(leader),
            Fault::Isolate => cluster.isolate(leader),
        }
        std::thread::sleep(hold);
        match fault {
            Fault::Kill => cluster.restart(leader),
            Fault::Pause => cluster.sigcont(leader),
            Fault::Isolate => cluster.heal_all(),
        }
        // One fault at a time: the next hits a cluster whose replicas all caught up.
        cluster.wait_for_full_isr(topic, PARTITIONS);
        std::thread::sleep(settle);
    }
    done
}

#[test]
fn acknowledged_writes_survive_kills_pauses_and_partitions() {
    let mut cluster = Cluster::start(3, 1, &[]);
    let topic = "jepsen";
    cluster.create_topic(topic, PARTITIONS, 3);

    let bootstrap = cluster.bootstrap();
    let until = Instant::now() + PRODUCE_FOR;
    let (sent, faults) = std::thread::scope(|s| {
        let producers: Vec<_> = (0..PRODUCERS)
            .map(|producer| {
                let mut client = Producer::new(bootstrap.clone());
                s.spawn(move || {
                    let mut sent = Vec::new();
                    for seq in 0.. {
                        if Instant::now() >= until {
                            break;
                        }
                        let partition = (seq % PARTITIONS as u32) as i32;
                        let value = format!("p{producer}-s{seq}");
                        let (tries, acked_at) =
                            client.produce_until(topic, partition, &value, until);
                        sent.push(Sent {
                            producer,
                            seq,
                            partition,
                            tries,
                            acked_at,
                        });
                    }
                    sent
                })
            })
            .collect();
        let faults = nemesis(&mut cluster, topic, until);
        let sent: Vec<Sent> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        (sent, faults)
    });
    println!("nemesis:\n  {}", faults.join("\n  "));

    cluster.recover_all();
    cluster.wait_for_full_isr(topic, PARTITIONS);
    let mut high_watermarks = Vec::new();
    let mut found: HashMap<String, Vec<(i32, i64)>> = HashMap::new();
    let mut problems = Vec::new();
    let mut read_back = 0;
    for p in 0..PARTITIONS {
        let (records, high_watermark) = read_partition(&cluster, topic, p);
        let offsets: Vec<i64> = records.iter().map(|(o, _)| *o).collect();
        if offsets != (0..high_watermark).collect::<Vec<_>>() {
            problems.push(format!("{topic}-{p}: offsets are not 0..{high_watermark}"));
        }
        read_back += records.len();
        for (offset, value) in records {
            found.entry(value).or_default().push((p, offset));
        }
        high_watermarks.push(high_watermark);
    }

    let by_value: HashMap<String, &Sent> = sent
        .iter()
        .map(|m| (format!("p{}-s{}", m.producer, m.seq), m))
        .collect();
    let acknowledged = sent.iter().filter(|m| m.acked_at.is_some()).count();
    let (mut lost, mut retried_duplicates, mut unacked_present) = (0, 0, 0);
    for (value, m) in &by_value {
        let copies = found.get(value).map_or(&[][..], Vec::as_slice);
        if copies.iter().any(|(p, _)| *p != m.partition) {
            problems.push(format!("{value} found in another partition: {copies:?}"));
        }
        match (m.acked_at, copies.len()) {
            (Some(_), 0) => lost += 1,
            (None, n) if n > 0 => unacked_present += 1,
            _ => {}
        }
        if copies.len() > 1 {
            if m.tries > 1 {
                retried_duplicates += copies.len() - 1;
            } else {
                problems.push(format!("{value} was sent once but is stored at {copies:?}"));
            }
        }
    }
    for value in found.keys().filter(|v| !by_value.contains_key(*v)) {
        problems.push(format!("{value} was never sent"));
    }
    // A producer sends its next message only after the previous one is acknowledged, so
    // the first copy of each acknowledged message lies before every copy of the next.
    for producer in 0..PRODUCERS {
        for p in 0..PARTITIONS {
            let firsts: Vec<(u32, i64)> = sent
                .iter()
                .filter(|m| m.producer == producer && m.partition == p && m.acked_at.is_some())
                .filter_map(|m| {
                    let copies = found.get(&format!("p{producer}-s{}", m.seq))?;
                    Some((m.seq, copies.iter().map(|c| c.1).min()?))
                })
                .collect();
            if let Some(w) = firsts.windows(2).find(|w| w[0].1 >= w[1].1) {
                problems.push(format!(
                    "producer {producer} in {topic}-{p}: s{} at {} is not before s{} at {}",
                    w[0].0, w[0].1, w[1].0, w[1].1
                ));
            }
        }
    }
    if lost > 0 {
        problems.push(format!("{lost} acknowledged messages are lost"));
    }

    // The replicas hold the same bytes below the high watermark; read with the brokers
    // stopped, so nothing is appended meanwhile.
    cluster.stop_all();
    for (p, &high_watermark) in high_watermarks.iter().enumerate() {
        let p = p as i32;
        let logs: BTreeMap<i32, (Vec<u8>, i64)> = cluster
            .broker_ids()
            .into_iter()
            .map(|n| (n, log_below(cluster.data_dir(n), topic, p, high_watermark)))
            .collect();
        for (n, (bytes, next)) in &logs {
            if *next != high_watermark {
                problems.push(format!(
                    "broker {n}: {topic}-{p} holds batches up to {next}, the high watermark is {high_watermark}"
                ));
            }
            if bytes != &logs[&1].0 {
                problems.push(format!(
                    "broker {n}: {topic}-{p} differs from broker 1 below the high watermark"
                ));
            }
        }
    }

    println!(
        "acknowledged {acknowledged} of {} sent, read back {read_back}, lost {lost}, \
         duplicates from retries {retried_duplicates}, unacknowledged but stored \
         {unacked_present}, high watermarks {high_watermarks:?}",
        sent.len()
    );
    assert!(acknowledged > 0, "nothing was acknowledged");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// --- the controller quorum ------------------------------------------------------------

/// (topic id, partitions, replicas per partition) of a topic.
fn shape(cluster: &Cluster, topic: &str) -> (uuid::Uuid, Vec<Vec<i32>>) {
    let info = cluster.client().topic(topic, false).unwrap();
    let mut replicas: Vec<(i32, Vec<i32>)> = info
        .partitions
        .iter()
        .map(|p| (p.partition, p.replicas.clone()))
        .collect();
    replicas.sort();
    (
        info.topic_id,
        replicas.into_iter().map(|(_, r)| r).collect(),
    )
}

#[test]
fn controller_quorum_survives_a_broker_and_a_full_restart() {
    let mut cluster = Cluster::start(3, 1, &[]);
    cluster.create_topic("before", PARTITIONS, 3);

    // Two voters of three are a quorum: topics can still be created.
    cluster.kill9(3);
    cluster.create_topic("during", 2, 2);
    cluster.restart(3);

    let shapes: BTreeMap<&str, _> = ["before", "during"]
        .into_iter()
        .map(|t| (t, shape(&cluster, t)))
        .collect();
    cluster.restart_all();
    for (topic, (id, replicas)) in &shapes {
        assert_eq!(&shape(&cluster, topic), &(*id, replicas.clone()), "{topic}");
        for p in 0..replicas.len() as i32 {
            cluster.wait_until(&format!("a leader in the ISR of {topic}-{p}"), || {
                let info = cluster.partition(topic, p)?;
                info.isr.contains(&info.leader).then_some(())
            });
        }
    }
}

// --- failover time --------------------------------------------------------------------

#[test]
fn failover_after_leader_kill() {
    let mut cluster = Cluster::start(3, 1, &[]);
    let topic = "failover";
    cluster.create_topic(topic, 1, 3);
    let mut producer = Producer::new(cluster.bootstrap());
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    let (_, first) = producer.produce_until(topic, 0, "before", deadline);
    assert_eq!(first, Some(0), "the first message");
    cluster.wait_for_full_isr(topic, 1);

    let leader = cluster.wait_for_leader(topic, 0);
    cluster.kill9(leader);
    let killed = Instant::now();
    let (tries, offset) = producer.produce_until(topic, 0, "after", killed + CLUSTER_TIMEOUT);
    let failover = killed.elapsed();
    assert!(offset.is_some(), "no produce succeeded after the kill");
    let new_leader = cluster.wait_for_leader(topic, 0);
    assert_ne!(new_leader, leader);
    println!(
        "failover: kill -9 of leader {leader} to the first acknowledged produce (to {new_leader}): {} ms, {tries} tries",
        failover.as_millis()
    );
    let (records, _) = read_partition(&cluster, topic, 0);
    let values: Vec<&str> = records.iter().map(|(_, v)| v.as_str()).collect();
    // A try that failed without an answer may have been stored too.
    assert_eq!(values[0], "before");
    assert!(
        values[1..].iter().all(|v| *v == "after") && values.len() >= 2,
        "{values:?}"
    );
}

/// A follower shard fetches from each leader over one connection, with
/// `replica.fetch.pipeline.depth` fetches in flight on it.
#[test]
fn followers_fetch_from_each_leader_over_one_connection() {
    let cluster = Cluster::start(3, 1, &["replica.fetch.pipeline.depth=4"]);
    let topic = "links";
    let partitions = 12;
    cluster.create_topic(topic, partitions, 3);
    let mut producer = Producer::new(cluster.bootstrap());
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    // acks=all on every partition: every lane of every link carries data.
    for partition in 0..partitions {
        let (_, offset) = producer.produce_until(topic, partition, "v", deadline);
        assert_eq!(offset, Some(0), "partition {partition}");
    }
    cluster.wait_for_full_isr(topic, partitions);
    for n in cluster.broker_ids() {
        let leads = (0..partitions).any(|p| cluster.leader_of(topic, p) == Some(n));
        assert!(leads, "broker {n} leads no partition of {topic}");
        // One from each of the two other brokers.
        assert_eq!(cluster.replication_connections(n), 2, "into broker {n}");
    }
}

// --- ISR rejoin ----------------------------------------------------------------------

/// The partitions of `topic` (of `partitions`) whose ISR misses a broker, as broker
/// `witness` describes them; None when it does not answer.
fn short_isrs(
    cluster: &Cluster,
    witness: i32,
    topic: &str,
    partitions: i32,
) -> Option<Vec<(i32, Vec<i32>)>> {
    let everyone: Vec<i32> = cluster.broker_ids();
    let info = cluster.topic_seen_by(witness, topic)?;
    let mut short: Vec<(i32, Vec<i32>)> = info
        .partitions
        .into_iter()
        .filter(|p| p.partition < partitions)
        .filter(|p| p.leader <= 0 || !everyone.iter().all(|id| p.isr.contains(id)))
        .map(|p| (p.partition, p.isr))
        .collect();
    short.sort();
    Some(short)
}

const OFFSETS_TOPIC: &str = "__consumer_offsets";
/// The default `offsets.topic.num.partitions`.
const OFFSETS_PARTITIONS: i32 = 50;

/// A broker killed with -9 and restarted is back in the ISR of every partition it holds
/// within a bound, whether producers keep going or stop as it comes back. Each round kills
/// the next broker, so the victim has led partitions (it comes back a follower of those)
/// and followed others; the offsets topic's 50 partitions are in play too.
#[test]
fn killed_broker_rejoins_the_isr_with_and_without_load() {
    const REJOIN_BOUND: Duration = Duration::from_secs(20);
    const TOPIC_PARTITIONS: i32 = 8;
    let mut cluster = Cluster::start(3, 1, &[]);
    let topic = "rejoin";
    cluster.create_topic(topic, TOPIC_PARTITIONS, 3);
    cluster.wait_for_full_isr(topic, TOPIC_PARTITIONS);
    let rounds = [(1, true), (2, false), (3, true), (1, false)];
    let mut timings = Vec::new();
    for (victim, keep_producing) in rounds {
        let stop = AtomicBool::new(false);
        let bootstrap = cluster.bootstrap();
        let (rejoined, sent) = std::thread::scope(|s| {
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|producer| {
                    let mut client = Producer::new(bootstrap.clone());
                    let stop = &stop;
                    s.spawn(move || {
                        let mut sent = 0u32;
                        while !stop.load(Ordering::Relaxed) {
                            let partition = (sent % TOPIC_PARTITIONS as u32) as i32;
                            let deadline = Instant::now() + Duration::from_secs(1);
                            let value = format!("p{producer}-s{sent}");
                            client.produce_until(topic, partition, &value, deadline);
                            sent += 1;
                        }
                        sent
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_secs(2));
            cluster.kill9(victim);
            // Long enough for the session to expire and the ISRs to shrink.
            std::thread::sleep(Duration::from_secs(4));
            cluster.restart(victim);
            if !keep_producing {
                stop.store(true, Ordering::Relaxed);
            }
            let restarted = Instant::now();
            let mut last = [Vec::new(), Vec::new()];
            let rejoined = loop {
                // Not the restarted broker: its view may still be the one from before.
                let witness = victim % 3 + 1;
                let short = short_isrs(&cluster, witness, topic, TOPIC_PARTITIONS).zip(short_isrs(
                    &cluster,
                    witness,
                    OFFSETS_TOPIC,
                    OFFSETS_PARTITIONS,
                ));
                match short {
                    Some((a, b)) if a.is_empty() && b.is_empty() => break Ok(restarted.elapsed()),
                    Some((a, b)) => last = [a, b],
                    None => {}
                }
                if restarted.elapsed() > REJOIN_BOUND {
                    break Err(last);
                }
                std::thread::sleep(Duration::from_millis(100));
            };
            stop.store(true, Ordering::Relaxed);
            let sent: u32 = producers.into_iter().map(|p| p.join().unwrap()).sum();
            (rejoined, sent)
        });
        println!(
            "broker {victim} killed, producing {keep_producing}: rejoined {rejoined:?}, \
             {sent} produce tries"
        );
        match rejoined {
            Ok(took) => timings.push(took),
            Err(short) => panic!(
                "ISRs not full within {REJOIN_BOUND:?} of restarting broker {victim} \
                 (producing: {keep_producing}); short ones ({topic}, then {OFFSETS_TOPIC}): \
                 {short:?}"
            ),
        }
    }
    println!("rejoin times: {timings:?}");
}

/// A leader replaced before it appended anything in its epoch comes back a follower
/// whose latest epoch the new leader never saw: paused past its session, or killed and
/// restarted (its own metadata log makes it leader in that epoch again for a moment). The
/// new leader answers its fetches with a divergence that ends at its log end: it must drop
/// that empty epoch and rejoin, not ask again with it forever.
#[test]
fn a_leader_replaced_before_appending_rejoins_the_isr() {
    let mut cluster = Cluster::start(3, 1, &["leader.imbalance.check.interval.seconds=1"]);
    let topic = "empty-epoch";
    cluster.create_topic(topic, 1, 3);
    cluster.wait_for_full_isr(topic, 1);
    let preferred = cluster.partition(topic, 0).unwrap().replicas[0];
    // Asked of another broker: the replaced one's view is stale once it runs again.
    let witness = cluster
        .broker_ids()
        .into_iter()
        .find(|&n| n != preferred)
        .unwrap();
    let seen = |cluster: &Cluster| {
        let info = cluster.topic_seen_by(witness, topic)?;
        info.partitions.into_iter().find(|p| p.partition == 0)
    };
    let mut producer = Producer::new(cluster.bootstrap());
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    assert_eq!(producer.produce_until(topic, 0, "a", deadline).1, Some(0));

    for pause in [true, false] {
        // Away and back: the preferred replica leads again, in a new epoch with no batch.
        cluster.stop(preferred);
        cluster.restart(preferred);
        cluster.wait_until("the preferred replica leading again", || {
            let info = seen(&cluster)?;
            (info.leader == preferred && info.isr.len() == 3).then_some(())
        });
        // Replaced: another replica leads, in an epoch starting where the empty one starts.
        if pause {
            cluster.sigstop(preferred);
        } else {
            cluster.kill9(preferred);
        }
        cluster.wait_until("the preferred replica replaced and out of the ISR", || {
            let info = seen(&cluster)?;
            (info.leader > 0 && !info.isr.contains(&preferred)).then_some(())
        });
        if pause {
            cluster.sigcont(preferred);
        } else {
            cluster.restart(preferred);
        }
        cluster.wait_within(
            Duration::from_secs(20),
            &format!("the replaced replica back in the ISR (paused: {pause})"),
            || (seen(&cluster)?.isr.len() == 3).then_some(()),
        );
    }
}

// --- group coordinator failover -------------------------------------------------------

/// The group's committed offsets of `topic`, as (partition, offset), from whichever broker
/// a fresh client finds as the coordinator.
fn committed(cluster: &Cluster, group: &str, topic: &str) -> Option<Vec<(i32, i64)>> {
    let partitions = [(topic.to_string(), (0..PARTITIONS).collect())];
    let mut offsets: Vec<(i32, i64)> = cluster
        .client()
        .committed_offsets(group, Some(&partitions), None)
        .ok()?
        .into_iter()
        .map(|c| (c.partition, c.offset))
        .collect();
    offsets.sort();
    Some(offsets)
}

#[test]
fn coordinator_failover_keeps_committed_offsets() {
    let mut cluster = Cluster::start(3, 1, &[]);
    let (topic, group) = ("orders", "billing");
    cluster.create_topic(topic, PARTITIONS, 3);
    let commits: Vec<(String, i32, i64)> = (0..PARTITIONS)
        .map(|p| (topic.to_string(), p, 10 * i64::from(p + 1)))
        .collect();
    let mut client = cluster.client();
    let coordinator = client.coordinator(group).unwrap();
    client.commit_offsets(group, None, &commits).unwrap();

    // At once after the acknowledgement: a commit must be on the ISR when acknowledged.
    cluster.kill9(coordinator);
    let successor = cluster.wait_until("another coordinator", || {
        let named = cluster.client().coordinator(group).ok()?;
        (named > 0 && named != coordinator).then_some(named)
    });
    let expected: Vec<(i32, i64)> = commits.iter().map(|(_, p, o)| (*p, *o)).collect();
    let after_failover = cluster.wait_until("the offsets from the new coordinator", || {
        committed(&cluster, group, topic)
    });
    assert_eq!(
        after_failover, expected,
        "offsets on broker {successor} after broker {coordinator} was killed"
    );

    let mut client = cluster.client();
    assert_eq!(client.coordinator(group).unwrap(), successor);
    client
        .commit_offsets(group, None, &[(topic.to_string(), 1, 77)])
        .unwrap();
    let mut expected = expected;
    expected[1].1 = 77;
    assert_eq!(committed(&cluster, group, topic), Some(expected));
}

// --- controlled shutdown and preferred leaders ----------------------------------------

#[test]
fn controlled_shutdown_hands_over_and_the_preferred_leader_returns() {
    // A session far longer than the waits below: a leadership that moves in time was
    // moved by the controlled shutdown, not by the session expiring.
    let mut cluster = Cluster::start(
        3,
        1,
        &[
            "broker.session.timeout.ms=30000",
            "leader.imbalance.check.interval.seconds=1",
        ],
    );
    let topic = "handover";
    cluster.create_topic(topic, 1, 3);
    cluster.wait_for_full_isr(topic, 1);
    let preferred = cluster.partition(topic, 0).unwrap().replicas[0];
    cluster.wait_until("the preferred replica leading", || {
        (cluster.leader_of(topic, 0)? == preferred).then_some(())
    });
    let mut producer = Producer::new(cluster.bootstrap());
    let deadline = Instant::now() + CLUSTER_TIMEOUT;
    assert_eq!(
        producer.produce_until(topic, 0, "before", deadline).1,
        Some(0)
    );

    cluster.stop(preferred);
    let successor = cluster.wait_within(
        Duration::from_secs(5),
        "a new leader named by the remaining brokers after the controlled shutdown",
        || {
            let info = cluster.partition(topic, 0)?;
            (info.leader > 0 && info.leader != preferred && !info.isr.contains(&preferred))
                .then_some(info.leader)
        },
    );
    // Two replicas remain, as min.insync.replicas asks: acks=all writes go on.
    for i in 0..10 {
        let value = format!("during-{i}");
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            match producer.try_produce(topic, 0, &value) {
                Ok(_) => break,
                Err(e) => {
                    assert_ne!(
                        e.kafka_code(),
                        Some(kafka_protocol::error::ResponseError::NotEnoughReplicas),
                        "{value} with 2 of 3 replicas in sync: {e}"
                    );
                    assert!(Instant::now() < deadline, "{value} not acknowledged: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    cluster.restart(preferred);
    cluster.wait_until("the preferred replica leading again", || {
        let info = cluster.partition(topic, 0)?;
        (info.leader == preferred && info.isr.len() == 3).then_some(())
    });
    println!("leadership moved {preferred} -> {successor} -> {preferred}");
    let (records, _) = read_partition(&cluster, topic, 0);
    assert_eq!(records.len(), 11, "{records:?}");
}

// --- explicit replica assignments -----------------------------------------------------

fn broker_ids(ids: &[i32]) -> Vec<kafka_protocol::messages::BrokerId> {
    ids.iter()
        .map(|&b| kafka_protocol::messages::BrokerId(b))
        .collect()
}

/// CreateTopics with explicit replicas per partition; the topic's error code.
fn create_with_assignments(raw: &mut common::Client, topic: &str, replicas: &[&[i32]]) -> i16 {
    use kafka_protocol::messages::create_topics_request::{
        CreatableReplicaAssignment, CreatableTopic,
    };
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    let assignments = replicas
        .iter()
        .enumerate()
        .map(|(p, ids)| {
            CreatableReplicaAssignment::default()
                .with_partition_index(p as i32)
                .with_broker_ids(broker_ids(ids))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(topic.to_string().into()))
            .with_num_partitions(-1)
            .with_replication_factor(-1)
            .with_assignments(assignments)]);
    raw.call(7, &request).topics[0].error_code
}

/// CreatePartitions to `total`, with replicas for the new partitions or the controller's
/// placement; the topic's error code.
fn add_partitions(
    raw: &mut common::Client,
    topic: &str,
    total: i32,
    replicas: Option<&[&[i32]]>,
) -> i16 {
    use kafka_protocol::messages::create_partitions_request::{
        CreatePartitionsAssignment, CreatePartitionsTopic,
    };
    use kafka_protocol::messages::{CreatePartitionsRequest, TopicName};
    let assignments = replicas.map(|list| {
        list.iter()
            .map(|ids| CreatePartitionsAssignment::default().with_broker_ids(broker_ids(ids)))
            .collect()
    });
    let request = CreatePartitionsRequest::default()
        .with_timeout_ms(30_000)
        .with_topics(vec![CreatePartitionsTopic::default()
            .with_name(TopicName(topic.to_string().into()))
            .with_count(total)
            .with_assignments(assignments)]);
    raw.call(3, &request).results[0].error_code
}

#[test]
fn explicit_assignments_and_added_partitions_in_a_cluster() {
    const INVALID_REPLICA_ASSIGNMENT: i16 = 39;
    let cluster = Cluster::start(3, 1, &[]);
    let mut raw = common::Client::connect(cluster.kafka_addr(2));
    let topic = "placed";
    assert_eq!(
        create_with_assignments(&mut raw, topic, &[&[2, 3, 1], &[3, 1, 2]]),
        0
    );
    assert_eq!(add_partitions(&mut raw, topic, 3, Some(&[&[1, 2, 3]])), 0);
    assert_eq!(add_partitions(&mut raw, topic, 5, None), 0);

    // Every broker has applied the change before the next request is answered.
    cluster.wait_for_full_isr(topic, 5);
    let given = [vec![2, 3, 1], vec![3, 1, 2], vec![1, 2, 3]];
    for (p, replicas) in given.iter().enumerate() {
        let info = cluster.partition(topic, p as i32).unwrap();
        assert_eq!(&info.replicas, replicas, "{topic}-{p}");
    }
    for p in 3..5 {
        let mut replicas = cluster.partition(topic, p).unwrap().replicas;
        replicas.sort();
        assert_eq!(replicas, [1, 2, 3], "{topic}-{p} placed by the controller");
    }
    let mut producer = Producer::new(cluster.bootstrap());
    for p in 0..5 {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        let (_, offset) = producer.produce_until(topic, p, &format!("to-{p}"), deadline);
        assert_eq!(offset, Some(0), "acks=all write to {topic}-{p}");
    }

    // An unknown broker, a broker twice, and (for an existing topic) another replication
    // factor.
    let bad: [&[i32]; 3] = [&[1, 9, 2], &[1, 1, 2], &[2, 3]];
    for replicas in &bad[..2] {
        assert_eq!(
            create_with_assignments(&mut raw, "misplaced", &[replicas]),
            INVALID_REPLICA_ASSIGNMENT,
            "CreateTopics with replicas {replicas:?}"
        );
    }
    for replicas in bad {
        assert_eq!(
            add_partitions(&mut raw, topic, 6, Some(&[replicas])),
            INVALID_REPLICA_ASSIGNMENT,
            "CreatePartitions with replicas {replicas:?}"
        );
    }
    assert!(cluster.topic_seen_by(2, "misplaced").is_none());
    assert_eq!(cluster.topic_seen_by(2, topic).unwrap().partitions.len(), 5);
}

// --- controller quorum under link cuts ------------------------------------------------

#[test]
fn topics_are_created_while_a_minority_is_cut_off() {
    // Sessions outlast each cut: a fenced broker would rightly make RF 3 impossible
    // (INVALID_REPLICATION_FACTOR), and what is tested here is the quorum, not fencing.
    let mut cluster = Cluster::start(3, 1, &["broker.session.timeout.ms=15000"]);
    let controller = cluster.wait_until("an active controller", || cluster.active_controller());
    let follower = cluster
        .broker_ids()
        .into_iter()
        .find(|&n| n != controller)
        .unwrap();

    cluster.isolate(follower);
    cluster.create_topic("cut-follower", 2, 3);
    assert_eq!(cluster.active_controller(), Some(controller));
    cluster.heal_all();
    // The ISR may still name the follower from the topic's creation: what proves it caught
    // up is that it serves the topic.
    cluster.wait_until(&format!("broker {follower} knowing cut-follower"), || {
        cluster.topic_seen_by(follower, "cut-follower")
    });
    cluster.wait_for_full_isr("cut-follower", 2);

    cluster.isolate(controller);
    let isolated = Instant::now();
    let successor = cluster.wait_until("a new active controller", || {
        cluster.active_controller().filter(|&c| c != controller)
    });
    let elected = isolated.elapsed();
    cluster.create_topic("cut-controller", 2, 3);
    println!(
        "controller {controller} isolated: {successor} active after {} ms, a topic created after {} ms",
        elected.as_millis(),
        isolated.elapsed().as_millis()
    );
    cluster.heal_all();
    for topic in ["cut-follower", "cut-controller"] {
        cluster.wait_for_full_isr(topic, 2);
        cluster.wait_until(&format!("broker {controller} knowing {topic}"), || {
            cluster.topic_seen_by(controller, topic)
        });
    }
}
