//! Cluster metadata as shards serve it: topics with their ids, effective settings,
//! replicas, leaders and ISRs, and the brokers. The controller quorum (see
//! [`crate::cluster`]) keeps the authoritative [`ClusterImage`]; shard 0 turns each
//! committed version into a [`MetadataImage`] and pushes it to every shard, so reads never
//! cross shards or take locks.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use uuid::Uuid;

use corelog_replication::metadata::{BrokerRegistration, ClusterImage, PartitionState, TopicImage};

use crate::config::BrokerConfig;
use crate::errors::ErrorCode;
use crate::log::LogConfig;

/// Upper bound on partitions per topic: each partition holds open files and memory.
pub const MAX_PARTITIONS: i32 = 10_000;
/// Kafka's limit on topic name length.
const MAX_TOPIC_NAME_LEN: usize = 249;

/// A topic as stored: what survives a restart.
#[derive(Debug, Clone)]
pub struct TopicRecord {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub replication_factor: i16,
    /// Per-topic overrides, Kafka topic config names (`retention.ms`, ...).
    pub configs: BTreeMap<String, String>,
}

/// A topic as served: its record plus the effective log settings.
#[derive(Debug, Clone)]
pub struct TopicMeta {
    pub record: TopicRecord,
    pub log_config: LogConfig,
    pub min_insync_replicas: i32,
    /// The topic as the controller quorum keeps it: replicas, leaders, ISRs.
    pub cluster: Arc<TopicImage>,
}

impl TopicMeta {
    pub fn partition(&self, index: i32) -> Option<&PartitionState> {
        self.cluster.partitions.get(usize::try_from(index).ok()?)
    }
}

/// One version of the cluster metadata, shared read-only by all shards.
#[derive(Debug, Default)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    ids: HashMap<Uuid, String>,
    /// Brokers, and the committed image the topics were built from.
    pub cluster: Arc<ClusterImage>,
    /// The active controller, when one is known.
    pub controller_id: Option<i32>,
}

impl MetadataImage {
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&Arc<TopicMeta>> {
        self.ids.get(id).and_then(|name| self.topics.get(name))
    }
}

/// A topic config that can be set per topic, with the broker setting it defaults to.
pub struct TopicSetting {
    pub name: &'static str,
    pub broker_setting: Option<&'static str>,
}

pub const TOPIC_SETTINGS: &[TopicSetting] = &[
    TopicSetting {
        name: "cleanup.policy",
        broker_setting: None,
    },
    TopicSetting {
        name: "retention.ms",
        broker_setting: Some("log.retention.ms"),
    },
    TopicSetting {
        name: "retention.bytes",
        broker_setting: Some("log.retention.bytes"),
    },
    TopicSetting {
        name: "segment.bytes",
        broker_setting: Some("log.segment.bytes"),
    },
    TopicSetting {
        name: "segment.ms",
        broker_setting: Some("log.roll.ms"),
    },
    TopicSetting {
        name: "max.message.bytes",
        broker_setting: Some("message.max.bytes"),
    },
    TopicSetting {
        name: "index.interval.bytes",
        broker_setting: Some("log.index.interval.bytes"),
    },
    TopicSetting {
        name: "preallocate",
        broker_setting: Some("log.preallocate"),
    },
    TopicSetting {
        name: "message.timestamp.type",
        broker_setting: None,
    },
    TopicSetting {
        name: "min.insync.replicas",
        broker_setting: Some("min.insync.replicas"),
    },
];

/// The value a topic config has when not overridden.
pub fn topic_setting_default(broker: &BrokerConfig, setting: &TopicSetting) -> String {
    match setting.broker_setting {
        Some(name) => broker
            .value_of(name)
            .expect("topic settings map to broker settings"),
        None => match setting.name {
            "cleanup.policy" => "delete".into(),
            "message.timestamp.type" => "CreateTime".into(),
            other => unreachable!("topic setting {other} has no default"),
        },
    }
}

/// Why a topic request was refused: a Kafka error code and a message for the client.
#[derive(Debug, Clone)]
pub struct TopicError {
    pub code: ErrorCode,
    pub message: String,
}

impl TopicError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        TopicError {
            code,
            message: message.into(),
        }
    }
}

pub fn validate_topic_name(name: &str) -> Result<(), TopicError> {
    let valid_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-');
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > MAX_TOPIC_NAME_LEN
        || !valid_chars
    {
        return Err(TopicError::new(
            ErrorCode::InvalidTopicException,
            format!("topic name `{name}` is invalid: 1 to 249 characters of [a-zA-Z0-9._-], not `.` or `..`"),
        ));
    }
    Ok(())
}

/// Resolves a topic's effective log settings from broker defaults and its overrides,
/// refusing unknown names and bad values.
pub fn resolve_topic(broker: &BrokerConfig, record: TopicRecord) -> Result<TopicMeta, TopicError> {
    let invalid = |message: String| TopicError::new(ErrorCode::InvalidConfig, message);
    let mut log_config = broker.log.clone();
    let mut min_insync_replicas = broker.cluster.min_insync_replicas;
    for (name, value) in &record.configs {
        let number = || -> Result<i64, TopicError> {
            value
                .parse::<i64>()
                .map_err(|_| invalid(format!("config {name}: `{value}` is not a number")))
        };
        let positive = || -> Result<i64, TopicError> {
            let n = number()?;
            if n <= 0 {
                return Err(invalid(format!("config {name}: {n} must be positive")));
            }
            Ok(n)
        };
        let limit = || -> Result<i64, TopicError> {
            let n = number()?;
            if n == 0 || n < -1 {
                return Err(invalid(format!(
                    "config {name}: {n} must be positive or -1"
                )));
            }
            Ok(n)
        };
        match name.as_str() {
            "cleanup.policy" if value != "delete" => {
                return Err(invalid(format!("config cleanup.policy: `{value}` is not supported (only `delete`; compaction is not implemented yet)")));
            }
            "cleanup.policy" => {}
            "retention.ms" => log_config.retention_ms = limit()?,
            "retention.bytes" => log_config.retention_bytes = limit()?,
            "segment.bytes" => {
                let n = positive()?;
                if !(1024..=u32::MAX as i64).contains(&n) {
                    return Err(invalid(format!(
                        "config segment.bytes: {n} is outside 1024..=4294967295"
                    )));
                }
                log_config.segment_bytes = n as u64;
            }
            "segment.ms" => log_config.segment_ms = positive()?,
            "max.message.bytes" => {
                let n = positive()?;
                if n > broker.socket_request_max_bytes as i64 - 1024 {
                    return Err(invalid(format!(
                        "config max.message.bytes: {n} exceeds what a request can carry"
                    )));
                }
                log_config.max_message_bytes = n as usize;
            }
            "index.interval.bytes" => log_config.index_interval_bytes = positive()? as usize,
            "preallocate" => {
                log_config.preallocate = match value.as_str() {
                    "true" => true,
                    "false" => false,
                    _ => {
                        return Err(invalid(format!(
                            "config preallocate: `{value}` is not true or false"
                        )))
                    }
                }
            }
            "message.timestamp.type" if value != "CreateTime" => {
                return Err(invalid(format!(
                    "config message.timestamp.type: `{value}` is not supported (only CreateTime)"
                )));
            }
            "message.timestamp.type" => {}
            "min.insync.replicas" => min_insync_replicas = positive()? as i32,
            _ => {
                return Err(invalid(format!(
                    "config `{name}` is unknown or not supported"
                )))
            }
        }
    }
    // Replicas and leaders are the controller's; a topic only being checked has none yet.
    let cluster = Arc::new(TopicImage {
        name: record.name.clone(),
        id: record.id,
        configs: record.configs.clone(),
        partitions: Vec::new(),
    });
    Ok(TopicMeta {
        record,
        log_config,
        min_insync_replicas,
        cluster,
    })
}

impl MetadataImage {
    /// The image shards serve from a committed cluster image. Topics are re-resolved only
    /// when their cluster entry changed; a topic whose stored configs no longer resolve (a
    /// setting was dropped) is served with broker defaults and a warning.
    pub fn build(
        cluster: Arc<ClusterImage>,
        previous: &MetadataImage,
        broker: &BrokerConfig,
        controller_id: Option<i32>,
    ) -> MetadataImage {
        let mut image = MetadataImage {
            controller_id,
            ..MetadataImage::default()
        };
        for (name, topic) in &cluster.topics {
            let meta = match previous.topics.get(name) {
                Some(known) if Arc::ptr_eq(&known.cluster, topic) => known.clone(),
                _ => Arc::new(topic_meta(broker, topic.clone())),
            };
            image.ids.insert(topic.id, name.clone());
            image.topics.insert(name.clone(), meta);
        }
        image.cluster = cluster;
        image
    }

    /// A live broker's client endpoint.
    pub fn broker(&self, id: i32) -> Option<&BrokerRegistration> {
        self.cluster.brokers.get(&id).filter(|b| !b.fenced)
    }
}

fn topic_meta(broker: &BrokerConfig, topic: Arc<TopicImage>) -> TopicMeta {
    let record = TopicRecord {
        name: topic.name.clone(),
        id: topic.id,
        partitions: topic.partitions.len() as i32,
        replication_factor: topic
            .partitions
            .first()
            .map_or(0, |p| p.replicas.len() as i16),
        configs: topic.configs.clone(),
    };
    let resolved = resolve_topic(broker, record.clone()).unwrap_or_else(|e| {
        tracing::warn!(topic = %record.name, "stored topic config invalid ({}); using broker defaults", e.message);
        TopicMeta {
            record,
            log_config: broker.log.clone(),
            min_insync_replicas: broker.cluster.min_insync_replicas,
            cluster: topic.clone(),
        }
    });
    TopicMeta {
        cluster: topic,
        ..resolved
    }
}

/// Replaces a small file by renaming a temp file over it, without fsync: readers see the
/// old or the new content, but after a crash the file may be old, empty or missing. For
/// checkpoints that are checked when read (a bad one costs a rebuild or a longer recovery,
/// never data) and written often: two fsyncs per write would cost more than the data's
/// own. A clean stop makes them durable with one syncfs.
pub fn replace_file(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}

/// Writes a small file so that after a crash it holds either the old or the new content:
/// write a temp file, fsync it, rename over, fsync the directory.
pub fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(content)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// What `meta.properties` (Kafka's name) records about a data dir.
pub struct NodeIdentity {
    /// The cluster id this data dir was created with; the cluster's own id, once the
    /// controller quorum has one, is what clients are told.
    pub cluster_id: String,
    /// Names this data dir. A broker registers with it, so a restart on the same data dir
    /// (which only one process can hold) replaces its previous registration at once.
    pub directory_id: Uuid,
}

/// Reads or creates `meta.properties`, refusing a data dir of another node. A file from
/// before directory ids gets one added.
pub fn load_node_identity(data_dir: &Path, node_id: i32) -> anyhow::Result<NodeIdentity> {
    let path = data_dir.join("meta.properties");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let field = |key: &str| -> Option<String> {
        text.as_deref()?
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
            .map(|value| value.trim().to_string())
    };
    if let Some(stored) = field("node.id") {
        if stored != node_id.to_string() {
            anyhow::bail!(
                "data dir {} belongs to node.id {stored}, but this broker is node.id {node_id}",
                data_dir.display()
            );
        }
    }
    let cluster_id = match (&text, field("cluster.id")) {
        (Some(_), None) => anyhow::bail!("{} has no cluster.id", path.display()),
        (_, Some(id)) => id,
        (None, None) => base64_url(Uuid::new_v4().as_bytes()),
    };
    let directory_id = field("directory.id").and_then(|id| id.parse().ok());
    let identity = NodeIdentity {
        cluster_id,
        directory_id: directory_id.unwrap_or_else(Uuid::new_v4),
    };
    if directory_id.is_none() {
        let text = format!(
            "version=1\ncluster.id={}\nnode.id={node_id}\ndirectory.id={}\n",
            identity.cluster_id, identity.directory_id
        );
        write_atomically(&path, text.as_bytes())?;
    }
    Ok(identity)
}

/// Kafka prints cluster and topic ids in URL-safe base64 without padding.
pub fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len() * 4 / 3 + 2);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// Which shard owns a partition. Consecutive partitions of a topic land on consecutive
/// shards, so a topic's load spreads over all cores.
pub fn shard_for(topic: &str, partition: i32, shard_count: usize) -> usize {
    // FNV-1a: stable across runs and builds, unlike std's randomized hasher.
    let hash = topic.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    });
    (hash.wrapping_add(partition as u64) % shard_count as u64) as usize
}

/// Consumer groups (KIP-848) look topics up by name and by id in the image.
impl crate::group::consumer::TopicLookup for MetadataImage {
    fn topic(&self, name: &str) -> Option<(Uuid, i32)> {
        self.topic(name).map(|t| (t.record.id, t.record.partitions))
    }

    fn topic_name(&self, id: Uuid) -> Option<&str> {
        self.topic_by_id(&id).map(|t| t.record.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_eu-west").is_ok());
        for bad in ["", ".", "..", "with space", "slash/es", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn preallocate_follows_the_broker_unless_the_topic_says_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let off = vec!["log.preallocate=false".to_string()];
        let broker = BrokerConfig::load(
            "127.0.0.1:9092".parse().unwrap(),
            dir.path().into(),
            None,
            &off,
        )
        .unwrap();
        let topic = |configs: &[(&str, &str)]| TopicRecord {
            name: "t".into(),
            id: Uuid::nil(),
            partitions: 1,
            replication_factor: 1,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let resolved = |configs| resolve_topic(&broker, topic(configs)).map(|t| t.log_config);
        assert!(!resolved(&[]).unwrap().preallocate);
        assert!(resolved(&[("preallocate", "true")]).unwrap().preallocate);
        let refused = resolved(&[("preallocate", "yes")]).unwrap_err();
        assert_eq!(refused.code, ErrorCode::InvalidConfig);
    }

    #[test]
    fn partitions_of_a_topic_spread_over_shards() {
        let shards: std::collections::HashSet<usize> =
            (0..4).map(|p| shard_for("t", p, 2)).collect();
        assert_eq!(shards.len(), 2);
    }

    #[test]
    fn node_identity_persists_and_refuses_another_node() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_node_identity(dir.path(), 3).unwrap();
        let again = load_node_identity(dir.path(), 3).unwrap();
        assert_eq!(first.cluster_id, again.cluster_id);
        assert_eq!(first.directory_id, again.directory_id);
        assert!(load_node_identity(dir.path(), 4).is_err());
        // A file from before directory ids keeps its cluster id and gains a directory id.
        std::fs::write(
            dir.path().join("meta.properties"),
            "version=1\ncluster.id=abc\nnode.id=3\n",
        )
        .unwrap();
        let upgraded = load_node_identity(dir.path(), 3).unwrap();
        assert_eq!(upgraded.cluster_id, "abc");
        let kept = load_node_identity(dir.path(), 3).unwrap();
        assert_eq!(upgraded.directory_id, kept.directory_id);
    }

    #[test]
    fn base64_matches_kafka_form() {
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64_url(&[0u8; 16]).len(), 22);
    }
}
