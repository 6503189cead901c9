//! Fetch responses for zero-copy sends: the response is encoded around the record bytes,
//! which stay in the segment files and go to the socket with sendfile.
//!
//! Only the frame around each partition's records is encoded here; everything else about
//! a partition is encoded by the kafka-protocol crate with empty records, and the empty
//! records field (its length, the last field before the tagged fields) is replaced by the
//! real length followed by the file range. A unit test checks the result is byte for
//! byte what the crate encodes with the records inline, for every Fetch version.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseHeader};
use kafka_protocol::protocol::Encodable;

use crate::log::ReadSlice;

/// Fetch v12 switched to flexible (compact, tagged) encoding.
const FIRST_FLEXIBLE_VERSION: i16 = 12;
/// Fetch v13 names topics by id.
const FIRST_TOPIC_ID_VERSION: i16 = 13;

/// A piece of a response frame.
pub enum Part {
    /// Encoded response fields, and record ranges too small to be worth a sendfile read
    /// in among them, so that consecutive ones go out in one send.
    Bytes(Bytes),
    /// Record bytes to send from a segment file with sendfile.
    File(ReadSlice),
}

impl Part {
    pub fn byte_len(&self) -> usize {
        match self {
            Part::Bytes(b) => b.len(),
            Part::File(f) => f.len,
        }
    }
}

/// A Fetch response frame in pieces.
pub struct FetchFrame {
    pub parts: Vec<Part>,
    /// Record bytes read into `Part::Bytes` (the others go by sendfile).
    pub copied_bytes: u64,
}

/// Encodes `response` (its partitions' `records` fields are ignored) with each
/// partition's records taken from `records[topic][partition]`: ranges shorter than
/// `copy_below` bytes are read into the frame, longer ones left to sendfile.
pub fn encode_fetch_frame(
    version: i16,
    correlation_id: i32,
    response: &FetchResponse,
    records: &[Vec<Option<ReadSlice>>],
    copy_below: usize,
) -> anyhow::Result<FetchFrame> {
    let flexible = version >= FIRST_FLEXIBLE_VERSION;
    let copied = |slice: &&ReadSlice| slice.len < copy_below;
    let copied_bytes: usize = records
        .iter()
        .flatten()
        .flatten()
        .filter(copied)
        .map(|slice| slice.len)
        .sum();
    let mut parts = Vec::new();
    // The piece holding the frame size stays mutable until the size is known: once frozen
    // it would share its buffer with the later pieces, and patching it would mean a copy
    // (of the record ranges read into it too).
    let mut head: Option<BytesMut> = None;
    let mut buf = BytesMut::with_capacity(512 + copied_bytes);
    buf.put_i32(0); // frame size, set below
    ResponseHeader::default()
        .with_correlation_id(correlation_id)
        .encode(&mut buf, ApiKey::Fetch.response_header_version(version))?;
    if version >= 1 {
        buf.put_i32(response.throttle_time_ms);
    }
    if version >= 7 {
        buf.put_i16(response.error_code);
        buf.put_i32(response.session_id);
    }
    put_length(&mut buf, flexible, response.responses.len());
    for (topic, topic_records) in response.responses.iter().zip(records) {
        if version >= FIRST_TOPIC_ID_VERSION {
            buf.put_slice(topic.topic_id.as_bytes());
        } else {
            put_string(&mut buf, flexible, topic.topic.as_str());
        }
        put_length(&mut buf, flexible, topic.partitions.len());
        for (partition, slice) in topic.partitions.iter().zip(topic_records) {
            let mut fields = partition.clone();
            fields.records = Some(Bytes::new());
            // Tagged fields (a diverging epoch, the current leader) follow the records:
            // encode them apart, from the whole partition's encoding past the fields.
            let tagged = if flexible {
                let mut whole = BytesMut::new();
                fields.encode(&mut whole, version)?;
                fields.diverging_epoch = Default::default();
                fields.current_leader = Default::default();
                fields.snapshot_id = Default::default();
                fields.unknown_tagged_fields.clear();
                Some(whole)
            } else {
                None
            };
            let start = buf.len();
            fields.encode(&mut buf, version)?;
            let tagged = tagged.map(|whole| whole.freeze().slice(buf.len() - start - 1..));
            // The encoding ends with the empty records field (and, when flexible, an
            // empty tagged-field section): swap in the real length.
            let len = slice.as_ref().map_or(0, |s| s.len);
            let tail: &[u8] = if flexible { &[1, 0] } else { &[0, 0, 0, 0] };
            anyhow::ensure!(
                buf.ends_with(tail),
                "unexpected partition encoding (tagged fields set?)"
            );
            buf.truncate(buf.len() - tail.len());
            if flexible {
                put_uvarint(&mut buf, len as u64 + 1);
            } else {
                buf.put_i32(i32::try_from(len)?);
            }
            match slice.as_ref().filter(|s| s.len > 0) {
                Some(slice) if copied(&slice) => slice.read_onto(&mut buf)?,
                Some(slice) => {
                    let piece = buf.split();
                    match head {
                        None => head = Some(piece),
                        Some(_) => parts.push(Part::Bytes(piece.freeze())),
                    }
                    parts.push(Part::File(slice.clone()));
                }
                None => {}
            }
            if let Some(tagged) = tagged {
                buf.put_slice(&tagged); // the partition's tagged fields
            }
        }
        if flexible {
            buf.put_u8(0); // the topic's tagged fields
        }
    }
    if flexible {
        put_response_tagged_fields(&mut buf, version, response)?;
    }
    let mut head = match head {
        Some(head) => {
            parts.push(Part::Bytes(buf.freeze()));
            head
        }
        None => buf,
    };
    let total = head.len() + parts.iter().map(Part::byte_len).sum::<usize>();
    head[..4].copy_from_slice(&i32::try_from(total - 4)?.to_be_bytes());
    parts.insert(0, Part::Bytes(head.freeze()));
    Ok(FetchFrame {
        parts,
        copied_bytes: copied_bytes as u64,
    })
}

/// The response's tagged fields (KIP-951's leader endpoints, v16+): taken from the crate's
/// encoding of a response holding only them, past the fields before them.
fn put_response_tagged_fields(
    buf: &mut BytesMut,
    version: i16,
    response: &FetchResponse,
) -> anyhow::Result<()> {
    // throttle_time_ms, error_code, session_id and an empty compact topic array.
    const FIELDS_BEFORE: usize = 4 + 2 + 4 + 1;
    let mut encoded = BytesMut::new();
    FetchResponse::default()
        .with_node_endpoints(response.node_endpoints.clone())
        .with_unknown_tagged_fields(response.unknown_tagged_fields.clone())
        .encode(&mut encoded, version)?;
    buf.put_slice(&encoded[FIELDS_BEFORE..]);
    Ok(())
}

fn put_length(buf: &mut BytesMut, flexible: bool, len: usize) {
    if flexible {
        put_uvarint(buf, len as u64 + 1);
    } else {
        buf.put_i32(len as i32);
    }
}

fn put_string(buf: &mut BytesMut, flexible: bool, text: &str) {
    if flexible {
        put_uvarint(buf, text.len() as u64 + 1);
    } else {
        buf.put_i16(text.len() as i16);
    }
    buf.put_slice(text.as_bytes());
}

fn put_uvarint(buf: &mut BytesMut, mut value: u64) {
    while value >= 0x80 {
        buf.put_u8((value as u8) | 0x80);
        value >>= 7;
    }
    buf.put_u8(value as u8);
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    use std::sync::Arc;

    use kafka_protocol::messages::fetch_response::{
        FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
    };
    use kafka_protocol::messages::{BrokerId, ResponseKind, TopicName};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    /// The same response encoded by the crate with the records inline.
    fn reference(
        version: i16,
        response: &FetchResponse,
        records: &[Vec<Option<Bytes>>],
    ) -> Vec<u8> {
        let mut inline = response.clone();
        for (topic, bytes) in inline.responses.iter_mut().zip(records) {
            for (partition, bytes) in topic.partitions.iter_mut().zip(bytes) {
                partition.records = Some(bytes.clone().unwrap_or_default());
            }
        }
        crate::protocol::encode_response(ApiKey::Fetch, version, 7, &ResponseKind::Fetch(inline))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn matches_the_crate_encoding_for_every_version() {
        let mut file = tempfile::tempfile().unwrap();
        let content: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        file.write_all(&content).unwrap();
        let file = Arc::new(file);
        let slice = |position: u64, len: usize| ReadSlice {
            file: file.clone(),
            position,
            len,
            offsets: None,
        };
        let bytes = |position: usize, len: usize| {
            Bytes::copy_from_slice(&content[position..position + len])
        };
        let partition = |index: i32| {
            PartitionData::default()
                .with_partition_index(index)
                .with_high_watermark(100 + index as i64)
                .with_last_stable_offset(100)
                .with_log_start_offset(3)
                .with_preferred_read_replica(BrokerId(-1))
        };
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("alpha")))
                .with_topic_id(uuid::Uuid::from_u128(42))
                .with_partitions(vec![partition(0), partition(1), partition(2)]),
            FetchableTopicResponse::default()
                .with_topic(TopicName(StrBytes::from_static_str("b")))
                .with_topic_id(uuid::Uuid::from_u128(7))
                .with_partitions(vec![partition(0).with_error_code(1)]),
        ]);
        let slices = vec![
            vec![Some(slice(10, 300)), None, Some(slice(1000, 200))],
            vec![None],
        ];
        let inline = vec![
            vec![Some(bytes(10, 300)), None, Some(bytes(1000, 200))],
            vec![None],
        ];
        // From v12 a partition may carry tagged fields (a follower's diverging epoch).
        let mut tagged = response.clone();
        tagged.responses[0].partitions[2].diverging_epoch =
            kafka_protocol::messages::fetch_response::EpochEndOffset::default()
                .with_epoch(4)
                .with_end_offset(90);
        // KIP-951: a leader hint on a partition, and (v16+) the leaders' endpoints.
        tagged.responses[1].partitions[0].current_leader = LeaderIdAndEpoch::default()
            .with_leader_id(BrokerId(2))
            .with_leader_epoch(5);
        tagged.node_endpoints = vec![
            NodeEndpoint::default()
                .with_node_id(BrokerId(2))
                .with_host(StrBytes::from_static_str("broker-two.example"))
                .with_port(9093)
                .with_rack(Some(StrBytes::from_static_str("rack-b"))),
            NodeEndpoint::default()
                .with_node_id(BrokerId(3))
                .with_host(StrBytes::from_static_str("127.0.0.1"))
                .with_port(19092),
        ];
        for version in 4..=18 {
            let response = if version >= 12 { &tagged } else { &response };
            // Below 250 bytes copied, above sent from the file: both paths in one frame.
            let frame = encode_fetch_frame(version, 7, response, &slices, 250).unwrap();
            let mut sent = Vec::new();
            for part in frame.parts {
                match part {
                    Part::Bytes(b) => sent.extend_from_slice(&b),
                    Part::File(f) => {
                        let mut range = vec![0; f.len];
                        f.file.read_exact_at(&mut range, f.position).unwrap();
                        sent.extend_from_slice(&range);
                    }
                }
            }
            assert_eq!(
                sent,
                reference(version, response, &inline),
                "Fetch v{version}"
            );
            // With every range copied the frame is one piece: one send.
            let frame = encode_fetch_frame(version, 7, response, &slices, usize::MAX).unwrap();
            let copied: usize = slices.iter().flatten().flatten().map(|s| s.len).sum();
            assert_eq!(frame.copied_bytes, copied as u64);
            match &frame.parts[..] {
                [Part::Bytes(whole)] => assert_eq!(whole, &reference(version, response, &inline)),
                _ => panic!("Fetch v{version}: {} parts", frame.parts.len()),
            }
        }
    }
}
