//! End-to-end test support: the real `corelog` binary on an ephemeral loopback port with
//! a temp data dir, and a minimal blocking Kafka client on the kafka-protocol crate.

#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder};

pub mod cluster;
pub mod fault_proxy;

pub struct Broker {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    args: Vec<String>,
    /// Names the broker in failure output (several run in a cluster test).
    label: String,
}

/// How long a broker may take to answer its first request.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

impl Broker {
    /// Starts a broker with `cores` shards and extra `--set` settings.
    pub fn start(cores: usize, settings: &[&str]) -> Broker {
        let mut broker = Broker::new("corelog", cores, settings);
        broker.start_again();
        broker
    }

    /// A broker on a free port and a fresh data dir, not started yet: a cluster starts its
    /// brokers together, as one may not answer before a quorum of them runs.
    pub fn new(label: &str, cores: usize, settings: &[&str]) -> Broker {
        let dir = tempfile::tempdir().unwrap();
        let addr = free_addr();
        let mut args = vec![
            "serve".to_string(),
            "--listen".into(),
            addr.to_string(),
            "--data-dir".into(),
            dir.path().display().to_string(),
            "--cores".into(),
            cores.to_string(),
        ];
        for setting in settings {
            args.push("--set".into());
            args.push(setting.to_string());
        }
        Broker {
            child: None,
            addr,
            dir,
            args,
            label: label.to_string(),
        }
    }

    /// Starts the process without waiting for it to answer.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "{} still running", self.label);
        // The broker's log, kept beside its data so a test can read what it said.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_corelog"))
            .args(&self.args)
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start corelog");
        self.child = Some(child);
    }

    /// Waits until the broker answers ApiVersions; panics with its log if it exits first
    /// or does not answer within 30 s.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !self.answers_api_versions() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "{} exited at start: {status}\n{}",
                    self.label,
                    self.log_tail()
                );
            }
            assert!(
                Instant::now() < deadline,
                "{} did not answer within {READY_TIMEOUT:?}\n{}",
                self.label,
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Ready means answering a request, not just accepting: after a kill -9 the killed
    /// process's listening socket lingers until the kernel tears down its io_uring, and it
    /// accepts connections it will never serve.
    fn answers_api_versions(&self) -> bool {
        let Ok(stream) = TcpStream::connect(self.addr) else {
            return false;
        };
        stream
            .set_read_timeout(Some(Duration::from_millis(500)))
            .unwrap();
        let mut client = Client {
            stream,
            next_correlation_id: 1,
        };
        let request = ApiVersionsRequest::default();
        let sent =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| client.send(0, &request)));
        sent.is_ok() && client.read_frame().is_some()
    }

    /// SIGKILL, as a crash: nothing is flushed or checkpointed.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to the running process.
    pub fn signal(&self, signal: i32) {
        let child = self.child.as_ref().expect("broker running");
        // SAFETY: signals a child process we own and have not reaped.
        unsafe { libc::kill(child.id() as i32, signal) };
    }

    pub fn data_dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().with_extension("log")
    }

    /// Everything the broker printed so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let tail = lines[lines.len().saturating_sub(40)..].join("\n");
        format!("--- last lines of the log of {} ---\n{tail}", self.label)
    }

    /// SIGTERM, then waits for the exit; returns whether it exited with status 0.
    pub fn stop_gracefully(&mut self) -> bool {
        let mut child = self.child.take().expect("broker running");
        // SAFETY: signals a child process we own.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "corelog did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn start_again(&mut self) {
        self.launch();
        self.wait_ready();
    }

    pub fn restart_after_kill9(&mut self) {
        self.kill9();
        self.start_again();
    }

    pub fn client(&self) -> Client {
        Client::connect(self.addr)
    }

    /// Whether the broker process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!("--- log of {} ---\n{}", self.label, self.log());
        }
        let _ = std::fs::remove_file(self.log_path());
    }
}

pub struct Client {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            next_correlation_id: 1,
        }
    }

    /// Sends a request without waiting; returns its correlation id.
    pub fn send<R: Request + Encodable + HeaderVersion>(
        &mut self,
        version: i16,
        request: &R,
    ) -> i32 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("corelog-tests")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        request.encode(&mut body, version).unwrap();
        self.send_raw(&body);
        correlation_id
    }

    /// Sends a frame body (size prefix added).
    pub fn send_raw(&mut self, body: &[u8]) {
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.put_slice(body);
        self.stream.write_all(&frame).unwrap();
    }

    /// Reads one response frame; returns its correlation id and the body after the header.
    pub fn receive<R: Request>(&mut self, version: i16) -> (i32, R::Response)
    where
        R::Response: Decodable + HeaderVersion,
    {
        let mut frame = self.read_frame().expect("a response frame");
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let header = ResponseHeader::decode(&mut frame, header_version).unwrap();
        let response = R::Response::decode(&mut frame, version).unwrap();
        assert!(!frame.has_remaining(), "trailing bytes in response");
        (header.correlation_id, response)
    }

    pub fn call<R: Request + Encodable + HeaderVersion>(
        &mut self,
        version: i16,
        request: &R,
    ) -> R::Response
    where
        R::Response: Decodable + HeaderVersion,
    {
        let sent = self.send(version, request);
        let (received, response) = self.receive::<R>(version);
        assert_eq!(sent, received, "correlation id");
        response
    }

    pub fn read_frame(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut body).ok()?;
        Some(body.into())
    }

    /// True when the broker closed this connection (read returns EOF or reset).
    pub fn is_closed_by_broker(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.stream.read(&mut byte), Ok(0) | Err(_))
    }

    pub fn create_topic(&mut self, name: &str, partitions: i32) {
        let request = CreateTopicsRequest::default()
            .with_timeout_ms(20_000)
            .with_topics(vec![create_topics_request::CreatableTopic::default()
                .with_name(TopicName(StrBytes::from_string(name.into())))
                .with_num_partitions(partitions)
                .with_replication_factor(1)]);
        let response = self.call(7, &request);
        assert_eq!(
            response.topics[0].error_code, 0,
            "{:?}",
            response.topics[0].error_message
        );
    }

    /// Produces `records` to one partition; returns (error code, base offset).
    pub fn produce(
        &mut self,
        topic: &str,
        partition: i32,
        acks: i16,
        records: Bytes,
    ) -> (i16, i64) {
        let response = self.call(9, &produce_request(topic, partition, acks, records));
        let p = &response.responses[0].partition_responses[0];
        (p.error_code, p.base_offset)
    }

    /// Fetches one partition from `offset`; returns (error code, high watermark, records).
    pub fn fetch(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        max_wait_ms: i32,
    ) -> (i16, i64, Bytes) {
        let response = self.call(12, &fetch_request(topic, partition, offset, max_wait_ms));
        let p = &response.responses[0].partitions[0];
        (
            p.error_code,
            p.high_watermark,
            p.records.clone().unwrap_or_default(),
        )
    }

    /// ListOffsets for one partition with a Kafka timestamp query (-1 latest, -2 earliest).
    pub fn list_offset(&mut self, topic: &str, partition: i32, timestamp: i64) -> (i16, i64) {
        let request = ListOffsetsRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![list_offsets_request::ListOffsetsTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default()
                        .with_partition_index(partition)
                        .with_timestamp(timestamp),
                ])]);
        let response = self.call(7, &request);
        let p = &response.topics[0].partitions[0];
        (p.error_code, p.offset)
    }
}

/// A consumer's Fetch (v12) of one partition from `offset`, waiting up to `max_wait_ms`
/// for a byte.
pub fn fetch_request(topic: &str, partition: i32, offset: i64, max_wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(max_wait_ms)
        .with_min_bytes(1)
        .with_max_bytes(50 << 20)
        .with_session_epoch(-1)
        .with_topics(vec![fetch_request::FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![fetch_request::FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(10 << 20)])])
}

pub fn produce_request(topic: &str, partition: i32, acks: i16, records: Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(10_000)
        .with_topic_data(vec![produce_request::TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![
                produce_request::PartitionProduceData::default()
                    .with_index(partition)
                    .with_records(Some(records)),
            ])])
}

/// A record batch v2 of `values` (keyed `k<i>`), with a valid CRC.
pub fn batch(values: &[&str]) -> Bytes {
    batch_with(values, Compression::None)
}

pub fn batch_with(values: &[&str], compression: Compression) -> Bytes {
    let mut records: Vec<_> = values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let key = Bytes::from(format!("k{i}"));
            let value = Bytes::copy_from_slice(value.as_bytes());
            // Now: an old timestamp would make time-based retention delete the data.
            corelog_client::records::record(Some(key), Some(value), &[], now_ms() + i as i64)
        })
        .collect();
    corelog_client::records::encode_batch(&mut records, compression, &mut BytesMut::new()).unwrap()
}

/// Batch bytes with the fields the broker assigns (base offset, leader epoch) zeroed, to
/// compare stored batches with sent ones.
pub fn without_assigned_fields(records: &[u8]) -> Vec<u8> {
    let mut out = records.to_vec();
    let mut position = 0;
    while position + 12 <= out.len() {
        let length =
            i32::from_be_bytes(out[position + 8..position + 12].try_into().unwrap()) as usize;
        out[position..position + 8].fill(0);
        out[position + 12..position + 16].fill(0);
        position += 12 + length;
    }
    out
}

/// Decodes fetched record bytes into (offset, value) pairs.
pub fn decode_values(mut records: Bytes) -> Vec<(i64, String)> {
    let mut out = Vec::new();
    while records.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut records).unwrap();
        for record in set.records {
            out.push((
                record.offset,
                String::from_utf8(record.value.unwrap().to_vec()).unwrap(),
            ));
        }
    }
    out
}

impl Client {
    /// Commits offsets for one partition as a consumer outside any generation (or with
    /// the given member and generation); returns the partition's error code.
    pub fn commit_offset(
        &mut self,
        group: &str,
        member: &str,
        generation: i32,
        topic: &str,
        partition: i32,
        offset: i64,
    ) -> i16 {
        let request = OffsetCommitRequest::default()
            .with_group_id(GroupId(StrBytes::from_string(group.into())))
            .with_member_id(StrBytes::from_string(member.into()))
            .with_generation_id_or_member_epoch(generation)
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.into())))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_partition_index(partition)
                            .with_committed_offset(offset)
                            .with_committed_metadata(Some(StrBytes::from_static_str("meta"))),
                    ]),
            ]);
        self.call(8, &request).topics[0].partitions[0].error_code
    }

    /// The committed offset of one partition (-1 when none), through OffsetFetch v8.
    pub fn fetch_offset(&mut self, group: &str, topic: &str, partition: i32) -> i64 {
        let request = OffsetFetchRequest::default().with_groups(vec![
            offset_fetch_request::OffsetFetchRequestGroup::default()
                .with_group_id(GroupId(StrBytes::from_string(group.into())))
                .with_topics(Some(vec![
                    offset_fetch_request::OffsetFetchRequestTopics::default()
                        .with_name(TopicName(StrBytes::from_string(topic.into())))
                        .with_partition_indexes(vec![partition]),
                ])),
        ]);
        let response = self.call(8, &request);
        let group = &response.groups[0];
        assert!(!group.topics.is_empty(), "OffsetFetch answered {group:?}");
        group.topics[0].partitions[0].committed_offset
    }
}

/// A 127.0.0.1 address with a port that was free a moment ago.
/// A free port below the kernel's ephemeral range (32768-60999 by default). A port from
/// that range, once released here, can be taken as the source port of any outgoing
/// connection (another test's client) before the broker binds it.
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    // Offset by pid, so test binaries run one after another do not reuse ports still in
    // TIME_WAIT.
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let _ = NEXT.compare_exchange(
        0,
        std::process::id() % SPAN + 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = FIRST + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap();
        }
    }
    panic!("no free port in {FIRST}..{}", FIRST + SPAN);
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}
