//! Scenario files (TOML under `bench-suite/scenarios/`, built into the binary) and the
//! knobs they set. Every field has a default, so a file names only what it changes, and CLI
//! flags override a file field by field.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::client::batch::Compression;

/// The built-in scenarios, by name.
pub const BUILT_IN: &[(&str, &str)] = &[
    ("smoke", include_str!("../../scenarios/smoke.toml")),
    (
        "omb-100b-max",
        include_str!("../../scenarios/omb-100b-max.toml"),
    ),
    (
        "omb-1kb-max",
        include_str!("../../scenarios/omb-1kb-max.toml"),
    ),
    (
        "omb-100b-fixed",
        include_str!("../../scenarios/omb-100b-fixed.toml"),
    ),
    (
        "omb-1kb-fixed",
        include_str!("../../scenarios/omb-1kb-fixed.toml"),
    ),
    (
        "latency-half-max",
        include_str!("../../scenarios/latency-half-max.toml"),
    ),
    (
        "acks-all-fsync",
        include_str!("../../scenarios/acks-all-fsync.toml"),
    ),
    (
        "partitions-10k",
        include_str!("../../scenarios/partitions-10k.toml"),
    ),
    (
        "connections-1k",
        include_str!("../../scenarios/connections-1k.toml"),
    ),
    ("tail-e2e", include_str!("../../scenarios/tail-e2e.toml")),
    (
        "consume-100b-max",
        include_str!("../../scenarios/consume-100b-max.toml"),
    ),
    (
        "consume-100b-group",
        include_str!("../../scenarios/consume-100b-group.toml"),
    ),
    (
        "consume-100b-group-no-backoff",
        include_str!("../../scenarios/consume-100b-group-no-backoff.toml"),
    ),
];

/// One workload.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// Topics are named `<topic_prefix>-<i>`; empty (the default) means
    /// `<name>-<partitions>p`, so scenarios with different partition counts never collide.
    pub topic_prefix: String,
    pub topics: u32,
    /// Partitions per topic.
    pub partitions: u32,
    /// Producer threads (each pinned to a core).
    pub producers: u32,
    /// Connections each producer thread opens to each broker; partitions are spread over them.
    pub connections_per_producer: u32,
    /// Consumer threads; without a `group_protocol` partitions are assigned to them
    /// manually (round robin).
    pub consumers: u32,
    /// How consumers share the partitions: `none` (manual assignment), `consumer` (KIP-848:
    /// they join `consumer_group` with ConsumerGroupHeartbeat and read what the broker
    /// assigns) or `classic` (JoinGroup/SyncGroup, `--driver rdkafka` only).
    pub group_protocol: GroupProtocol,
    /// The consumer group's id when `group_protocol` is not `none`.
    pub consumer_group: String,
    /// Group consumers commit their offsets at every heartbeat and when they stop.
    pub commit_offsets: bool,
    pub message_size: MessageSize,
    pub keys: KeyDistribution,
    /// Distinct keys when `keys` is not `none`.
    pub key_space: u64,
    /// Headers per record (8-byte values).
    pub headers: u32,
    pub acks: Acks,
    /// A partition's batch is sent once it reaches this many bytes...
    pub batch_size: usize,
    /// ...or once its first record has waited this long.
    pub linger_ms: f64,
    pub compression: Compression,
    /// Messages per second over all producers: `max`, a number, or `NN%` of a measured max.
    pub rate: Rate,
    /// Length of a fractional-rate probe run at max rate, before the run itself.
    pub probe_secs: u64,
    pub duration_secs: u64,
    /// Leading seconds left out of the summary (still in the time series).
    pub warmup_secs: u64,
    /// Produce requests in flight per connection.
    pub max_in_flight: usize,
    /// Bytes of unsent batches a producer thread may hold before it stops generating.
    pub buffer_bytes: usize,
    pub fetch_max_wait_ms: i32,
    pub fetch_max_bytes: i32,
    pub partition_max_bytes: i32,
    /// After the producers stop, how long consumers may take to catch up.
    pub drain_secs: u64,
    /// Consume-only when non-zero: the producers first fill the topics at max rate for this
    /// long, then the consumers alone read them from where the fill started for
    /// `duration_secs`, rewinding whenever they reach the filled end.
    pub prefill_secs: u64,
    /// Consumers fetch through KIP-227 incremental fetch sessions.
    pub fetch_sessions: bool,
    /// librdkafka settings for every client of a `--driver rdkafka` run, applied over the
    /// driver's own (e.g. `fetch.queue.backoff.ms = "0"`).
    pub rdkafka_config: BTreeMap<String, String>,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "custom".into(),
            description: String::new(),
            topic_prefix: String::new(),
            topics: 1,
            partitions: 16,
            producers: 1,
            connections_per_producer: 1,
            consumers: 1,
            group_protocol: GroupProtocol::None,
            consumer_group: "corelog-bench".into(),
            commit_offsets: false,
            message_size: MessageSize::Fixed(100),
            keys: KeyDistribution::None,
            key_space: 10_000,
            headers: 0,
            acks: Acks::Leader,
            batch_size: 128 * 1024,
            linger_ms: 1.0,
            compression: Compression::None,
            rate: Rate::Max,
            probe_secs: 5,
            duration_secs: 15,
            warmup_secs: 3,
            max_in_flight: 5,
            buffer_bytes: 32 << 20,
            fetch_max_wait_ms: 100,
            fetch_max_bytes: 50 << 20,
            partition_max_bytes: 1 << 20,
            drain_secs: 5,
            prefill_secs: 0,
            fetch_sessions: true,
            rdkafka_config: BTreeMap::new(),
        }
    }
}

impl Scenario {
    /// A built-in scenario by name, or a TOML file by path.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((_, text)) = BUILT_IN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::parse(text).with_context(|| format!("built-in scenario {name_or_path}"));
        }
        let text = std::fs::read_to_string(name_or_path).with_context(|| {
            let names: Vec<_> = BUILT_IN.iter().map(|(n, _)| *n).collect();
            format!("{name_or_path:?} is neither a file nor a built-in scenario ({names:?})")
        })?;
        Self::parse(&text).with_context(|| format!("scenario file {name_or_path}"))
    }

    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> Result<Self> {
        let s: Scenario = toml::from_str(text)?;
        s.validate()?;
        Ok(s)
    }

    /// Rejects settings the generator cannot run.
    pub fn validate(&self) -> Result<()> {
        if self.topics == 0 || self.partitions == 0 {
            bail!("topics and partitions must be at least 1");
        }
        if self.producers == 0 && self.consumers == 0 {
            bail!("nothing to run: no producers and no consumers");
        }
        if self.prefill_secs > 0 && (self.producers == 0 || self.consumers == 0) {
            bail!("a consume-only run (prefill_secs) needs producers to fill and consumers");
        }
        if self.group_protocol != GroupProtocol::None && self.consumer_group.is_empty() {
            bail!("a group_protocol needs a consumer_group");
        }
        if self.connections_per_producer == 0 || self.max_in_flight == 0 {
            bail!("connections_per_producer and max_in_flight must be at least 1");
        }
        if self.warmup_secs >= self.duration_secs {
            bail!("warmup_secs must be shorter than duration_secs");
        }
        if self.keys != KeyDistribution::None && self.key_space == 0 {
            bail!("key_space must be at least 1");
        }
        if self.headers > 16 {
            bail!("at most 16 headers per record");
        }
        let (min, max) = self.message_size.bounds();
        if min > max || max > 1 << 20 {
            bail!("message_size must be a range within 0..=1 MiB");
        }
        Ok(())
    }

    /// Topic names.
    pub fn topic_names(&self) -> Vec<String> {
        let prefix = if self.topic_prefix.is_empty() {
            format!("{}-{}p", self.name, self.partitions)
        } else {
            self.topic_prefix.clone()
        };
        (0..self.topics).map(|i| format!("{prefix}-{i}")).collect()
    }
}

/// Value size of each message. Values of 8 bytes or more carry the send stamp that
/// end-to-end latency is measured from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MessageSize {
    Fixed(usize),
    Uniform { min: usize, max: usize },
}

impl MessageSize {
    pub fn bounds(self) -> (usize, usize) {
        match self {
            MessageSize::Fixed(n) => (n, n),
            MessageSize::Uniform { min, max } => (min, max),
        }
    }
}

impl FromStr for MessageSize {
    type Err = anyhow::Error;
    /// `100` or `64..1024`.
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.split_once("..") {
            Some((a, b)) => MessageSize::Uniform {
                min: a.trim().parse()?,
                max: b.trim().parse()?,
            },
            None => MessageSize::Fixed(s.trim().parse()?),
        })
    }
}

impl fmt::Display for MessageSize {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            MessageSize::Fixed(n) => write!(f, "{n} B"),
            MessageSize::Uniform { min, max } => write!(f, "{min}..{max} B"),
        }
    }
}

/// How keys are chosen (and so partitions, by key hash). `none` sends null keys and fills
/// one partition's batch at a time (the sticky partitioner of current Kafka clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDistribution {
    None,
    Uniform,
    /// Zipf-like with exponent 1: key k is chosen with probability about 1/(k+1).
    Zipf,
}

impl FromStr for KeyDistribution {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => KeyDistribution::None,
            "uniform" => KeyDistribution::Uniform,
            "zipf" => KeyDistribution::Zipf,
            _ => bail!("unknown key distribution {s:?} (none, uniform, zipf)"),
        })
    }
}

/// How consumers divide the partitions among themselves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// No group: partitions are assigned manually.
    None,
    /// The classic protocol (JoinGroup/SyncGroup, client-side assignment), librdkafka's
    /// default.
    Classic,
    /// KIP-848 (ConsumerGroupHeartbeat, broker-side assignment).
    Consumer,
}

/// Produce acknowledgement level.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "AcksRepr", into = "AcksRepr")]
pub enum Acks {
    None,
    Leader,
    All,
}

impl Acks {
    /// The `acks` field of a Produce request.
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum AcksRepr {
    Num(i64),
    Str(String),
}

impl TryFrom<AcksRepr> for Acks {
    type Error = anyhow::Error;
    fn try_from(r: AcksRepr) -> Result<Self> {
        match r {
            AcksRepr::Num(n) => n.to_string().parse(),
            AcksRepr::Str(s) => s.parse(),
        }
    }
}

impl From<Acks> for AcksRepr {
    fn from(a: Acks) -> Self {
        AcksRepr::Str(a.to_string())
    }
}

impl FromStr for Acks {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "0" => Acks::None,
            "1" => Acks::Leader,
            "all" | "-1" => Acks::All,
            _ => bail!("unknown acks {s:?} (0, 1, all)"),
        })
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

/// Target message rate over all producers.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RateRepr", into = "RateRepr")]
pub enum Rate {
    /// As fast as the broker acknowledges (closed loop: in-flight limits pace the producers).
    Max,
    /// Open loop at this many messages per second.
    Fixed(f64),
    /// Open loop at this fraction of the rate a max-rate probe reaches first.
    FractionOfMax(f64),
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum RateRepr {
    Num(f64),
    Str(String),
}

impl TryFrom<RateRepr> for Rate {
    type Error = anyhow::Error;
    fn try_from(r: RateRepr) -> Result<Self> {
        match r {
            RateRepr::Num(n) if n > 0.0 => Ok(Rate::Fixed(n)),
            RateRepr::Num(_) => Ok(Rate::Max),
            RateRepr::Str(s) => s.parse(),
        }
    }
}

impl From<Rate> for RateRepr {
    fn from(r: Rate) -> Self {
        match r {
            Rate::Fixed(n) => RateRepr::Num(n),
            other => RateRepr::Str(other.to_string()),
        }
    }
}

impl FromStr for Rate {
    type Err = anyhow::Error;
    /// `max`, `250000`, `250k`, `1.5m`, or `50%`.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "max" || s == "0" {
            return Ok(Rate::Max);
        }
        if let Some(p) = s.strip_suffix('%') {
            let p: f64 = p.parse().context("rate percentage")?;
            if !(0.0..=100.0).contains(&p) || p == 0.0 {
                bail!("rate percentage must be in (0, 100]");
            }
            return Ok(Rate::FractionOfMax(p / 100.0));
        }
        let (num, mult) = match s.as_bytes().last() {
            Some(b'k' | b'K') => (&s[..s.len() - 1], 1e3),
            Some(b'm' | b'M') => (&s[..s.len() - 1], 1e6),
            _ => (s, 1.0),
        };
        let n: f64 = num.parse().with_context(|| format!("rate {s:?}"))?;
        if n <= 0.0 {
            bail!("rate must be positive (or `max`)");
        }
        Ok(Rate::Fixed(n * mult))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::Fixed(n) => write!(f, "{n}"),
            Rate::FractionOfMax(x) => write!(f, "{}%", x * 100.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_built_in_scenario_parses() {
        for (name, _) in BUILT_IN {
            let s = Scenario::load(name).unwrap();
            assert_eq!(
                &s.name, name,
                "the file's name field matches its registry name"
            );
            assert!(!s.description.is_empty(), "{name} has a description");
        }
    }

    #[test]
    fn fields_in_all_their_forms() {
        let s = Scenario::parse(
            r#"
            name = "t"
            message_size = { min = 64, max = 1024 }
            acks = "all"
            rate = "50%"
            keys = "zipf"
            compression = "zstd"
            group_protocol = "consumer"
            consumer_group = "g"
            rdkafka_config = { "fetch.queue.backoff.ms" = "0" }
            "#,
        )
        .unwrap();
        assert_eq!(s.message_size, MessageSize::Uniform { min: 64, max: 1024 });
        assert_eq!(s.acks, Acks::All);
        assert_eq!(s.rate, Rate::FractionOfMax(0.5));
        assert_eq!(s.keys, KeyDistribution::Zipf);
        assert_eq!(s.compression, Compression::Zstd);
        assert_eq!(s.group_protocol, GroupProtocol::Consumer);
        assert_eq!(s.consumer_group, "g");
        assert_eq!(s.rdkafka_config["fetch.queue.backoff.ms"], "0");
        assert_eq!(s.partitions, Scenario::default().partitions);
        assert_eq!(s.topic_names(), ["t-16p-0"]);

        let s = Scenario::parse("acks = 0\nrate = 20000\nmessage_size = 1000").unwrap();
        assert_eq!((s.acks, s.rate), (Acks::None, Rate::Fixed(20000.0)));
        assert_eq!(s.message_size, MessageSize::Fixed(1000));
        assert_eq!(Scenario::parse("rate = 0").unwrap().rate, Rate::Max);
    }

    #[test]
    fn mistakes_are_refused() {
        assert!(
            Scenario::parse("partitons = 3").is_err(),
            "unknown keys are errors"
        );
        assert!(Scenario::parse("acks = 2").is_err());
        assert!(Scenario::parse("group_protocol = \"consumer\"\nconsumer_group = \"\"").is_err());
        assert!(Scenario::parse("rate = \"150%\"").is_err());
        assert!(Scenario::parse("duration_secs = 3\nwarmup_secs = 3").is_err());
        assert!(Scenario::parse("message_size = { min = 10, max = 5 }").is_err());
    }

    #[test]
    fn cli_forms() {
        assert_eq!("1.5m".parse::<Rate>().unwrap(), Rate::Fixed(1.5e6));
        assert_eq!("250k".parse::<Rate>().unwrap(), Rate::Fixed(250e3));
        assert_eq!("max".parse::<Rate>().unwrap(), Rate::Max);
        assert_eq!(
            "64..1024".parse::<MessageSize>().unwrap(),
            MessageSize::Uniform { min: 64, max: 1024 }
        );
    }

    #[test]
    fn round_trips_through_toml() {
        let s = Scenario::load("latency-half-max").unwrap();
        let text = toml::to_string(&s).unwrap();
        assert_eq!(Scenario::parse(&text).unwrap(), s);
    }
}
