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
    while records.len() - pos >= BATCH_HEADER_LEN {
        let batch = &records[pos..];
        let base_offset = i64::from_be_bytes(batch[0..8].try_into().unwrap());
        let total = 12 + i32::from_be_bytes(batch[8..12].try_into().unwrap()) as usize;
        if total < BATCH_HEADER_LEN || batch.len() < total {
            break;
        }
        if batch[16] != 2 {
            bail!("record batch magic {} (only v2 is supported)", batch[16]);
        }
        let batch = &batch[..total];
        let attributes = i16::from_be_bytes(batch[21..23].try_into().unwrap());
        let last_delta = i32::from_be_bytes(batch[23..27].try_into().unwrap());
        let count = i32::from_be_bytes(
            batch[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4]
                .try_into()
                .unwrap(),
        );
        pos += total;
        let batch_end = base_offset + i64::from(last_delta) + 1;
        if batch_end <= walked.next_offset {
            continue;
        }
        let is_control = attributes & 0x20 != 0;
        if !is_control {
            let body = &batch[BATCH_HEADER_LEN..];
            let mut visit = |body: &[u8]| -> Result<()> {
                walk_records(body, count, base_offset, walked.next_offset, &mut |o, v| {
                    walked.records += 1;
                    f(o, v)
                })
            };
            match attributes & 0x7 {
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

/// Sums the record counts of the batches in a produced `records` field (the null broker's
/// tally), reading only batch headers.
pub fn count_records(records: &[u8]) -> u64 {
    let mut pos = 0;
    let mut n = 0;
    while records.len() - pos >= BATCH_HEADER_LEN {
        let b = &records[pos..];
        let count = i32::from_be_bytes(
            b[RECORD_COUNT_OFFSET..RECORD_COUNT_OFFSET + 4]
                .try_into()
                .unwrap(),
        );
        n += count.max(0) as u64;
        pos += 12 + i32::from_be_bytes(b[8..12].try_into().unwrap()).max(0) as usize;
    }
    n
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
            assert_eq!(count_records(&bytes), 6);
        }
    }

    #[test]
    fn ignores_a_partial_trailing_batch() {
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
    }
}
