//! Record batch v2 encoder: records are appended to a reused buffer as they are generated and
//! the batch header (with CRC32C) is written when the batch is sealed into a request buffer.
//! After the buffers have grown to their working size, encoding a message allocates nothing.

use anyhow::Result;
use kafka_protocol::compression::{Compressor, Gzip, Lz4, Zstd};
use serde::{Deserialize, Serialize};

use super::varint;

/// Bytes of a v2 batch header: base offset (8), length (4), leader epoch (4), magic (1),
/// CRC (4), attributes (2), last offset delta (4), base and max timestamps (16), producer id
/// (8), producer epoch (2), base sequence (4), record count (4).
pub const BATCH_HEADER_LEN: usize = 61;

/// Offset of the record count in a batch header.
pub const RECORD_COUNT_OFFSET: usize = 57;

/// Batch compression. Snappy is left out: Kafka clients disagree on its framing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Lz4,
    Zstd,
}

impl Compression {
    /// The codec id in the batch attributes.
    fn attribute(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => anyhow::bail!("unknown compression {s:?} (none, gzip, lz4, zstd)"),
        })
    }
}

/// The open batch of one partition.
#[derive(Default)]
pub struct BatchBuilder {
    records: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
}

impl BatchBuilder {
    /// Records in the open batch.
    pub fn count(&self) -> i32 {
        self.count
    }

    /// Size of the batch if it were sealed now, uncompressed.
    pub fn encoded_len(&self) -> usize {
        BATCH_HEADER_LEN + self.records.len()
    }

    /// Appends one record. The value is the concatenation of `value_parts`, so a caller can
    /// prefix a send stamp to a shared payload without building the value first.
    pub fn push(
        &mut self,
        timestamp_ms: i64,
        key: Option<&[u8]>,
        value_parts: &[&[u8]],
        headers: &[(&[u8], &[u8])],
    ) {
        if self.count == 0 {
            self.base_timestamp = timestamp_ms;
            self.max_timestamp = timestamp_ms;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp_ms);
        let ts_delta = timestamp_ms - self.base_timestamp;
        let offset_delta = i64::from(self.count);
        let value_len: usize = value_parts.iter().map(|p| p.len()).sum();

        let key_part = match key {
            Some(k) => varint::len(k.len() as i64) + k.len(),
            None => varint::len(-1),
        };
        let headers_part: usize = varint::len(headers.len() as i64)
            + headers
                .iter()
                .map(|(k, v)| {
                    varint::len(k.len() as i64) + k.len() + varint::len(v.len() as i64) + v.len()
                })
                .sum::<usize>();
        let body_len = 1
            + varint::len(ts_delta)
            + varint::len(offset_delta)
            + key_part
            + varint::len(value_len as i64)
            + value_len
            + headers_part;

        let out = &mut self.records;
        out.reserve(varint::len(body_len as i64) + body_len);
        varint::put(out, body_len as i64);
        out.push(0); // record attributes: unused
        varint::put(out, ts_delta);
        varint::put(out, offset_delta);
        match key {
            Some(k) => {
                varint::put(out, k.len() as i64);
                out.extend_from_slice(k);
            }
            None => varint::put(out, -1),
        }
        varint::put(out, value_len as i64);
        for part in value_parts {
            out.extend_from_slice(part);
        }
        varint::put(out, headers.len() as i64);
        for (k, v) in headers {
            varint::put(out, k.len() as i64);
            out.extend_from_slice(k);
            varint::put(out, v.len() as i64);
            out.extend_from_slice(v);
        }
        self.count += 1;
    }

    /// Writes the sealed batch (header, CRC32C, records, compressed if asked) at the end of
    /// `out` and empties the builder for the next batch, keeping its buffer.
    pub fn finish_into(&mut self, out: &mut Vec<u8>, compression: Compression) -> Result<()> {
        assert!(self.count > 0, "sealing an empty batch");
        out.extend_from_slice(&0i64.to_be_bytes()); // base offset: the broker assigns it
        let length_at = out.len();
        out.extend_from_slice(&0i32.to_be_bytes());
        out.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        out.push(2); // magic
        let crc_at = out.len();
        out.extend_from_slice(&0u32.to_be_bytes());
        let crc_from = out.len();
        out.extend_from_slice(&compression.attribute().to_be_bytes());
        out.extend_from_slice(&(self.count - 1).to_be_bytes()); // last offset delta
        out.extend_from_slice(&self.base_timestamp.to_be_bytes());
        out.extend_from_slice(&self.max_timestamp.to_be_bytes());
        out.extend_from_slice(&(-1i64).to_be_bytes()); // producer id: not idempotent
        out.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
        out.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
        out.extend_from_slice(&self.count.to_be_bytes());
        let records = &self.records;
        let copy = |tmp: &mut bytes::BytesMut| -> Result<()> {
            tmp.extend_from_slice(records);
            Ok(())
        };
        // Compressed batches go through kafka-protocol's codecs, which allocate a scratch buffer
        // per batch (not per message); uncompressed ones are one memcpy.
        match compression {
            Compression::None => out.extend_from_slice(records),
            Compression::Gzip => Gzip::compress(out, copy)?,
            Compression::Lz4 => Lz4::compress(out, copy)?,
            Compression::Zstd => Zstd::compress(out, copy)?,
        }
        let batch_len = (out.len() - length_at - 4) as i32;
        out[length_at..length_at + 4].copy_from_slice(&batch_len.to_be_bytes());
        let crc = crc32c::crc32c(&out[crc_from..]);
        out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
        self.records.clear();
        self.count = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::RecordBatchDecoder;

    fn sample(compression: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::default();
        let filler = vec![b'x'; 300];
        for i in 0..50u64 {
            let stamp = i.to_le_bytes();
            let key = format!("key-{i}");
            let key = (i % 3 != 0).then_some(key.as_bytes());
            let headers: &[(&[u8], &[u8])] = if i % 2 == 0 {
                &[(b"h0", b"v0"), (b"h1", b"")]
            } else {
                &[]
            };
            b.push(
                1_700_000_000_000 + i as i64,
                key,
                &[&stamp, &filler[..i as usize]],
                headers,
            );
        }
        let mut out = vec![0xAA; 3]; // the batch must land after existing bytes
        b.finish_into(&mut out, compression).unwrap();
        assert_eq!(b.count(), 0);
        out.split_off(3)
    }

    #[test]
    fn batches_decode_with_kafka_protocol() {
        for compression in [
            Compression::None,
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let encoded = sample(compression);
            let len = i32::from_be_bytes(encoded[8..12].try_into().unwrap()) as usize;
            assert_eq!(len + 12, encoded.len());
            let crc = u32::from_be_bytes(encoded[17..21].try_into().unwrap());
            assert_eq!(crc, crc32c::crc32c(&encoded[21..]), "{compression:?}");
            let mut buf = Bytes::from(encoded);
            let set = RecordBatchDecoder::decode(&mut buf).unwrap();
            assert_eq!(set.records.len(), 50);
            for (i, r) in set.records.iter().enumerate() {
                assert_eq!(r.offset, i as i64);
                assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
                let value = r.value.as_ref().unwrap();
                assert_eq!(value.len(), 8 + i);
                assert_eq!(&value[..8], &(i as u64).to_le_bytes());
                assert!(value[8..].iter().all(|&c| c == b'x'));
                match &r.key {
                    Some(k) => assert_eq!(k.as_ref(), format!("key-{i}").as_bytes()),
                    None => assert_eq!(i % 3, 0),
                }
                assert_eq!(r.headers.len(), if i % 2 == 0 { 2 } else { 0 });
                assert_eq!(r.producer_id, -1);
            }
        }
    }

    #[test]
    fn builder_reuses_its_buffer() {
        let mut b = BatchBuilder::default();
        let mut out = Vec::with_capacity(1 << 16);
        b.push(1, None, &[&[0u8; 100]], &[]);
        b.finish_into(&mut out, Compression::None).unwrap();
        let cap = b.records.capacity();
        out.clear();
        b.push(2, None, &[&[0u8; 100]], &[]);
        assert_eq!(b.records.capacity(), cap);
        assert_eq!(b.encoded_len(), BATCH_HEADER_LEN + b.records.len());
    }
}
