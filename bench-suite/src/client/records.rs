//! Walks the record batches of a fetched partition without decoding them into structs:
//! the consumer only needs each record's offset and value (the send stamp), and
//! kafka-protocol's decoder would allocate a Vec and a header map per record.

use anyhow::{bail, Result};
use bytes::Bytes;
use kafka_protocol::compression::{Decompressor, Gzip, Lz4, Snappy, Zstd};

use super::batch::{BATCH_HEADER_LEN, RECORD_COUNT_OFFSET};
use super::varint;

/// Where a walk over fetched records ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Walked {
    /// Records at or past the start offset handed to `f`.
    pub records: u64,
    /// The offset to fetch next (the start offset if nothing complete was there).
    pub next_offset: i64,
}

/// Calls `f(offset, value)` for every data record at or after `from_offset` in `records`
/// (the bytes of one partition of a Fetch response). A trailing partial batch, which brokers
/// may return when `max_bytes` cuts it, is ignored. Control batches advance the offset only.
pub fn for_each_record(
    records: &[u8],
    from_offset: i64,
    mut f: impl FnMut(i64, &[u8]),
) -> Result<Walked> {
    let mut walked = Walked {
        records: 0,
        next_offset: from_offset,
    };
    let mut pos = 0;
    while let Some(h) = Header::parse(&records[pos..]) {
        if h.magic != 2 {
            bail!("record batch magic {} (only v2 is supported)", h.magic);
        }
        let batch = &records[pos..pos + h.len];
        pos += h.len;
        let batch_end = h.end_offset();
        if batch_end <= walked.next_offset {
            continue;
        }
        let is_control = h.attributes & 0x20 != 0;
        if !is_control {
            let body = &batch[BATCH_HEADER_LEN..];
            let (count, base_offset) = (h.records, h.base_offset);
            let mut visit = |body: &[u8]| -> Result<()> {
                walk_records(body, count, base_offset, walked.next_offset, &mut |o, v| {
                    walked.records += 1;
                    f(o, v)
                })
            };
            match h.attributes & 0x7 {
                0 => visit(body)?,
                // Compressed batches cost one decompression buffer each (per batch, not per record).
                codec => {
                    let mut compressed = Bytes::copy_from_slice(body);
                    match codec {
                        1 => Gzip::decompress(&mut compressed, |b| visit(b))?,
                        2 => Snappy::decompress(&mut compressed, |b| visit(b))?,
                        3 => Lz4::decompress(&mut compressed, |b| visit(b))?,
                        4 => Zstd::decompress(&mut compressed, |b| visit(b))?,
                        _ => bail!("unknown compression codec {codec}"),
                    }
                }
            }
        }
        walked.next_offset = batch_end;
    }
    Ok(walked)
}

fn walk_records(
    mut body: &[u8],
    count: i32,
    base_offset: i64,
    from_offset: i64,
    f: &mut dyn FnMut(i64, &[u8]),
) -> Result<()> {
    for _ in 0..count {
        let mut p = 0;
        let len = varint::get(body, &mut p).ok_or_else(truncated)? as usize;
        let record = body.get(p..p + len).ok_or_else(truncated)?;
        body = &body[p + len..];
        let mut p = 1; // attributes
        varint::get(record, &mut p).ok_or_else(truncated)?; // timestamp delta
        let offset = base_offset + varint::get(record, &mut p).ok_or_else(truncated)?;
        let key_len = varint::get(record, &mut p).ok_or_else(truncated)?;
        p += key_len.max(0) as usize;
        let value_len = varint::get(record, &mut p).ok_or_else(truncated)?;
        let value = if value_len < 0 {
            &[][..]
        } else {
            record
                .get(p..p + value_len as usize)
                .ok_or_else(truncated)?
        };
        if offset >= from_offset {
            f(offset, value);
        }
    }
    Ok(())
}

fn truncated() -> anyhow::Error {
    anyhow::anyhow!("truncated record in batch")
}

/// The header fields of a v2 batch that this module reads.
struct Header {
    base_offset: i64,
    /// Bytes of the whole batch, header included.
    len: usize,
    magic: u8,
    attributes: i16,
    last_offset_delta: i32,
    records: i32,
}

impl Header {
    /// The header of the batch at the start of `bytes`, if the whole batch is there.
    fn parse(bytes: &[u8]) -> Option<Header> {
        let field = |at: usize| bytes[at..at + 4].try_into().unwrap();
        if bytes.len() < BATCH_HEADER_LEN {
            return None;
        }
        let len = usize::try_from(i32::from_be_bytes(field(8))).ok()? + 12;
        if len < BATCH_HEADER_LEN || len > bytes.len() {
            return None;
        }
        Some(Header {
            base_offset: i64::from_be_bytes(bytes[..8].try_into().unwrap()),
            len,
            magic: bytes[16],
            attributes: i16::from_be_bytes(bytes[21..23].try_into().unwrap()),
            last_offset_delta: i32::from_be_bytes(field(23)),
            records: i32::from_be_bytes(field(RECORD_COUNT_OFFSET)),
        })
    }

    /// The offset after the batch's last record.
    fn end_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta) + 1
    }
}

/// One v2 batch of a produced `records` field.
#[derive(Debug)]
pub struct ProducedBatch {
    /// The whole batch, header included: a slice of the request's buffer, not a copy.
    pub bytes: Bytes,
    /// Records it holds (the header's count).
    pub records: u64,
    /// Offsets it takes: its last offset delta + 1, the same figure the consumer's walk
    /// ends the batch at (the delta is inside the CRC, so a broker cannot rewrite it).
    pub offsets: i64,
}

/// Splits a produced `records` field (what the null broker keeps) into its batches,
/// reading only their headers; `None` unless it is a whole sequence of v2 batches.
pub fn split_batches(records: &Bytes) -> Option<Vec<ProducedBatch>> {
    let mut batches = Vec::new();
    let mut pos = 0;
    while pos < records.len() {
        let h = Header::parse(&records[pos..])?;
        if h.magic != 2 || h.last_offset_delta < 0 {
            return None;
        }
        batches.push(ProducedBatch {
            bytes: records.slice(pos..pos + h.len),
            records: h.records.max(0) as u64,
            offsets: i64::from(h.last_offset_delta) + 1,
        });
        pos += h.len;
    }
    Some(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::batch::{BatchBuilder, Compression};

    fn two_batches(compression: Compression) -> Vec<u8> {
        let mut out = Vec::new();
        let mut b = BatchBuilder::default();
        for base in [100i64, 103] {
            for i in 0..3u64 {
                b.push(
                    0,
                    Some(b"k"),
                    &[&(i + base as u64).to_le_bytes(), b"pad"],
                    &[],
                );
            }
            let start = out.len();
            b.finish_into(&mut out, compression).unwrap();
            out[start..start + 8].copy_from_slice(&base.to_be_bytes());
        }
        out
    }

    #[test]
    fn walks_offsets_and_values_from_a_start_offset() {
        for compression in [Compression::None, Compression::Zstd, Compression::Gzip] {
            let bytes = two_batches(compression);
            let mut seen = Vec::new();
            let w = for_each_record(&bytes, 101, |o, v| {
                seen.push((o, u64::from_le_bytes(v[..8].try_into().unwrap())))
            })
            .unwrap();
            assert_eq!(
                w,
                Walked {
                    records: 5,
                    next_offset: 106
                }
            );
            assert_eq!(seen, (101..106).map(|o| (o, o as u64)).collect::<Vec<_>>());
            let batches = split_batches(&Bytes::from(bytes)).unwrap();
            let counts: Vec<_> = batches.iter().map(|b| (b.records, b.offsets)).collect();
            assert_eq!(counts, [(3, 3), (3, 3)]);
        }
    }

    #[test]
    fn a_partial_trailing_batch_is_skipped_by_the_walk_and_refused_by_the_split() {
        let bytes = two_batches(Compression::None);
        let cut = &bytes[..bytes.len() - 5];
        let w = for_each_record(cut, 0, |_, _| {}).unwrap();
        assert_eq!(
            w,
            Walked {
                records: 3,
                next_offset: 103
            }
        );
        assert!(split_batches(&Bytes::copy_from_slice(cut)).is_none());
    }
}
