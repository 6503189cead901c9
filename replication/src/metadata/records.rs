//! Metadata records: what one entry of the controller quorum's log says, and its encoding.
//!
//! An entry is one batch of records, proposed together by the active controller and applied
//! together by every broker. Records carry every decision explicitly (assignments, leaders,
//! ISRs) so that applying them needs nothing but the image and the entry's raft index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub type BrokerId = i32;

/// Replicas of each partition, in preference order.
pub type Assignment = Vec<Vec<BrokerId>>;

/// The `leader` of a partition that has none.
pub const NO_LEADER: BrokerId = -1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

/// A partition as the controller creates it: replicas in preference order, with the leader
/// and ISR it chose from the brokers alive at that moment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewPartition {
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
    pub leader: BrokerId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// Names the cluster; only the first such record counts.
    ClusterIdSet {
        cluster_id: String,
    },
    /// A broker incarnation registers; its epoch becomes the raft index of this record and it
    /// starts fenced.
    RegisterBroker {
        id: BrokerId,
        incarnation: Uuid,
        kafka: Endpoint,
        replication: Endpoint,
        rack: Option<String>,
    },
    UnfenceBroker {
        id: BrokerId,
        epoch: i64,
    },
    FenceBroker {
        id: BrokerId,
        epoch: i64,
    },
    BrokerShuttingDown {
        id: BrokerId,
        epoch: i64,
    },
    TopicCreated {
        name: String,
        id: Uuid,
        configs: BTreeMap<String, String>,
        partitions: Vec<NewPartition>,
    },
    PartitionsAdded {
        topic: String,
        partitions: Vec<NewPartition>,
    },
    TopicDeleted {
        name: String,
    },
    /// Replaces the topic's whole config map.
    ConfigsAltered {
        topic: String,
        configs: BTreeMap<String, String>,
    },
    /// A leader change bumps the leader epoch; every change bumps the partition epoch.
    PartitionChanged {
        topic: String,
        partition: i32,
        leader: Option<BrokerId>,
        isr: Option<Vec<BrokerId>>,
    },
}

/// One log entry holding `records`, applied atomically.
pub fn encode(records: &[MetadataRecord]) -> Vec<u8> {
    // Every field is a string, number, uuid or string-keyed map: serialization cannot fail.
    serde_json::to_vec(records).expect("metadata records serialize to JSON")
}

pub fn decode(entry: &[u8]) -> Result<Vec<MetadataRecord>, serde_json::Error> {
    serde_json::from_slice(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_decode_round_trip() {
        let records = vec![
            MetadataRecord::RegisterBroker {
                id: 3,
                incarnation: Uuid::new_v4(),
                kafka: Endpoint {
                    host: "h".into(),
                    port: 9092,
                },
                replication: Endpoint {
                    host: "h".into(),
                    port: 9093,
                },
                rack: Some("r1".into()),
            },
            MetadataRecord::PartitionChanged {
                topic: "t".into(),
                partition: 2,
                leader: None,
                isr: Some(vec![1, 2]),
            },
        ];
        assert_eq!(decode(&encode(&records)).unwrap(), records);
        assert!(decode(b"{not json").is_err());
    }
}
