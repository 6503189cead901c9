//! Committed offsets as records of the internal `__consumer_offsets` topic, in Apache
//! Kafka's own key/value formats, so tools that read that topic understand ours:
//!
//! - key v1: `version: i16 = 1, group: string, topic: string, partition: i32`
//! - value v3: `version: i16 = 3, offset: i64, leader_epoch: i32, metadata: string,
//!   commit_timestamp: i64`; a null value (tombstone) deletes the offset.
//!
//! Keys of other versions (group metadata, v2) are skipped on load.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use corelog_client::records::record;
use kafka_protocol::records::{Compression, RecordBatchDecoder};

/// Kafka's name, so clients that special-case it (is_internal) behave.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

const OFFSET_COMMIT_KEY_VERSION: i16 = 1;
const OFFSET_COMMIT_VALUE_VERSION: i16 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp_ms: i64,
}

/// One offset change, as stored: `value: None` deletes the offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetChange {
    pub group: String,
    pub topic: String,
    pub partition: i32,
    pub value: Option<CommittedOffset>,
}

/// Which offsets-topic partition keeps a group: Kafka's `abs(groupId.hashCode) % count`,
/// with Java's String.hashCode over UTF-16 code units.
pub fn offsets_partition_for(group: &str, partition_count: i32) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    // Kafka's Utils.abs maps i32::MIN to 0 rather than overflowing.
    let positive = if hash == i32::MIN { 0 } else { hash.abs() };
    positive % partition_count
}

fn put_string(buf: &mut BytesMut, text: &str) {
    buf.put_i16(text.len() as i16);
    buf.put_slice(text.as_bytes());
}

fn get_string(buf: &mut &[u8]) -> Option<String> {
    if buf.remaining() < 2 {
        return None;
    }
    let len = buf.get_i16();
    if len < 0 || buf.remaining() < len as usize {
        return None;
    }
    let text = std::str::from_utf8(&buf[..len as usize]).ok()?.to_string();
    buf.advance(len as usize);
    Some(text)
}

fn encode_key(change: &OffsetChange) -> Bytes {
    let mut key = BytesMut::with_capacity(10 + change.group.len() + change.topic.len());
    key.put_i16(OFFSET_COMMIT_KEY_VERSION);
    put_string(&mut key, &change.group);
    put_string(&mut key, &change.topic);
    key.put_i32(change.partition);
    key.freeze()
}

fn encode_value(value: &CommittedOffset) -> Bytes {
    let mut buf = BytesMut::with_capacity(28 + value.metadata.len());
    buf.put_i16(OFFSET_COMMIT_VALUE_VERSION);
    buf.put_i64(value.offset);
    buf.put_i32(value.leader_epoch);
    put_string(&mut buf, &value.metadata);
    buf.put_i64(value.commit_timestamp_ms);
    buf.freeze()
}

/// Decodes one record of the offsets topic; `None` for records that are not offset
/// commits (or are malformed: a torn or foreign record must not stop a load).
fn decode(key: &[u8], value: Option<&[u8]>) -> Option<OffsetChange> {
    let mut key = key;
    if key.remaining() < 2 || key.get_i16() > OFFSET_COMMIT_KEY_VERSION {
        return None;
    }
    let group = get_string(&mut key)?;
    let topic = get_string(&mut key)?;
    if key.remaining() < 4 {
        return None;
    }
    let partition = key.get_i32();
    let value = match value {
        None => None,
        Some(mut value) => {
            if value.remaining() < 2 {
                return None;
            }
            let version = value.get_i16();
            if !(1..=OFFSET_COMMIT_VALUE_VERSION).contains(&version) || value.remaining() < 8 {
                return None;
            }
            let offset = value.get_i64();
            // The leader epoch arrived with value v3.
            let leader_epoch = if version >= 3 && value.remaining() >= 4 {
                value.get_i32()
            } else {
                -1
            };
            let metadata = get_string(&mut value)?;
            let commit_timestamp_ms = if value.remaining() >= 8 {
                value.get_i64()
            } else {
                -1
            };
            Some(CommittedOffset {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms,
            })
        }
    };
    Some(OffsetChange {
        group,
        topic,
        partition,
        value,
    })
}

/// Encodes offset changes as one record batch v2 for the offsets topic.
pub fn encode_batch(changes: &[OffsetChange], now_ms: i64) -> Bytes {
    let mut records: Vec<_> = changes
        .iter()
        .map(|change| {
            let value = change.value.as_ref().map(encode_value);
            record(Some(encode_key(change)), value, &[], now_ms)
        })
        .collect();
    corelog_client::records::encode_batch(&mut records, Compression::None, &mut BytesMut::new())
        .expect("offset records always encode")
}

/// Decodes every offset change in a run of record batches read back from the log.
pub fn decode_batches(mut batches: Bytes) -> Result<Vec<OffsetChange>, anyhow::Error> {
    let mut changes = Vec::new();
    while batches.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut batches)?;
        for record in set.records {
            let Some(key) = record.key else { continue };
            if let Some(change) = decode(&key, record.value.as_deref()) {
                changes.push(change);
            }
        }
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(group: &str, offset: Option<i64>) -> OffsetChange {
        OffsetChange {
            group: group.into(),
            topic: "orders".into(),
            partition: 3,
            value: offset.map(|offset| CommittedOffset {
                offset,
                leader_epoch: 0,
                metadata: "m".into(),
                commit_timestamp_ms: 1_700_000_000_000,
            }),
        }
    }

    #[test]
    fn commits_and_tombstones_round_trip() {
        let changes = vec![
            change("g1", Some(42)),
            change("g2", None),
            change("g1", Some(43)),
        ];
        let batch = encode_batch(&changes, 1_700_000_000_000);
        assert_eq!(decode_batches(batch).unwrap(), changes);
    }

    #[test]
    fn key_and_value_layout_match_kafka() {
        let key = encode_key(&change("g", None));
        assert_eq!(
            &key[..],
            &[0, 1, 0, 1, b'g', 0, 6, b'o', b'r', b'd', b'e', b'r', b's', 0, 0, 0, 3]
        );
        let value = encode_value(change("g", Some(7)).value.as_ref().unwrap());
        assert_eq!(&value[..2], &[0, 3]);
        assert_eq!(value.len(), 2 + 8 + 4 + 2 + 1 + 8);
    }

    #[test]
    fn foreign_and_malformed_records_are_skipped() {
        assert_eq!(
            decode(&[0, 2, 0, 1, b'g'], Some(&[0, 3])),
            None,
            "group metadata key"
        );
        assert_eq!(decode(&[0, 1, 0, 9, b'g'], None), None, "torn key");
        assert_eq!(
            decode(&[0, 1, 0, 1, b'g', 0, 1, b't', 0, 0, 0, 1], Some(&[0, 9])),
            None,
            "unknown value version"
        );
    }

    #[test]
    fn partition_choice_matches_java_hash_code() {
        // "group".hashCode() == 98629247 in Java.
        assert_eq!(offsets_partition_for("group", 50), 98629247 % 50);
        assert!((0..50).contains(&offsets_partition_for("\u{ffff}\u{ffff}\u{ffff}", 50)));
    }
}
