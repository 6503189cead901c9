//! Broker settings, named as in Apache Kafka where Kafka has the setting, read from a TOML
//! file (`log.segment.bytes = 1048576` or `[log] segment.bytes = ...` both work) and from
//! `--set key=value` overrides. An unknown key or a bad value is an error naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context};

use crate::log::LogConfig;

/// The one `replica.selector.class` served besides the default (leaders only).
const RACK_AWARE_REPLICA_SELECTOR: &str =
    "org.apache.kafka.common.replica.RackAwareReplicaSelector";

/// Every broker setting with its value after defaults, file and overrides.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub listen: SocketAddr,
    /// Host and port given to clients in Metadata (`advertised.listeners`).
    pub advertised_host: String,
    pub advertised_port: u16,
    pub data_dir: PathBuf,
    pub node_id: i32,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub auto_create_topics: bool,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub log: LogConfig,
    pub log_flush_interval_ms: u64,
    pub retention_check_interval_ms: u64,
    pub max_connections: usize,
    pub groups: GroupSettings,
    /// Fetched record ranges at least this long go to the socket with sendfile, shorter
    /// ones are copied; `None` (setting -1) copies everything (for A/B runs).
    pub fetch_zero_copy_min_bytes: Option<usize>,
    /// KIP-227 fetch sessions each shard keeps (0: none).
    pub fetch_session_cache_slots: usize,
    /// Where the metrics/health HTTP endpoint listens, if anywhere.
    pub metrics_listen: Option<SocketAddr>,
    pub cluster: ClusterSettings,
}

/// How this broker takes part in a cluster: the controller quorum it belongs to, how peers
/// reach it for replication, and the replication and failover timings.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// Every controller as `(node id, address this broker uses to reach it)`. Empty: a
    /// single-node cluster whose quorum is this broker alone.
    pub voters: Vec<(i32, String)>,
    /// Broker-only nodes, which receive the metadata log without voting. Every node lists
    /// the same ones (the quorum's membership is static).
    pub learners: Vec<(i32, String)>,
    /// What this node runs: a broker (Kafka listener, partitions), a controller (a voter
    /// of the quorum), or both.
    pub roles: Roles,
    /// Where this broker's controller listens for its peers.
    pub controller_listen: Option<SocketAddr>,
    /// A second Kafka listener for follower fetches, so replication traffic can be
    /// separated (and, in tests, put behind a fault-injecting proxy).
    pub inter_broker_listen: Option<SocketAddr>,
    /// host:port followers connect to for replication.
    pub inter_broker_advertised: (String, u16),
    /// Source address of this broker's connections to its peers.
    pub inter_broker_bind: Option<std::net::IpAddr>,
    pub rack: Option<String>,
    /// `replica.selector.class` is Kafka's rack-aware selector: leaders point consumers
    /// at an in-sync replica in their rack (KIP-392).
    pub rack_aware_replica_selector: bool,
    pub session_timeout_ms: u64,
    pub heartbeat_interval_ms: u64,
    pub replica_lag_time_max_ms: u64,
    pub replica_fetch_wait_max_ms: u64,
    pub replica_fetch_max_bytes: usize,
    /// Fetch requests a follower keeps in flight per leader connection.
    pub replica_fetch_pipeline_depth: usize,
    pub unclean_leader_election: bool,
    pub auto_leader_rebalance: bool,
    pub leader_imbalance_check_interval_ms: u64,
    /// Share of a broker's preferred leaderships (percent) that may sit elsewhere before
    /// rebalancing moves them back.
    pub leader_imbalance_per_broker_percentage: u32,
    pub offsets_topic_replication_factor: i16,
    /// Default of the topic setting of the same name.
    pub min_insync_replicas: i32,
}

/// Consumer group settings, Kafka's names and defaults.
#[derive(Debug, Clone)]
pub struct GroupSettings {
    pub offsets_topic_partitions: i32,
    pub offsets_retention_ms: i64,
    pub offset_metadata_max_bytes: usize,
    pub initial_rebalance_delay_ms: i64,
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    pub max_size: usize,
    pub consumer_session_timeout_ms: i32,
    pub consumer_heartbeat_interval_ms: i32,
}

/// One known setting: its Kafka name, a one-line description, and its default as text.
pub struct SettingSpec {
    pub name: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// The broker-level settings users can set. DescribeConfigs reports these.
pub const BROKER_SETTINGS: &[SettingSpec] = &[
    SettingSpec {
        name: "node.id",
        default: "1",
        doc: "Id of this broker in Metadata responses.",
    },
    SettingSpec {
        name: "advertised.listeners",
        default: "",
        doc: "host:port clients are told to connect to (defaults to the listen address).",
    },
    SettingSpec {
        name: "num.partitions",
        default: "1",
        doc: "Partitions of an auto-created topic or a CreateTopics request asking for -1.",
    },
    SettingSpec {
        name: "default.replication.factor",
        default: "1",
        doc: "Replication factor of topics created without one (auto-created or -1).",
    },
    SettingSpec {
        name: "min.insync.replicas",
        default: "1",
        doc: "Default of the topic setting: replicas that must hold a batch before acks=all is answered.",
    },
    SettingSpec {
        name: "controller.quorum.voters",
        default: "",
        doc: "Controllers as id@host:port,... (empty: this broker alone is the quorum).",
    },
    SettingSpec {
        name: "controller.quorum.learners",
        default: "",
        doc: "Broker-only nodes as id@host:port,...: they receive the metadata log without voting.",
    },
    SettingSpec {
        name: "process.roles",
        default: "broker,controller",
        doc: "broker, controller, or both: a controller votes in the metadata quorum, a broker serves clients.",
    },
    SettingSpec {
        name: "controller.listen",
        default: "",
        doc: "host:port this broker's controller listens on for its peers.",
    },
    SettingSpec {
        name: "inter.broker.listen",
        default: "",
        doc: "host:port of a second Kafka listener for follower fetches (empty: the client listener).",
    },
    SettingSpec {
        name: "inter.broker.advertised",
        default: "",
        doc: "host:port followers connect to (defaults to inter.broker.listen, else the advertised listener).",
    },
    SettingSpec {
        name: "inter.broker.bind.address",
        default: "",
        doc: "Source IP of connections to other brokers (empty: the kernel's choice).",
    },
    SettingSpec {
        name: "broker.rack",
        default: "",
        doc: "Rack of this broker; replicas of a partition are spread over racks.",
    },
    SettingSpec {
        name: "replica.selector.class",
        default: "",
        doc: "org.apache.kafka.common.replica.RackAwareReplicaSelector: leaders send consumers with client.rack to an in-sync replica in their rack (KIP-392); empty: consumers read from leaders.",
    },
    SettingSpec {
        name: "broker.session.timeout.ms",
        default: "9000",
        doc: "A broker without a heartbeat for this long is fenced and loses its leaderships.",
    },
    SettingSpec {
        name: "broker.heartbeat.interval.ms",
        default: "2000",
        doc: "How often a broker heartbeats to the active controller.",
    },
    SettingSpec {
        name: "replica.lag.time.max.ms",
        default: "30000",
        doc: "A follower not caught up for this long leaves the ISR.",
    },
    SettingSpec {
        name: "replica.fetch.wait.max.ms",
        default: "500",
        doc: "Long-poll wait of follower fetches.",
    },
    SettingSpec {
        name: "replica.fetch.max.bytes",
        default: "1048576",
        doc: "Bytes a follower asks for per partition and fetch.",
    },
    SettingSpec {
        name: "replica.fetch.pipeline.depth",
        default: "2",
        doc: "Follower fetches in flight per leader connection (partitions are split between them).",
    },
    SettingSpec {
        name: "unclean.leader.election.enable",
        default: "false",
        doc: "Elect a replica outside the ISR when no ISR member is alive (may lose acknowledged data).",
    },
    SettingSpec {
        name: "auto.leader.rebalance.enable",
        default: "true",
        doc: "Move leadership back to each partition's preferred replica when it is in sync.",
    },
    SettingSpec {
        name: "leader.imbalance.check.interval.seconds",
        default: "300",
        doc: "How often the controller rebalances leaders.",
    },
    SettingSpec {
        name: "leader.imbalance.per.broker.percentage",
        default: "10",
        doc: "Rebalance a broker's leaders only when more than this percentage of the partitions it prefers are led elsewhere.",
    },
    SettingSpec {
        name: "offsets.topic.replication.factor",
        default: "3",
        doc: "Replication factor of __consumer_offsets; it is created once that many brokers are up (1 on a single node).",
    },
    SettingSpec {
        name: "auto.create.topics.enable",
        default: "true",
        doc: "Create unknown topics on Metadata and Produce requests.",
    },
    SettingSpec {
        name: "message.max.bytes",
        default: "1048588",
        doc: "Largest record batch accepted, after compression.",
    },
    SettingSpec {
        name: "socket.request.max.bytes",
        default: "104857600",
        doc: "Largest request frame; larger ones close the connection.",
    },
    SettingSpec {
        name: "log.segment.bytes",
        default: "1073741824",
        doc: "Size at which a segment is rolled.",
    },
    SettingSpec {
        name: "log.roll.ms",
        default: "604800000",
        doc: "Age at which a non-empty active segment is rolled.",
    },
    SettingSpec {
        name: "log.retention.ms",
        default: "604800000",
        doc: "Age after which whole segments are deleted (-1: never).",
    },
    SettingSpec {
        name: "log.retention.bytes",
        default: "-1",
        doc: "Partition size above which the oldest segments are deleted (-1: no limit).",
    },
    SettingSpec {
        name: "log.retention.check.interval.ms",
        default: "300000",
        doc: "How often retention runs.",
    },
    SettingSpec {
        name: "log.index.interval.bytes",
        default: "4096",
        doc: "Bytes of log between two sparse index entries.",
    },
    SettingSpec {
        name: "log.preallocate",
        default: "true",
        doc: "Reserve disk blocks ahead of a busy active segment's end (up to 8 MiB, keeping the file size), so fdatasync does not allocate; freed when the segment rolls.",
    },
    SettingSpec {
        name: "log.flush.interval.ms",
        default: "1000",
        doc: "How often data acknowledged with acks=0/1 is fdatasynced.",
    },
    SettingSpec {
        name: "fetch.zero.copy.min.bytes",
        default: "65536",
        doc: "Fetched record ranges this long or longer are sent with sendfile (no copy); -1 copies all.",
    },
    SettingSpec {
        name: "max.incremental.fetch.session.cache.slots",
        default: "1000",
        doc: "Incremental fetch sessions (KIP-227) kept per shard; 0 serves full fetches only.",
    },
    SettingSpec {
        name: "metrics.listen",
        default: "",
        doc: "host:port of the Prometheus metrics and health endpoint (off when empty).",
    },
    SettingSpec {
        name: "max.connections",
        default: "10000",
        doc: "Connections accepted per shard; further ones are closed.",
    },
    SettingSpec {
        name: "offsets.topic.num.partitions",
        default: "50",
        doc: "Partitions of the internal __consumer_offsets topic (fixed once created).",
    },
    SettingSpec {
        name: "offsets.retention.minutes",
        default: "10080",
        doc: "How long offsets of an empty group are kept.",
    },
    SettingSpec {
        name: "offset.metadata.max.bytes",
        default: "4096",
        doc: "Largest metadata string of a committed offset.",
    },
    SettingSpec {
        name: "group.initial.rebalance.delay.ms",
        default: "3000",
        doc: "How long the first rebalance of an empty group waits for more members.",
    },
    SettingSpec {
        name: "group.min.session.timeout.ms",
        default: "6000",
        doc: "Smallest session timeout a classic group member may ask for.",
    },
    SettingSpec {
        name: "group.max.session.timeout.ms",
        default: "1800000",
        doc: "Largest session timeout a classic group member may ask for.",
    },
    SettingSpec {
        name: "group.max.size",
        default: "1000",
        doc: "Most members in one group.",
    },
    SettingSpec {
        name: "group.consumer.session.timeout.ms",
        default: "45000",
        doc: "Session timeout of KIP-848 consumer group members.",
    },
    SettingSpec {
        name: "group.consumer.heartbeat.interval.ms",
        default: "5000",
        doc: "Heartbeat interval given to KIP-848 consumer group members.",
    },
];

impl BrokerConfig {
    /// Builds the configuration from the command line, an optional TOML file and
    /// `key=value` overrides (applied last).
    pub fn load(
        listen: SocketAddr,
        data_dir: PathBuf,
        file: Option<&std::path::Path>,
        overrides: &[String],
    ) -> anyhow::Result<BrokerConfig> {
        let mut settings: BTreeMap<String, String> = BTreeMap::new();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read config file {}", path.display()))?;
            let table: toml::Table = text
                .parse()
                .with_context(|| format!("config file {} is not valid TOML", path.display()))?;
            flatten_toml("", &toml::Value::Table(table), &mut settings)?;
        }
        for item in overrides {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| anyhow!("setting `{item}` is not of the form key=value"))?;
            settings.insert(key.trim().to_string(), value.trim().to_string());
        }
        for key in settings.keys() {
            if !BROKER_SETTINGS.iter().any(|spec| spec.name == key) {
                bail!("unknown setting `{key}` (known: {})", known_names());
            }
        }
        let settings = Settings(settings);
        let get = &settings;
        let (advertised_host, advertised_port) = match get.get("advertised.listeners") {
            "" => (advertised_host_for(&listen), listen.port()),
            value => parse_advertised(value)?,
        };
        let message_max_bytes: usize = parse_in("message.max.bytes", get, 1, 1 << 30)?;
        let socket_request_max_bytes: usize =
            parse_in("socket.request.max.bytes", get, 1024, 1 << 30)?;
        if message_max_bytes + 1024 > socket_request_max_bytes {
            bail!("message.max.bytes ({message_max_bytes}) must be well below socket.request.max.bytes ({socket_request_max_bytes})");
        }
        let cluster = ClusterSettings::load(get, (&advertised_host, advertised_port))?;
        Ok(BrokerConfig {
            listen,
            advertised_host,
            advertised_port,
            data_dir,
            node_id: parse_in("node.id", get, 0, i32::MAX)?,
            num_partitions: parse_in("num.partitions", get, 1, crate::metadata::MAX_PARTITIONS)?,
            default_replication_factor: parse_in("default.replication.factor", get, 1, 16)?,
            auto_create_topics: parse_bool(
                "auto.create.topics.enable",
                get.get("auto.create.topics.enable"),
            )?,
            message_max_bytes,
            socket_request_max_bytes,
            log: LogConfig {
                segment_bytes: parse_in("log.segment.bytes", get, 1024, u32::MAX as u64)?,
                segment_ms: parse_in("log.roll.ms", get, 1, i64::MAX)?,
                retention_ms: parse_limit("log.retention.ms", get)?,
                retention_bytes: parse_limit("log.retention.bytes", get)?,
                max_message_bytes: message_max_bytes,
                index_interval_bytes: parse_in("log.index.interval.bytes", get, 1, 1 << 30)?,
                preallocate: parse_bool("log.preallocate", get.get("log.preallocate"))?,
            },
            log_flush_interval_ms: parse_in("log.flush.interval.ms", get, 1, 3_600_000)?,
            retention_check_interval_ms: parse_in(
                "log.retention.check.interval.ms",
                get,
                10,
                86_400_000,
            )?,
            max_connections: parse_in("max.connections", get, 1, 1_000_000)?,
            fetch_zero_copy_min_bytes: match parse_in::<i64>(
                "fetch.zero.copy.min.bytes",
                get,
                -1,
                1 << 30,
            )? {
                -1 => None,
                bytes => Some(bytes as usize),
            },
            fetch_session_cache_slots: parse_in(
                "max.incremental.fetch.session.cache.slots",
                get,
                0,
                1_000_000,
            )?,
            metrics_listen: match get.get("metrics.listen") {
                "" => None,
                text => Some(text.parse().map_err(|_| {
                    anyhow!("setting `metrics.listen`: `{text}` is not a host:port address")
                })?),
            },
            groups: GroupSettings {
                offsets_topic_partitions: parse_in("offsets.topic.num.partitions", get, 1, 1000)?,
                offsets_retention_ms: parse_in::<i64>(
                    "offsets.retention.minutes",
                    get,
                    1,
                    1 << 40,
                )? * 60_000,
                offset_metadata_max_bytes: parse_in("offset.metadata.max.bytes", get, 0, 1 << 20)?,
                initial_rebalance_delay_ms: parse_in(
                    "group.initial.rebalance.delay.ms",
                    get,
                    0,
                    600_000,
                )?,
                min_session_timeout_ms: parse_in("group.min.session.timeout.ms", get, 1, i32::MAX)?,
                max_session_timeout_ms: parse_in("group.max.session.timeout.ms", get, 1, i32::MAX)?,
                max_size: parse_in("group.max.size", get, 1, 1_000_000)?,
                consumer_session_timeout_ms: parse_in(
                    "group.consumer.session.timeout.ms",
                    get,
                    1,
                    i32::MAX,
                )?,
                consumer_heartbeat_interval_ms: parse_in(
                    "group.consumer.heartbeat.interval.ms",
                    get,
                    1,
                    i32::MAX,
                )?,
            },
            cluster,
        })
    }

    /// The value of a broker setting as text, for DescribeConfigs.
    pub fn value_of(&self, name: &str) -> Option<String> {
        let value = match name {
            "node.id" => self.node_id.to_string(),
            "advertised.listeners" => {
                format!(
                    "PLAINTEXT://{}:{}",
                    self.advertised_host, self.advertised_port
                )
            }
            "num.partitions" => self.num_partitions.to_string(),
            "default.replication.factor" => self.default_replication_factor.to_string(),
            "auto.create.topics.enable" => self.auto_create_topics.to_string(),
            "message.max.bytes" => self.message_max_bytes.to_string(),
            "socket.request.max.bytes" => self.socket_request_max_bytes.to_string(),
            "log.segment.bytes" => self.log.segment_bytes.to_string(),
            "log.roll.ms" => self.log.segment_ms.to_string(),
            "log.retention.ms" => self.log.retention_ms.to_string(),
            "log.retention.bytes" => self.log.retention_bytes.to_string(),
            "log.retention.check.interval.ms" => self.retention_check_interval_ms.to_string(),
            "log.index.interval.bytes" => self.log.index_interval_bytes.to_string(),
            "log.preallocate" => self.log.preallocate.to_string(),
            "log.flush.interval.ms" => self.log_flush_interval_ms.to_string(),
            "max.connections" => self.max_connections.to_string(),
            "max.incremental.fetch.session.cache.slots" => {
                self.fetch_session_cache_slots.to_string()
            }
            "metrics.listen" => self
                .metrics_listen
                .map(|a| a.to_string())
                .unwrap_or_default(),
            "offsets.topic.num.partitions" => self.groups.offsets_topic_partitions.to_string(),
            "offsets.retention.minutes" => (self.groups.offsets_retention_ms / 60_000).to_string(),
            "offset.metadata.max.bytes" => self.groups.offset_metadata_max_bytes.to_string(),
            "group.initial.rebalance.delay.ms" => {
                self.groups.initial_rebalance_delay_ms.to_string()
            }
            "group.min.session.timeout.ms" => self.groups.min_session_timeout_ms.to_string(),
            "group.max.session.timeout.ms" => self.groups.max_session_timeout_ms.to_string(),
            "group.max.size" => self.groups.max_size.to_string(),
            "group.consumer.session.timeout.ms" => {
                self.groups.consumer_session_timeout_ms.to_string()
            }
            "group.consumer.heartbeat.interval.ms" => {
                self.groups.consumer_heartbeat_interval_ms.to_string()
            }
            name => return self.cluster.value_of(name),
        };
        Some(value)
    }
}

impl ClusterSettings {
    fn load(get: &Settings, advertised: (&str, u16)) -> anyhow::Result<ClusterSettings> {
        let address = |name: &str| -> anyhow::Result<Option<SocketAddr>> {
            match get.get(name) {
                "" => Ok(None),
                text => text
                    .parse()
                    .map(Some)
                    .map_err(|_| anyhow!("setting `{name}`: `{text}` is not an ip:port address")),
            }
        };
        let voters = parse_voters(
            "controller.quorum.voters",
            get.get("controller.quorum.voters"),
        )?;
        let learners = parse_voters(
            "controller.quorum.learners",
            get.get("controller.quorum.learners"),
        )?;
        let roles = parse_roles(get.get("process.roles"))?;
        let controller_listen = address("controller.listen")?;
        if !voters.is_empty() && controller_listen.is_none() {
            bail!("setting `controller.listen` is required with `controller.quorum.voters`");
        }
        if voters.is_empty()
            && (!learners.is_empty()
                || roles
                    != Roles {
                        broker: true,
                        controller: true,
                    })
        {
            bail!("`process.roles` other than broker,controller and `controller.quorum.learners` need `controller.quorum.voters`");
        }
        if let Some((id, _)) = learners
            .iter()
            .find(|(id, _)| voters.iter().any(|(v, _)| v == id))
        {
            bail!("node {id} is both a voter and a learner of the controller quorum");
        }
        let inter_broker_listen = address("inter.broker.listen")?;
        let inter_broker_advertised =
            match (get.get("inter.broker.advertised"), inter_broker_listen) {
                ("", Some(own)) => (advertised_host_for(&own), own.port()),
                ("", None) => (advertised.0.to_string(), advertised.1),
                (text, _) => parse_host_port("inter.broker.advertised", text)?,
            };
        Ok(ClusterSettings {
            voters,
            learners,
            roles,
            controller_listen,
            inter_broker_listen,
            inter_broker_advertised,
            inter_broker_bind: match get.get("inter.broker.bind.address") {
                "" => None,
                text => Some(text.parse().map_err(|_| {
                    anyhow!("setting `inter.broker.bind.address`: `{text}` is not an IP address")
                })?),
            },
            rack: Some(get.get("broker.rack").to_string()).filter(|r| !r.is_empty()),
            rack_aware_replica_selector: match get.get("replica.selector.class") {
                "" => false,
                RACK_AWARE_REPLICA_SELECTOR => true,
                other => bail!(
                    "setting `replica.selector.class`: `{other}` is not empty or {RACK_AWARE_REPLICA_SELECTOR}"
                ),
            },
            session_timeout_ms: parse_in("broker.session.timeout.ms", get, 100, 3_600_000)?,
            heartbeat_interval_ms: parse_in("broker.heartbeat.interval.ms", get, 10, 600_000)?,
            replica_lag_time_max_ms: parse_in("replica.lag.time.max.ms", get, 100, 3_600_000)?,
            replica_fetch_wait_max_ms: parse_in("replica.fetch.wait.max.ms", get, 0, 60_000)?,
            replica_fetch_max_bytes: parse_in("replica.fetch.max.bytes", get, 1024, 1 << 28)?,
            replica_fetch_pipeline_depth: parse_in("replica.fetch.pipeline.depth", get, 1, 16)?,
            unclean_leader_election: parse_bool(
                "unclean.leader.election.enable",
                get.get("unclean.leader.election.enable"),
            )?,
            auto_leader_rebalance: parse_bool(
                "auto.leader.rebalance.enable",
                get.get("auto.leader.rebalance.enable"),
            )?,
            leader_imbalance_check_interval_ms: parse_in::<u64>(
                "leader.imbalance.check.interval.seconds",
                get,
                1,
                86_400,
            )? * 1000,
            leader_imbalance_per_broker_percentage: parse_in(
                "leader.imbalance.per.broker.percentage",
                get,
                0,
                100,
            )?,
            offsets_topic_replication_factor: parse_in(
                "offsets.topic.replication.factor",
                get,
                1,
                16,
            )?,
            min_insync_replicas: parse_in("min.insync.replicas", get, 1, 16)?,
        })
    }
}

impl ClusterSettings {
    fn value_of(&self, name: &str) -> Option<String> {
        let address = |a: Option<SocketAddr>| a.map(|a| a.to_string()).unwrap_or_default();
        let value = match name {
            "min.insync.replicas" => self.min_insync_replicas.to_string(),
            "controller.quorum.voters" => self
                .voters
                .iter()
                .map(|(id, address)| format!("{id}@{address}"))
                .collect::<Vec<_>>()
                .join(","),
            "controller.quorum.learners" => self
                .learners
                .iter()
                .map(|(id, address)| format!("{id}@{address}"))
                .collect::<Vec<_>>()
                .join(","),
            "process.roles" => match (self.roles.broker, self.roles.controller) {
                (true, true) => "broker,controller",
                (true, false) => "broker",
                _ => "controller",
            }
            .to_string(),
            "controller.listen" => address(self.controller_listen),
            "inter.broker.listen" => address(self.inter_broker_listen),
            "inter.broker.advertised" => format!(
                "{}:{}",
                self.inter_broker_advertised.0, self.inter_broker_advertised.1
            ),
            "inter.broker.bind.address" => self
                .inter_broker_bind
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            "broker.rack" => self.rack.clone().unwrap_or_default(),
            "replica.selector.class" => match self.rack_aware_replica_selector {
                true => RACK_AWARE_REPLICA_SELECTOR.to_string(),
                false => String::new(),
            },
            "broker.session.timeout.ms" => self.session_timeout_ms.to_string(),
            "broker.heartbeat.interval.ms" => self.heartbeat_interval_ms.to_string(),
            "replica.lag.time.max.ms" => self.replica_lag_time_max_ms.to_string(),
            "replica.fetch.wait.max.ms" => self.replica_fetch_wait_max_ms.to_string(),
            "replica.fetch.max.bytes" => self.replica_fetch_max_bytes.to_string(),
            "replica.fetch.pipeline.depth" => self.replica_fetch_pipeline_depth.to_string(),
            "unclean.leader.election.enable" => self.unclean_leader_election.to_string(),
            "auto.leader.rebalance.enable" => self.auto_leader_rebalance.to_string(),
            "leader.imbalance.check.interval.seconds" => {
                (self.leader_imbalance_check_interval_ms / 1000).to_string()
            }
            "leader.imbalance.per.broker.percentage" => {
                self.leader_imbalance_per_broker_percentage.to_string()
            }
            "offsets.topic.replication.factor" => self.offsets_topic_replication_factor.to_string(),
            _ => return None,
        };
        Some(value)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

fn parse_roles(text: &str) -> anyhow::Result<Roles> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for role in text.split(',').map(str::trim) {
        match role {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            other => bail!("setting `process.roles`: unknown role `{other}` (broker, controller)"),
        }
    }
    Ok(roles)
}

/// `1@host:port,2@host:port`: distinct ids, each with an address.
fn parse_voters(name: &str, text: &str) -> anyhow::Result<Vec<(i32, String)>> {
    let mut nodes: Vec<(i32, String)> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (id, address) = item
            .split_once('@')
            .ok_or_else(|| anyhow!("setting `{name}`: `{item}` is not id@host:port"))?;
        let id: i32 = id
            .parse()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| anyhow!("setting `{name}`: bad node id in `{item}`"))?;
        let (host, port) = parse_host_port(name, address)?;
        if nodes.iter().any(|(known, _)| *known == id) {
            bail!("setting `{name}`: node id {id} appears twice");
        }
        nodes.push((id, format!("{host}:{port}")));
    }
    Ok(nodes)
}

fn known_names() -> String {
    BROKER_SETTINGS
        .iter()
        .map(|spec| spec.name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Turns nested TOML tables into Kafka's dotted names, so `[log] segment.bytes = 1` and
/// `log.segment.bytes = 1` mean the same.
fn flatten_toml(
    prefix: &str,
    value: &toml::Value,
    out: &mut BTreeMap<String, String>,
) -> anyhow::Result<()> {
    match value {
        toml::Value::Table(table) => {
            for (key, inner) in table {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten_toml(&name, inner, out)?;
            }
        }
        toml::Value::String(text) => {
            out.insert(prefix.to_string(), text.clone());
        }
        toml::Value::Integer(number) => {
            out.insert(prefix.to_string(), number.to_string());
        }
        toml::Value::Boolean(flag) => {
            out.insert(prefix.to_string(), flag.to_string());
        }
        other => bail!("setting `{prefix}` has an unsupported value {other}"),
    }
    Ok(())
}

/// Settings as given, falling back to each one's default.
struct Settings(BTreeMap<String, String>);

impl Settings {
    fn get(&self, name: &str) -> &str {
        self.0.get(name).map(String::as_str).unwrap_or_else(|| {
            BROKER_SETTINGS
                .iter()
                .find(|spec| spec.name == name)
                .map(|spec| spec.default)
                .expect("every setting read has a spec")
        })
    }
}

fn parse_in<T>(name: &str, settings: &Settings, min: T, max: T) -> anyhow::Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let text = settings.get(name);
    let value: T = text
        .parse()
        .map_err(|_| anyhow!("setting `{name}`: `{text}` is not a valid number"))?;
    if value < min || value > max {
        bail!("setting `{name}`: {value} is outside {min}..={max}");
    }
    Ok(value)
}

/// A retention limit: a positive number, or -1 for none.
fn parse_limit(name: &str, settings: &Settings) -> anyhow::Result<i64> {
    let value = parse_in(name, settings, -1, i64::MAX)?;
    if value == 0 {
        bail!("setting `{name}`: 0 would delete every segment; use -1 for no limit");
    }
    Ok(value)
}

pub fn parse_bool(name: &str, text: &str) -> anyhow::Result<bool> {
    match text {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => bail!("setting `{name}`: `{text}` is not true or false"),
    }
}

/// Accepts `PLAINTEXT://host:port`, `host:port` (one listener: there is no TLS listener yet).
fn parse_advertised(value: &str) -> anyhow::Result<(String, u16)> {
    let address = value.strip_prefix("PLAINTEXT://").unwrap_or(value);
    if address.contains(',') || address.contains("://") {
        bail!("setting `advertised.listeners`: only one PLAINTEXT listener is supported, got `{value}`");
    }
    parse_host_port("advertised.listeners", address)
}

fn parse_host_port(name: &str, value: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = value
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("setting `{name}`: `{value}` has no :port"))?;
    let port = port
        .parse()
        .map_err(|_| anyhow!("setting `{name}`: bad port in `{value}`"))?;
    if host.is_empty() {
        bail!("setting `{name}`: `{value}` has no host");
    }
    Ok((host.to_string(), port))
}

/// Clients cannot connect to 0.0.0.0: advertise loopback for a wildcard bind unless told.
fn advertised_host_for(listen: &SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        listen.ip().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(file: &str, overrides: &[&str]) -> anyhow::Result<BrokerConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("corelog.toml");
        std::fs::write(&path, file).unwrap();
        let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
        BrokerConfig::load(
            "127.0.0.1:9092".parse().unwrap(),
            dir.path().into(),
            Some(&path),
            &overrides,
        )
    }

    #[test]
    fn dotted_and_nested_keys_are_the_same_setting() {
        let dotted = load("log.segment.bytes = 4096\n", &[]).unwrap();
        let nested = load("[log]\nsegment.bytes = 4096\n", &[]).unwrap();
        assert_eq!(dotted.log.segment_bytes, 4096);
        assert_eq!(nested.log.segment_bytes, 4096);
    }

    #[test]
    fn overrides_win_over_the_file() {
        let config = load("num.partitions = 3\n", &["num.partitions=6"]).unwrap();
        assert_eq!(config.num_partitions, 6);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let unknown = load("log.segmnt.bytes = 1\n", &[]).unwrap_err().to_string();
        assert!(unknown.contains("log.segmnt.bytes"), "{unknown}");
        let bad = load("", &["num.partitions=lots"]).unwrap_err().to_string();
        assert!(bad.contains("num.partitions"), "{bad}");
        let zero = load("", &["log.retention.ms=0"]).unwrap_err().to_string();
        assert!(zero.contains("log.retention.ms"), "{zero}");
    }

    #[test]
    fn replica_selector_takes_kafkas_rack_aware_class_only() {
        assert!(!load("", &[]).unwrap().cluster.rack_aware_replica_selector);
        let rack_aware = load(
            "",
            &["replica.selector.class=org.apache.kafka.common.replica.RackAwareReplicaSelector"],
        )
        .unwrap();
        assert!(rack_aware.cluster.rack_aware_replica_selector);
        let other = load("", &["replica.selector.class=com.example.Nearest"])
            .unwrap_err()
            .to_string();
        assert!(other.contains("replica.selector.class"), "{other}");
    }

    #[test]
    fn advertised_listener_forms() {
        let config = load("", &["advertised.listeners=PLAINTEXT://broker1:19092"]).unwrap();
        assert_eq!(
            (config.advertised_host.as_str(), config.advertised_port),
            ("broker1", 19092)
        );
        assert!(load("", &["advertised.listeners=broker1"]).is_err());
    }
}
