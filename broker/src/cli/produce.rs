//! `corelog produce TOPIC`: lines of stdin become records, sent in batches.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use clap::{Args, ValueEnum};
use corelog_client::kafka_protocol::protocol::StrBytes;
use corelog_client::kafka_protocol::records::{Compression, Record};
use corelog_client::partitioner::partition_for_key;
use corelog_client::records::{record, ProduceOptions, Produced};
use corelog_client::{Client, TopicInfo};
use serde::Serialize;

use super::output::{emit, or_dash, Report, Table};
use super::{key_value, Common};

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    common: Common,
    topic: String,
    /// Partition to produce to (default: by key hash when keyed, else round robin per
    /// batch).
    #[arg(short, long)]
    partition: Option<i32>,
    /// Split each line into key and value at the first occurrence of this.
    #[arg(short = 'k', long, value_name = "SEP")]
    key_separator: Option<String>,
    /// A header added to every record; may be repeated.
    #[arg(short = 'H', long = "header", value_name = "KEY=VALUE", value_parser = key_value)]
    headers: Vec<(String, String)>,
    /// Acknowledgements to wait for: 0, 1 or all.
    #[arg(long, default_value = "all", value_parser = parse_acks)]
    acks: i16,
    /// Batch compression.
    #[arg(short = 'z', long, value_enum, default_value_t = Codec::None)]
    compression: Codec,
    /// Most records in one batch (one produce request).
    #[arg(long, default_value_t = 1000)]
    batch_records: usize,
}

#[derive(Clone, Copy, ValueEnum)]
enum Codec {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl From<Codec> for Compression {
    fn from(codec: Codec) -> Compression {
        match codec {
            Codec::None => Compression::None,
            Codec::Gzip => Compression::Gzip,
            Codec::Snappy => Compression::Snappy,
            Codec::Lz4 => Compression::Lz4,
            Codec::Zstd => Compression::Zstd,
        }
    }
}

fn parse_acks(text: &str) -> Result<i16, String> {
    match text {
        "0" => Ok(0),
        "1" => Ok(1),
        "all" | "-1" => Ok(-1),
        _ => Err(format!("acks is 0, 1 or all, not {text:?}")),
    }
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_records > 0, "--batch-records must be positive");
    let mut client = args.common.connect()?;
    // Producers create unknown topics (when the broker allows), as Kafka's do.
    let topic = client.topic(&args.topic, true)?;
    if let Some(p) = args.partition {
        anyhow::ensure!(
            (0..topic.partitions.len() as i32).contains(&p),
            "topic {} has no partition {p} ({} partitions)",
            topic.name,
            topic.partitions.len()
        );
    }
    let mut producer = Producer::new(&args, topic);
    let mut stdin = std::io::stdin().lock();
    loop {
        let mut line = Vec::new();
        if stdin.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        if line.last() == Some(&b'\n') {
            line.pop();
        }
        producer.add(Bytes::from(line));
        if producer.buffered == args.batch_records {
            producer.flush(&mut client)?;
        }
    }
    producer.flush(&mut client)?;
    emit(args.common.format, &producer.summary)
}

struct Producer {
    topic: TopicInfo,
    fixed_partition: Option<i32>,
    key_separator: Option<Vec<u8>>,
    headers: Vec<(StrBytes, Bytes)>,
    options: ProduceOptions,
    /// Records waiting to be sent, by partition; the vectors are kept to reuse.
    pending: BTreeMap<i32, Vec<Record>>,
    buffered: usize,
    /// Where unkeyed records of the next batch go.
    round_robin: i32,
    encoded: BytesMut,
    summary: Summary,
}

impl Producer {
    fn new(args: &ProduceArgs, topic: TopicInfo) -> Producer {
        Producer {
            summary: Summary {
                topic: topic.name.clone(),
                records: 0,
                partitions: Vec::new(),
            },
            topic,
            fixed_partition: args.partition,
            key_separator: args.key_separator.as_ref().map(|s| s.as_bytes().to_vec()),
            headers: args
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        StrBytes::from_string(k.clone()),
                        Bytes::copy_from_slice(v.as_bytes()),
                    )
                })
                .collect(),
            options: ProduceOptions {
                acks: args.acks,
                compression: args.compression.into(),
                timeout_ms: args.common.request_timeout_ms as i32,
            },
            pending: BTreeMap::new(),
            buffered: 0,
            round_robin: 0,
            encoded: BytesMut::new(),
        }
    }

    /// Buffers one line as a record; key and value share the line's buffer.
    fn add(&mut self, line: Bytes) {
        let (key, value) = match &self.key_separator {
            Some(separator) => split_key(&line, separator),
            None => (None, line),
        };
        let partition = match (self.fixed_partition, &key) {
            (Some(p), _) => p,
            (None, Some(key)) => partition_for_key(key, self.topic.partitions.len() as i32),
            (None, None) => self.round_robin,
        };
        let record = record(key, Some(value), &self.headers, now_ms());
        self.pending.entry(partition).or_default().push(record);
        self.buffered += 1;
    }

    fn flush(&mut self, client: &mut Client) -> anyhow::Result<()> {
        if self.buffered == 0 {
            return Ok(());
        }
        let mut batches: Vec<(i32, Vec<Record>)> = self
            .pending
            .iter_mut()
            .filter(|(_, records)| !records.is_empty())
            .map(|(p, records)| (*p, std::mem::take(records)))
            .collect();
        let produced =
            client.produce(&self.topic, &mut batches, &self.options, &mut self.encoded)?;
        self.summary.add(&batches, &produced);
        for (partition, mut records) in batches {
            records.clear();
            self.pending.insert(partition, records);
        }
        self.buffered = 0;
        self.round_robin = (self.round_robin + 1) % self.topic.partitions.len() as i32;
        Ok(())
    }
}

/// Key and value of a line split at the first `separator`; a line without it is all
/// value, with no key.
fn split_key(line: &Bytes, separator: &[u8]) -> (Option<Bytes>, Bytes) {
    let at = line
        .windows(separator.len())
        .position(|window| window == separator);
    match at {
        Some(at) => (Some(line.slice(..at)), line.slice(at + separator.len()..)),
        None => (None, line.clone()),
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[derive(Serialize)]
struct Summary {
    topic: String,
    records: usize,
    partitions: Vec<PartitionSummary>,
}

#[derive(Serialize)]
struct PartitionSummary {
    partition: i32,
    records: usize,
    /// Unknown with acks=0.
    first_offset: Option<i64>,
    last_offset: Option<i64>,
}

impl Summary {
    fn add(&mut self, batches: &[(i32, Vec<Record>)], produced: &Produced) {
        for (partition, records) in batches {
            let base = produced
                .iter()
                .find(|(p, _)| p == partition)
                .and_then(|(_, base)| *base);
            let last = base.map(|b| b + records.len() as i64 - 1);
            self.records += records.len();
            match self
                .partitions
                .iter_mut()
                .find(|p| p.partition == *partition)
            {
                Some(summary) => {
                    summary.records += records.len();
                    summary.last_offset = last;
                }
                None => self.partitions.push(PartitionSummary {
                    partition: *partition,
                    records: records.len(),
                    first_offset: base,
                    last_offset: last,
                }),
            }
        }
        self.partitions.sort_by_key(|p| p.partition);
    }
}

impl Report for Summary {
    fn human(&self) -> String {
        let mut table = Table::new(&["PARTITION", "RECORDS", "FIRST-OFFSET", "LAST-OFFSET"]);
        for p in &self.partitions {
            table.row(vec![
                p.partition.to_string(),
                p.records.to_string(),
                or_dash(p.first_offset),
                or_dash(p.last_offset),
            ]);
        }
        format!(
            "produced {} records to {}\n{}",
            self.records,
            self.topic,
            table.render()
        )
    }
}
