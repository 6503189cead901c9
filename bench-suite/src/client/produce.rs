//! Produce requests written by hand (versions 3 to 8 share one non-flexible layout), so sealed
//! batches go straight from a partition's builder into the connection's write buffer.

use anyhow::Result;

use super::batch::{BatchBuilder, Compression};
use super::wire::{begin_frame, end_frame, put_str, CLIENT_ID};

/// Produce versions this encoder writes.
pub const VERSIONS: std::ops::RangeInclusive<i16> = 3..=8;

/// A Produce request being appended to a write buffer: topics, then their partitions.
pub struct ProduceFrame {
    frame_at: usize,
    topics_at: usize,
    topics: i32,
    partitions_at: usize,
    partitions: i32,
}

impl ProduceFrame {
    /// Writes the frame start, header and request fields up to the topic array.
    pub fn begin(
        buf: &mut Vec<u8>,
        version: i16,
        correlation_id: i32,
        acks: i16,
        timeout_ms: i32,
    ) -> Self {
        debug_assert!(VERSIONS.contains(&version));
        let frame_at = begin_frame(buf);
        buf.extend_from_slice(&0i16.to_be_bytes()); // api key: Produce
        buf.extend_from_slice(&version.to_be_bytes());
        buf.extend_from_slice(&correlation_id.to_be_bytes());
        put_str(buf, CLIENT_ID);
        buf.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
        buf.extend_from_slice(&acks.to_be_bytes());
        buf.extend_from_slice(&timeout_ms.to_be_bytes());
        let topics_at = buf.len();
        buf.extend_from_slice(&0i32.to_be_bytes());
        ProduceFrame {
            frame_at,
            topics_at,
            topics: 0,
            partitions_at: 0,
            partitions: 0,
        }
    }

    /// Opens a topic; the partitions that follow belong to it.
    pub fn topic(&mut self, buf: &mut Vec<u8>, name: &str) {
        self.close_topic(buf);
        put_str(buf, name);
        self.partitions_at = buf.len();
        buf.extend_from_slice(&0i32.to_be_bytes());
        self.topics += 1;
    }

    /// Seals `batch` as this partition's records.
    pub fn partition(
        &mut self,
        buf: &mut Vec<u8>,
        index: i32,
        batch: &mut BatchBuilder,
        compression: Compression,
    ) -> Result<()> {
        buf.extend_from_slice(&index.to_be_bytes());
        let len_at = buf.len();
        buf.extend_from_slice(&0i32.to_be_bytes());
        batch.finish_into(buf, compression)?;
        let len = (buf.len() - len_at - 4) as i32;
        buf[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
        self.partitions += 1;
        Ok(())
    }

    /// Writes the array counts and the frame size.
    pub fn finish(mut self, buf: &mut [u8]) {
        self.close_topic(buf);
        buf[self.topics_at..self.topics_at + 4].copy_from_slice(&self.topics.to_be_bytes());
        end_frame(buf, self.frame_at);
    }

    fn close_topic(&mut self, buf: &mut [u8]) {
        if self.topics > 0 {
            let at = self.partitions_at;
            buf[at..at + 4].copy_from_slice(&self.partitions.to_be_bytes());
        }
        self.partitions = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::messages::{ProduceRequest, RequestHeader};
    use kafka_protocol::protocol::Decodable;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn kafka_protocol_decodes_the_hand_written_request() {
        for version in VERSIONS {
            let mut buf = Vec::new();
            let mut b = BatchBuilder::default();
            let mut frame = ProduceFrame::begin(&mut buf, version, 7, -1, 30_000);
            for (topic, parts) in [("a", &[0, 3][..]), ("b", &[1][..])] {
                frame.topic(&mut buf, topic);
                for &p in parts {
                    b.push(5, None, &[b"hello"], &[]);
                    b.push(6, None, &[b"world"], &[]);
                    frame
                        .partition(&mut buf, p, &mut b, Compression::None)
                        .unwrap();
                }
            }
            frame.finish(&mut buf);
            let len = i32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
            assert_eq!(len + 4, buf.len());
            let mut bytes = Bytes::from(buf).slice(4..);
            let header = RequestHeader::decode(&mut bytes, 1).unwrap();
            assert_eq!(
                (header.request_api_version, header.correlation_id),
                (version, 7)
            );
            let req = ProduceRequest::decode(&mut bytes, version).unwrap();
            assert_eq!(req.acks, -1);
            assert_eq!(req.topic_data.len(), 2);
            assert_eq!(req.topic_data[0].name.0.as_str(), "a");
            assert_eq!(req.topic_data[0].partition_data[1].index, 3);
            let mut records = req.topic_data[1].partition_data[0].records.clone().unwrap();
            let set = RecordBatchDecoder::decode(&mut records).unwrap();
            assert_eq!(set.records[1].value.as_deref(), Some(&b"world"[..]));
        }
    }
}
