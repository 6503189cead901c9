//! `corelog consume TOPIC`: prints records, from chosen partitions or as a member of a
//! KIP-848 consumer group (the broker assigns the partitions), and stops at the end.

use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::time::{Duration, Instant};

use clap::Args;
use corelog_client::admin::{EARLIEST, LATEST};
use corelog_client::groups::{Assignment, Heartbeat, Member, LEAVE_EPOCH};
use corelog_client::kafka_protocol::records::Record;
use corelog_client::records::FetchPosition;
use corelog_client::{Client, TopicInfo};
use serde::Serialize;
use uuid::Uuid;

use super::output::Format;
use super::Common;

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    common: Common,
    topic: String,
    /// A partition to read; may be repeated (default: all).
    #[arg(short, long = "partition", conflicts_with = "group")]
    partitions: Vec<i32>,
    /// Where to start: beginning, end, an offset, or @TIMESTAMP_MS. With --group, for
    /// partitions without a committed offset.
    #[arg(short, long, default_value = "beginning", value_parser = Start::parse)]
    offset: Start,
    /// Stop after this many records.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Consume as a member of this consumer group, committing offsets.
    #[arg(long)]
    group: Option<String>,
    /// How each record prints: %t topic, %p partition, %o offset, %k key, %v value,
    /// %h headers, %T timestamp, %% a percent sign; \n, \t, \r, \\ escapes.
    #[arg(short = 'f', long = "message-format", default_value = "%v\\n")]
    message_format: String,
    /// Stop after this long even when not caught up (or, with --group, not assigned).
    #[arg(long, default_value_t = 10_000, value_name = "MS")]
    timeout_ms: u64,
}

/// Where reading starts.
#[derive(Clone, Copy, Debug)]
pub enum Start {
    Beginning,
    End,
    Offset(i64),
    Timestamp(i64),
}

impl Start {
    fn parse(text: &str) -> Result<Start, String> {
        let number = |n: &str| n.parse::<i64>().map_err(|e| format!("{text:?}: {e}"));
        match text {
            "beginning" | "earliest" => Ok(Start::Beginning),
            "end" | "latest" => Ok(Start::End),
            _ => match text.strip_prefix('@') {
                Some(ms) => Ok(Start::Timestamp(number(ms)?)),
                None => Ok(Start::Offset(number(text)?)),
            },
        }
    }
}

/// The offsets `start` means for `partitions` of `topic`.
pub fn start_offsets(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    start: Start,
) -> anyhow::Result<Vec<i64>> {
    let timestamp = match start {
        Start::Offset(offset) => return Ok(vec![offset; partitions.len()]),
        Start::Beginning => EARLIEST,
        Start::End => LATEST,
        Start::Timestamp(ms) => ms,
    };
    let ask = |timestamp| -> Vec<(String, i32, i64)> {
        partitions
            .iter()
            .map(|&p| (topic.to_string(), p, timestamp))
            .collect()
    };
    let mut offsets: Vec<i64> = client
        .list_offsets(&ask(timestamp))?
        .into_iter()
        .map(|answer| answer.offset)
        .collect();
    // No record at or after the timestamp: start at the end.
    if offsets.contains(&-1) {
        let ends = client.list_offsets(&ask(LATEST))?;
        for (offset, end) in offsets.iter_mut().zip(ends) {
            if *offset == -1 {
                *offset = end.offset;
            }
        }
    }
    Ok(offsets)
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let mut client = args.common.connect()?;
    let topic = client.topic(&args.topic, false)?;
    let sink = Sink::new(args.common.format, &args.message_format)?;
    let mut reader = Reader::new(topic, sink, args.count);
    let deadline = Instant::now() + Duration::from_millis(args.timeout_ms);
    match &args.group {
        None => {
            let partitions = if args.partitions.is_empty() {
                reader
                    .topic
                    .partitions
                    .iter()
                    .map(|p| p.partition)
                    .collect()
            } else {
                args.partitions.clone()
            };
            let starts = start_offsets(&mut client, &reader.topic.name, &partitions, args.offset)?;
            reader.positions = partitions
                .into_iter()
                .zip(starts.into_iter().map(Position::at))
                .collect();
            while !reader.finished() && Instant::now() < deadline {
                reader.fetch_round(&mut client)?;
            }
        }
        Some(group) => {
            let mut member = GroupMember::new(group, &reader.topic.name);
            let consumed = member.consume(&mut client, &mut reader, args.offset, deadline);
            let left = member.leave(&mut client);
            consumed.and(left)?;
        }
    }
    reader.sink.finish(&mut reader.out)?;
    reader.out.flush()?;
    Ok(())
}

/// A partition being read.
struct Position {
    /// The next offset to read.
    offset: i64,
    /// The partition's end as the latest fetch saw it; `None` before the first.
    high_watermark: Option<i64>,
}

impl Position {
    fn at(offset: i64) -> Position {
        Position {
            offset,
            high_watermark: None,
        }
    }

    fn caught_up(&self) -> bool {
        self.high_watermark.is_some_and(|end| self.offset >= end)
    }
}

/// Fetches partitions of one topic and prints their records.
struct Reader {
    topic: TopicInfo,
    positions: BTreeMap<i32, Position>,
    sink: Sink,
    out: BufWriter<std::io::StdoutLock<'static>>,
    /// Records still to print, when a count was given.
    remaining: Option<u64>,
}

/// How long a fetch waits for data when there is none yet.
const FETCH_WAIT_MS: i32 = 200;

impl Reader {
    fn new(topic: TopicInfo, sink: Sink, count: Option<u64>) -> Reader {
        Reader {
            topic,
            positions: BTreeMap::new(),
            sink,
            out: BufWriter::new(std::io::stdout().lock()),
            remaining: count,
        }
    }

    /// Done: the count is reached, or every partition read is at its end.
    fn finished(&self) -> bool {
        self.remaining == Some(0) || self.positions.values().all(Position::caught_up)
    }

    /// One fetch from each leader of the partitions read; prints what came.
    fn fetch_round(&mut self, client: &mut Client) -> anyhow::Result<()> {
        let mut by_leader: BTreeMap<i32, Vec<FetchPosition>> = BTreeMap::new();
        for (&partition, position) in &self.positions {
            by_leader
                .entry(client.leader(&self.topic.name, partition)?)
                .or_default()
                .push(FetchPosition {
                    topic: &self.topic,
                    partition,
                    offset: position.offset,
                });
        }
        let mut fetched = Vec::new();
        for (leader, positions) in by_leader {
            fetched.extend(client.fetch(leader, &positions, FETCH_WAIT_MS)?);
        }
        for partition in fetched {
            self.print(partition.partition, &partition.records)?;
            if let Some(position) = self.positions.get_mut(&partition.partition) {
                position.high_watermark = Some(partition.high_watermark);
            }
        }
        Ok(())
    }

    /// Prints records of a partition up to the count, advancing its position past each.
    fn print(&mut self, partition: i32, records: &[Record]) -> anyhow::Result<()> {
        for record in records {
            if self.remaining == Some(0) {
                break;
            }
            self.sink
                .write(&mut self.out, &self.topic.name, partition, record)?;
            if let Some(position) = self.positions.get_mut(&partition) {
                position.offset = record.offset + 1;
            }
            if let Some(remaining) = &mut self.remaining {
                *remaining -= 1;
            }
        }
        Ok(())
    }

    /// The next offsets to read, as a commit states them.
    fn commit_offsets(&self) -> Vec<(String, i32, i64)> {
        self.positions
            .iter()
            .map(|(&p, position)| (self.topic.name.clone(), p, position.offset))
            .collect()
    }
}

/// Membership of one consumer: heartbeats, the assignment the broker sends, commits.
struct GroupMember {
    group: String,
    member: Member,
    subscription: [String; 1],
    heartbeat_interval: Duration,
    next_heartbeat: Instant,
    next_commit: Instant,
    /// Whether the broker has sent an assignment yet.
    assigned: bool,
    /// The assignment to acknowledge in the next heartbeat.
    unacknowledged: Option<Assignment>,
}

/// How long the broker may wait for this member to give up partitions.
const REBALANCE_TIMEOUT_MS: i32 = 30_000;
/// Commit at least this often while consuming (as Kafka's auto-commit does).
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);
/// Pause between rounds while nothing is assigned.
const UNASSIGNED_PAUSE: Duration = Duration::from_millis(100);

impl GroupMember {
    /// A member to be of `group`, subscribing to `topic`, with a fresh member id.
    fn new(group: &str, topic: &str) -> GroupMember {
        let now = Instant::now();
        GroupMember {
            group: group.to_string(),
            member: Member {
                member_id: Uuid::new_v4().to_string(),
                member_epoch: 0,
            },
            subscription: [topic.to_string()],
            heartbeat_interval: Duration::ZERO,
            next_heartbeat: now,
            next_commit: now + COMMIT_INTERVAL,
            assigned: false,
            unacknowledged: None,
        }
    }

    fn heartbeat(
        &mut self,
        client: &mut Client,
        joining: bool,
    ) -> anyhow::Result<Option<Assignment>> {
        let owned = self.unacknowledged.take();
        let heartbeat = Heartbeat {
            subscription: joining.then_some(&self.subscription[..]),
            owned: owned.as_deref(),
            rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        };
        let answer = client.heartbeat(&self.group, &self.member, &heartbeat)?;
        self.member.member_id = answer.member_id;
        self.member.member_epoch = answer.member_epoch;
        self.heartbeat_interval = Duration::from_millis(answer.heartbeat_interval_ms.max(0) as u64);
        self.next_heartbeat = Instant::now() + self.heartbeat_interval;
        Ok(answer.assignment)
    }

    /// Joins (member epoch 0), then reads assigned partitions until done or `deadline`,
    /// heartbeating and committing.
    fn consume(
        &mut self,
        client: &mut Client,
        reader: &mut Reader,
        reset: Start,
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let mut assignment = self.heartbeat(client, true)?;
        loop {
            if let Some(assigned) = assignment.take() {
                self.apply(client, reader, assigned, reset)?;
            }
            // Caught up counts only once assigned: before, there is nothing to catch up on.
            let done = (self.assigned && reader.finished()) || reader.remaining == Some(0);
            if done || Instant::now() >= deadline {
                break;
            }
            if reader.positions.is_empty() {
                std::thread::sleep(UNASSIGNED_PAUSE);
            } else {
                reader.fetch_round(client)?;
            }
            if self.unacknowledged.is_some()
                || Instant::now() >= self.next_heartbeat
                || !self.assigned
            {
                assignment = self.heartbeat(client, false)?;
            }
            if Instant::now() >= self.next_commit {
                self.commit(client, reader)?;
            }
        }
        self.commit(client, reader)
    }

    /// Takes on a new assignment: commits and drops partitions no longer assigned, starts
    /// new ones at their committed offsets (or `reset`), and acknowledges it.
    fn apply(
        &mut self,
        client: &mut Client,
        reader: &mut Reader,
        assignment: Assignment,
        reset: Start,
    ) -> anyhow::Result<()> {
        let topic_id = reader.topic.topic_id;
        let mine: Vec<i32> = assignment
            .iter()
            .filter(|(id, _)| *id == topic_id)
            .flat_map(|(_, partitions)| partitions.iter().copied())
            .collect();
        if reader.positions.keys().any(|p| !mine.contains(p)) {
            self.commit(client, reader)?;
            reader.positions.retain(|p, _| mine.contains(p));
        }
        let added: Vec<i32> = mine
            .into_iter()
            .filter(|p| !reader.positions.contains_key(p))
            .collect();
        for (partition, offset) in self.starts(client, &reader.topic.name, &added, reset)? {
            reader.positions.insert(partition, Position::at(offset));
        }
        self.assigned = true;
        self.unacknowledged = Some(assignment);
        Ok(())
    }

    /// Where newly assigned partitions start: their committed offsets, else `reset`.
    fn starts(
        &mut self,
        client: &mut Client,
        topic: &str,
        partitions: &[i32],
        reset: Start,
    ) -> anyhow::Result<Vec<(i32, i64)>> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let asked = [(topic.to_string(), partitions.to_vec())];
        let committed = client.committed_offsets(&self.group, Some(&asked), Some(&self.member))?;
        let uncommitted: Vec<i32> = partitions
            .iter()
            .copied()
            .filter(|p| !committed.iter().any(|c| c.partition == *p))
            .collect();
        let resets = start_offsets(client, topic, &uncommitted, reset)?;
        Ok(committed
            .into_iter()
            .map(|c| (c.partition, c.offset))
            .chain(uncommitted.into_iter().zip(resets))
            .collect())
    }

    fn commit(&mut self, client: &mut Client, reader: &Reader) -> anyhow::Result<()> {
        let offsets = reader.commit_offsets();
        if !offsets.is_empty() {
            client.commit_offsets(&self.group, Some(&self.member), &offsets)?;
        }
        self.next_commit = Instant::now() + COMMIT_INTERVAL;
        Ok(())
    }

    /// Leaves the group (member epoch -1), so its partitions are reassigned at once.
    fn leave(&mut self, client: &mut Client) -> anyhow::Result<()> {
        self.member.member_epoch = LEAVE_EPOCH;
        self.unacknowledged = None;
        let heartbeat = Heartbeat {
            subscription: None,
            owned: None,
            rebalance_timeout_ms: REBALANCE_TIMEOUT_MS,
        };
        client.heartbeat(&self.group, &self.member, &heartbeat)?;
        Ok(())
    }
}

/// Where printed records go: through the message format, or as one JSON array.
enum Sink {
    Formatted(Vec<Piece>),
    Json { started: bool },
}

/// A part of a message format.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Headers,
    Timestamp,
}

impl Sink {
    fn new(format: Format, message_format: &str) -> anyhow::Result<Sink> {
        Ok(match format {
            Format::Table => Sink::Formatted(compile(message_format)?),
            Format::Json => Sink::Json { started: false },
        })
    }

    fn write(
        &mut self,
        out: &mut impl Write,
        topic: &str,
        partition: i32,
        record: &Record,
    ) -> anyhow::Result<()> {
        match self {
            Sink::Formatted(pieces) => write_formatted(out, pieces, topic, partition, record)?,
            Sink::Json { started } => {
                out.write_all(if *started { b",\n" } else { b"[\n" })?;
                *started = true;
                serde_json::to_writer(&mut *out, &JsonRecord::new(topic, partition, record))?;
            }
        }
        Ok(())
    }

    fn finish(&mut self, out: &mut impl Write) -> anyhow::Result<()> {
        match self {
            Sink::Formatted(_) => {}
            Sink::Json { started: true } => out.write_all(b"\n]\n")?,
            Sink::Json { started: false } => out.write_all(b"[]\n")?,
        }
        Ok(())
    }
}

/// Parses a kcat-style message format once, so printing a record only copies bytes.
fn compile(format: &str) -> anyhow::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('v') => Piece::Value,
                Some('h') => Piece::Headers,
                Some('T') => Piece::Timestamp,
                Some('%') => {
                    text.push(b'%');
                    continue;
                }
                other => anyhow::bail!(
                    "unknown directive %{} in message format {format:?}",
                    other.map(String::from).unwrap_or_default()
                ),
            },
            '\\' => {
                text.push(match chars.next() {
                    Some('n') => b'\n',
                    Some('t') => b'\t',
                    Some('r') => b'\r',
                    Some('\\') => b'\\',
                    other => anyhow::bail!(
                        "unknown escape \\{} in message format {format:?}",
                        other.map(String::from).unwrap_or_default()
                    ),
                });
                continue;
            }
            c => {
                text.extend_from_slice(c.encode_utf8(&mut [0u8; 4]).as_bytes());
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

fn write_formatted(
    out: &mut impl Write,
    pieces: &[Piece],
    topic: &str,
    partition: i32,
    record: &Record,
) -> std::io::Result<()> {
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.write_all(text)?,
            Piece::Topic => out.write_all(topic.as_bytes())?,
            Piece::Partition => write!(out, "{partition}")?,
            Piece::Offset => write!(out, "{}", record.offset)?,
            Piece::Key => out.write_all(record.key.as_deref().unwrap_or_default())?,
            Piece::Value => out.write_all(record.value.as_deref().unwrap_or_default())?,
            Piece::Timestamp => write!(out, "{}", record.timestamp)?,
            Piece::Headers => {
                for (i, (key, value)) in record.headers.iter().enumerate() {
                    if i > 0 {
                        out.write_all(b",")?;
                    }
                    out.write_all(key.as_bytes())?;
                    out.write_all(b"=")?;
                    out.write_all(value.as_deref().unwrap_or_default())?;
                }
            }
        }
    }
    Ok(())
}

/// A record in JSON; bytes that are not UTF-8 show as replacement characters.
#[derive(Serialize)]
struct JsonRecord {
    topic: String,
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Option<String>,
    value: Option<String>,
    headers: BTreeMap<String, Option<String>>,
}

impl JsonRecord {
    fn new(topic: &str, partition: i32, record: &Record) -> JsonRecord {
        let text = |bytes: &Option<bytes::Bytes>| {
            bytes
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        JsonRecord {
            topic: topic.to_string(),
            partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: text(&record.key),
            value: text(&record.value),
            headers: record
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), text(v)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_compile_to_pieces() {
        assert_eq!(
            compile("%t/%p@%o: %k=%v\\t%h %T%%\\n").unwrap(),
            [
                Piece::Topic,
                Piece::Text(b"/".to_vec()),
                Piece::Partition,
                Piece::Text(b"@".to_vec()),
                Piece::Offset,
                Piece::Text(b": ".to_vec()),
                Piece::Key,
                Piece::Text(b"=".to_vec()),
                Piece::Value,
                Piece::Text(b"\t".to_vec()),
                Piece::Headers,
                Piece::Text(b" ".to_vec()),
                Piece::Timestamp,
                Piece::Text(b"%\n".to_vec()),
            ]
        );
        assert!(compile("%x").is_err());
        assert!(compile("\\q").is_err());
    }

    #[test]
    fn starts_parse() {
        assert!(matches!(Start::parse("beginning"), Ok(Start::Beginning)));
        assert!(matches!(Start::parse("end"), Ok(Start::End)));
        assert!(matches!(Start::parse("42"), Ok(Start::Offset(42))));
        assert!(matches!(
            Start::parse("@1700000000000"),
            Ok(Start::Timestamp(1_700_000_000_000))
        ));
        assert!(Start::parse("soon").is_err());
    }
}
