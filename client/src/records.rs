//! Producing record batches to partition leaders and fetching them back.

use std::collections::BTreeMap;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use uuid::Uuid;

use crate::admin::missing;
use crate::client::{Client, TopicInfo};
use crate::error::{check, Error, Result};

pub struct ProduceOptions {
    /// 0 (no answer), 1 (the leader wrote it) or -1 (all in-sync replicas did).
    pub acks: i16,
    pub compression: Compression,
    pub timeout_ms: i32,
}

/// A record to produce (`value: None` is a tombstone). Batch fields are filled in when
/// the batch is encoded.
pub fn record(
    key: Option<Bytes>,
    value: Option<Bytes>,
    headers: &[(StrBytes, Bytes)],
    timestamp_ms: i64,
) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp: timestamp_ms,
        key,
        value,
        headers: headers
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.clone())))
            .collect(),
    }
}

/// Where to fetch a partition from.
pub struct FetchPosition<'a> {
    pub topic: &'a TopicInfo,
    pub partition: i32,
    pub offset: i64,
}

/// What a fetch returned for one partition: records from the position asked for on.
pub struct FetchedPartition {
    pub topic: String,
    pub partition: i32,
    pub high_watermark: i64,
    pub records: Vec<Record>,
}

/// The produced partitions of one call: (partition, base offset; `None` with acks=0).
pub type Produced = Vec<(i32, Option<i64>)>;

impl Client {
    /// Produces one batch per `(partition, records)` of `topic`, one request per leader.
    /// `encoded` is scratch space for the batches, reused across calls.
    pub fn produce(
        &mut self,
        topic: &TopicInfo,
        batches: &mut [(i32, Vec<Record>)],
        options: &ProduceOptions,
        encoded: &mut BytesMut,
    ) -> Result<Produced> {
        let mut by_leader: BTreeMap<i32, Vec<produce_request::PartitionProduceData>> =
            BTreeMap::new();
        for (partition, records) in batches.iter_mut() {
            let leader = self.leader(&topic.name, *partition)?;
            let batch = encode_batch(records, options.compression, encoded)?;
            by_leader.entry(leader).or_default().push(
                produce_request::PartitionProduceData::default()
                    .with_index(*partition)
                    .with_records(Some(batch)),
            );
        }
        let mut produced = Vec::with_capacity(batches.len());
        for (leader, partitions) in by_leader {
            let request = ProduceRequest::default()
                .with_acks(options.acks)
                .with_timeout_ms(options.timeout_ms)
                .with_topic_data(vec![produce_request::TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.name.clone())))
                    .with_topic_id(topic.topic_id)
                    .with_partition_data(partitions)]);
            produced.extend(self.with_node(leader, |c| send_produce(c, topic, &request))?);
        }
        Ok(produced)
    }

    /// Fetches from the leader `leader` the partitions it leads in `positions`, waiting up
    /// to `max_wait_ms` for data.
    pub fn fetch(
        &mut self,
        leader: i32,
        positions: &[FetchPosition],
        max_wait_ms: i32,
    ) -> Result<Vec<FetchedPartition>> {
        let mut topics: Vec<fetch_request::FetchTopic> = Vec::new();
        for position in positions {
            let partition = fetch_request::FetchPartition::default()
                .with_partition(position.partition)
                .with_fetch_offset(position.offset)
                .with_partition_max_bytes(PARTITION_MAX_BYTES);
            match topics
                .iter_mut()
                .find(|t| t.topic.as_str() == position.topic.name)
            {
                Some(topic) => topic.partitions.push(partition),
                None => topics.push(
                    fetch_request::FetchTopic::default()
                        .with_topic(TopicName(StrBytes::from_string(
                            position.topic.name.clone(),
                        )))
                        .with_topic_id(position.topic.topic_id)
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = FetchRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_max_wait_ms(max_wait_ms)
            .with_min_bytes(1)
            .with_max_bytes(MAX_BYTES)
            .with_session_epoch(-1)
            .with_topics(topics);
        // From v13 topics are named by id only; without ids, stay below.
        let by_id = positions.iter().all(|p| !p.topic.topic_id.is_nil());
        let response = self.with_node(leader, |c| {
            c.request(if by_id { 4..=i16::MAX } else { 4..=12 }, |_| request)
        })?;
        check(response.error_code, None, || {
            format!("fetch from broker {leader}")
        })?;
        let mut fetched = Vec::with_capacity(positions.len());
        for topic in response.responses {
            let name = topic_name(positions, &topic.topic, topic.topic_id)?;
            for partition in topic.partitions {
                check(partition.error_code, None, || {
                    format!("fetch {name}-{}", partition.partition_index)
                })?;
                let from = positions
                    .iter()
                    .find(|p| p.topic.name == name && p.partition == partition.partition_index)
                    .map_or(0, |p| p.offset);
                fetched.push(FetchedPartition {
                    topic: name.clone(),
                    partition: partition.partition_index,
                    high_watermark: partition.high_watermark,
                    records: decode_records(partition.records.unwrap_or_default(), from)
                        .map_err(|e| Error::Invalid(format!("fetch {name}: {e}")))?,
                });
            }
        }
        Ok(fetched)
    }
}

/// Largest answer of one fetch, and share of one partition in it.
const MAX_BYTES: i32 = 16 << 20;
const PARTITION_MAX_BYTES: i32 = 4 << 20;

/// Encodes `records` as one record batch v2. Offsets and sequences are numbered so the
/// encoder keeps them in one batch, with base sequence -1 as non-idempotent producers
/// send.
pub fn encode_batch(
    records: &mut [Record],
    compression: Compression,
    encoded: &mut BytesMut,
) -> Result<Bytes> {
    for (i, record) in records.iter_mut().enumerate() {
        record.offset = i as i64;
        record.sequence = i as i32 - 1;
    }
    encoded.clear();
    RecordBatchEncoder::encode(
        encoded,
        records.iter(),
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| Error::Invalid(format!("cannot encode a record batch: {e}")))?;
    Ok(encoded.split().freeze())
}

fn send_produce(
    connection: &mut crate::Connection,
    topic: &TopicInfo,
    request: &ProduceRequest,
) -> Result<Produced> {
    // From v13 topics are named by id only; without an id, stay below.
    let wanted = if topic.topic_id.is_nil() {
        3..=12
    } else {
        3..=i16::MAX
    };
    let version = connection.version_for::<ProduceRequest>(wanted)?;
    let partitions = request.topic_data.iter().flat_map(|t| &t.partition_data);
    if request.acks == 0 {
        // Kafka sends no answer to acks=0.
        connection.send(version, request)?;
        return Ok(partitions.map(|p| (p.index, None)).collect());
    }
    let response = connection.call(version, request)?;
    partitions
        .map(|asked| {
            let answer = response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .find(|p| p.index == asked.index)
                .ok_or_else(|| missing("Produce", &format!("{}-{}", topic.name, asked.index)))?;
            check(answer.error_code, answer.error_message.as_ref(), || {
                format!("produce to {}-{}", topic.name, asked.index)
            })?;
            Ok((asked.index, Some(answer.base_offset)))
        })
        .collect()
}

/// The name of a topic in a fetch answer, which from v13 names it by id only.
fn topic_name(positions: &[FetchPosition], name: &TopicName, id: Uuid) -> Result<String> {
    if !name.is_empty() {
        return Ok(name.to_string());
    }
    positions
        .iter()
        .find(|p| p.topic.topic_id == id)
        .map(|p| p.topic.name.clone())
        .ok_or_else(|| Error::Invalid(format!("a fetch answer names unknown topic id {id}")))
}

/// The data records at `from` and after in fetched record batches. A fetch may end in a
/// partial batch (cut at the size limit), which is left for the next fetch.
pub fn decode_records(mut data: Bytes, from: i64) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    // A batch starts with its base offset (8 bytes) and the length of the rest (4 bytes).
    while data.len() >= 12 {
        let length = i32::from_be_bytes(data[8..12].try_into().expect("4 bytes"));
        let total = usize::try_from(length).map_err(|_| "a batch of negative length")? + 12;
        if data.len() < total {
            break;
        }
        let mut batch = data.split_to(total);
        let set = RecordBatchDecoder::decode(&mut batch).map_err(|e| e.to_string())?;
        records.extend(
            set.records
                .into_iter()
                .filter(|r| !r.control && r.offset >= from),
        );
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_of(values: &[&str], compression: Compression) -> Bytes {
        let mut records: Vec<Record> = values
            .iter()
            .map(|v| record(None, Some(Bytes::copy_from_slice(v.as_bytes())), &[], 1))
            .collect();
        encode_batch(&mut records, compression, &mut BytesMut::new()).unwrap()
    }

    #[test]
    fn batches_round_trip_and_partial_tails_are_left() {
        let first = batch_of(&["a", "b", "c"], Compression::None);
        let second = batch_of(&["d"], Compression::Zstd);
        let mut data = BytesMut::new();
        data.extend_from_slice(&first);
        data.extend_from_slice(&second[..second.len() - 3]);
        let records = decode_records(data.freeze(), 1).unwrap();
        let values: Vec<&[u8]> = records
            .iter()
            .map(|r| r.value.as_deref().unwrap())
            .collect();
        assert_eq!(values, [&b"b"[..], b"c"]);
    }

    #[test]
    fn one_batch_per_call_with_non_idempotent_sequence() {
        let batch = batch_of(&["x", "y"], Compression::Gzip);
        let info = RecordBatchDecoder::decode_batch_info(&mut batch.clone()).unwrap();
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].record_count, 2);
        assert_eq!(info[0].base_sequence, -1);
        assert_eq!(info[0].producer_id, -1);
    }
}
