//! Record batch (magic v2) framing and validation.
//!
//! The log stores batches exactly as the producer sent them. The only fields
//! the broker rewrites are `baseOffset` and `partitionLeaderEpoch`, which sit
//! outside the CRC, so validation here never needs to decode a record.

use zerocopy::byteorder::big_endian::{I16, I32, I64, U32};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

/// `baseOffset` (8) + `batchLength` (4): bytes in front of what `batchLength` counts.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the fixed v2 batch header.
pub const HEADER_SIZE: usize = 61;
/// Smallest legal `batchLength`: the header without `LOG_OVERHEAD`, zero records.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_SIZE - LOG_OVERHEAD) as i32;
/// Byte position of `magic`; it is at the same place in v0, v1 and v2, which is
/// what lets us tell an old message set from a corrupt batch.
pub const MAGIC_OFFSET: usize = 16;
/// Byte position of `partitionLeaderEpoch`.
pub const LEADER_EPOCH_OFFSET: usize = 12;
/// The CRC covers everything from `attributes` to the end of the batch.
pub const CRC_START: usize = 21;
/// `timestamp` value meaning "none".
pub const NO_TIMESTAMP: i64 = -1;

const COMPRESSION_MASK: i16 = 0x07;
const MAX_COMPRESSION_CODEC: i16 = 4; // zstd
const TIMESTAMP_TYPE_BIT: i16 = 1 << 3;
const TRANSACTIONAL_BIT: i16 = 1 << 4;
const CONTROL_BIT: i16 = 1 << 5;
/// An uncompressed record is at least 7 bytes (length, attributes, timestamp
/// delta, offset delta, key length, value length, header count: one varint
/// byte each). Used to reject batches claiming far more records than they hold.
const MIN_UNCOMPRESSED_RECORD_SIZE: usize = 7;

/// Kafka error codes produced by this module.
pub mod error_code {
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const UNSUPPORTED_FOR_MESSAGE_FORMAT: i16 = 43;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const INVALID_RECORD: i16 = 87;
}

/// Zero-copy view of the 61-byte v2 record batch header (all fields big-endian).
#[derive(FromBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct RecordBatchHeader {
    pub base_offset: I64,
    pub batch_length: I32,
    pub partition_leader_epoch: I32,
    pub magic: i8,
    pub crc: U32,
    pub attributes: I16,
    pub last_offset_delta: I32,
    pub base_timestamp: I64,
    pub max_timestamp: I64,
    pub producer_id: I64,
    pub producer_epoch: I16,
    pub base_sequence: I32,
    pub records_count: I32,
}

const _: () = assert!(std::mem::size_of::<RecordBatchHeader>() == HEADER_SIZE);

impl RecordBatchHeader {
    /// Parses the header at the start of `bytes` (no alignment needed).
    pub fn parse(bytes: &[u8]) -> Option<&RecordBatchHeader> {
        RecordBatchHeader::ref_from_prefix(bytes)
            .ok()
            .map(|(h, _)| h)
    }

    /// Whole batch size including `LOG_OVERHEAD`, if `batchLength` is legal.
    pub fn total_size(&self) -> Option<usize> {
        let len = self.batch_length.get();
        if len < MIN_BATCH_LENGTH {
            return None;
        }
        usize::try_from(len).ok().map(|l| l + LOG_OVERHEAD)
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .get()
            .saturating_add(i64::from(self.last_offset_delta.get()))
    }

    /// Number of offsets the batch occupies (`lastOffsetDelta + 1`).
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta.get()) + 1
    }

    pub fn compression_codec(&self) -> i16 {
        self.attributes.get() & COMPRESSION_MASK
    }

    /// With LogAppendTime every record's timestamp is the batch `maxTimestamp`.
    pub fn is_log_append_time(&self) -> bool {
        self.attributes.get() & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes.get() & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes.get() & CONTROL_BIT != 0
    }
}

/// Why a record batch was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("no record batches in payload")]
    Empty,
    #[error("truncated record batch at byte {position}: need {needed} bytes, have {available}")]
    Truncated {
        position: usize,
        needed: usize,
        available: usize,
    },
    #[error("record batch at byte {position} has invalid batchLength {batch_length}")]
    InvalidLength { position: usize, batch_length: i32 },
    #[error("message format v{magic} at byte {position} is not supported (only v2)")]
    UnsupportedMagic { position: usize, magic: i8 },
    #[error("record batch at byte {position} has unknown magic {magic}")]
    InvalidMagic { position: usize, magic: i8 },
    #[error(
        "record batch at byte {position} is {size} bytes, larger than max.message.bytes {max}"
    )]
    TooLarge {
        position: usize,
        size: usize,
        max: usize,
    },
    #[error("record batch at byte {position} fails CRC: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        position: usize,
        stored: u32,
        computed: u32,
    },
    #[error("record batch at byte {position} uses unknown compression codec {codec}")]
    InvalidCompression { position: usize, codec: i16 },
    #[error("record batch at byte {position} has recordsCount {records_count} and lastOffsetDelta {last_offset_delta}")]
    InvalidRecordCount {
        position: usize,
        records_count: i32,
        last_offset_delta: i32,
    },
}

impl BatchError {
    /// The Kafka error code a produce response should carry for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            BatchError::UnsupportedMagic { .. } => error_code::UNSUPPORTED_FOR_MESSAGE_FORMAT,
            BatchError::TooLarge { .. } => error_code::MESSAGE_TOO_LARGE,
            BatchError::Empty | BatchError::InvalidRecordCount { .. } => error_code::INVALID_RECORD,
            BatchError::Truncated { .. }
            | BatchError::InvalidLength { .. }
            | BatchError::InvalidMagic { .. }
            | BatchError::CrcMismatch { .. }
            | BatchError::InvalidCompression { .. } => error_code::CORRUPT_MESSAGE,
        }
    }

    /// Human-readable message for the produce response `error_message`.
    pub fn message(&self) -> String {
        self.to_string()
    }
}

/// What a validated produce payload contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchesSummary {
    pub batch_count: usize,
    /// Offsets the payload will occupy: sum of `lastOffsetDelta + 1`.
    pub record_count: i64,
    /// Largest batch `maxTimestamp` (`NO_TIMESTAMP` if none has one).
    pub max_timestamp: i64,
    /// Index (0-based, in payload order) of the first batch holding `max_timestamp`.
    pub max_timestamp_batch: usize,
    pub total_bytes: usize,
}

/// Checks the framing of the batch starting at `position` in a buffer that has
/// `available` bytes from there on, given at least its first `MAGIC_OFFSET + 1`
/// bytes in `prefix`. Returns the batch's total size.
///
/// Magic is checked before the length because v0/v1 message sets have a
/// different layout: their "length" would be judged by the wrong rules.
pub fn check_frame(prefix: &[u8], position: usize, available: usize) -> Result<usize, BatchError> {
    let truncated = |needed| BatchError::Truncated {
        position,
        needed,
        available,
    };
    let magic = match prefix.get(MAGIC_OFFSET) {
        Some(&m) if available > MAGIC_OFFSET => m as i8,
        _ => return Err(truncated(MAGIC_OFFSET + 1)),
    };
    match magic {
        2 => {}
        0 | 1 => return Err(BatchError::UnsupportedMagic { position, magic }),
        _ => return Err(BatchError::InvalidMagic { position, magic }),
    }
    let header = match RecordBatchHeader::parse(prefix) {
        Some(h) if available >= HEADER_SIZE => h,
        _ => return Err(truncated(HEADER_SIZE)),
    };
    let size = header.total_size().ok_or(BatchError::InvalidLength {
        position,
        batch_length: header.batch_length.get(),
    })?;
    if size > available {
        return Err(truncated(size));
    }
    Ok(size)
}

/// Checks the header fields that do not depend on the surrounding payload:
/// compression codec and the record count / offset delta relation.
pub fn check_fields(
    header: &RecordBatchHeader,
    size: usize,
    position: usize,
) -> Result<(), BatchError> {
    let codec = header.compression_codec();
    if codec > MAX_COMPRESSION_CODEC {
        return Err(BatchError::InvalidCompression { position, codec });
    }
    let count = header.records_count.get();
    let delta = header.last_offset_delta.get();
    let bad_count = || BatchError::InvalidRecordCount {
        position,
        records_count: count,
        last_offset_delta: delta,
    };
    // A negative delta would make the batch end before it starts; offsets
    // could then never be assigned consistently, control batch or not.
    if delta < 0 || count < 0 {
        return Err(bad_count());
    }
    if header.is_control() {
        return Ok(());
    }
    if count < 1 || i64::from(delta) != i64::from(count) - 1 {
        return Err(bad_count());
    }
    // Without compression, the records must physically fit in the batch;
    // this stops a tiny batch from claiming (and consuming) 2^31 offsets.
    let records_bytes = size.saturating_sub(HEADER_SIZE);
    let count = count as usize; // non-negative, checked above
    if codec == 0 && count > records_bytes / MIN_UNCOMPRESSED_RECORD_SIZE {
        return Err(bad_count());
    }
    Ok(())
}

/// CRC-32C of a complete batch as stored in its header (from `attributes` on).
pub fn compute_crc(batch: &[u8]) -> u32 {
    batch.get(CRC_START..).map_or(0, crc32c::crc32c)
}

/// Validates one batch at the start of `buf` (`position` is only for messages).
fn validate_one(
    buf: &[u8],
    position: usize,
    max_message_bytes: usize,
) -> Result<(&RecordBatchHeader, usize), BatchError> {
    let size = check_frame(buf, position, buf.len())?;
    if size > max_message_bytes {
        return Err(BatchError::TooLarge {
            position,
            size,
            max: max_message_bytes,
        });
    }
    // check_frame guarantees both a full header and `size` bytes.
    let (header, batch) = match (RecordBatchHeader::parse(buf), buf.get(..size)) {
        (Some(h), Some(b)) => (h, b),
        _ => {
            return Err(BatchError::Truncated {
                position,
                needed: size,
                available: buf.len(),
            })
        }
    };
    let computed = compute_crc(batch);
    if computed != header.crc.get() {
        return Err(BatchError::CrcMismatch {
            position,
            stored: header.crc.get(),
            computed,
        });
    }
    check_fields(header, size, position)?;
    Ok((header, size))
}

/// Validates a produce payload of one or more concatenated v2 batches.
///
/// Nothing is copied or decoded; each batch's framing, magic, size limit, CRC
/// and record count are checked. Never panics, whatever the input.
pub fn validate_batches(
    records: &[u8],
    max_message_bytes: usize,
) -> Result<BatchesSummary, BatchError> {
    if records.is_empty() {
        return Err(BatchError::Empty);
    }
    let mut summary = BatchesSummary {
        batch_count: 0,
        record_count: 0,
        max_timestamp: NO_TIMESTAMP,
        max_timestamp_batch: 0,
        total_bytes: records.len(),
    };
    let mut position = 0;
    while position < records.len() {
        let (header, size) = validate_one(&records[position..], position, max_message_bytes)?;
        let max_ts = header.max_timestamp.get();
        if summary.batch_count == 0 || max_ts > summary.max_timestamp {
            summary.max_timestamp = max_ts;
            summary.max_timestamp_batch = summary.batch_count;
        }
        summary.batch_count += 1;
        // offset_count <= 2^31 and the payload holds < 2^64/61 batches: no overflow.
        summary.record_count = summary.record_count.saturating_add(header.offset_count());
        position += size;
    }
    Ok(summary)
}

/// Iterates over the batches of a payload already accepted by
/// [`validate_batches`]; stops at the first malformed frame instead of panicking.
pub(crate) struct BatchIter<'a> {
    rest: &'a [u8],
}

impl<'a> BatchIter<'a> {
    pub(crate) fn new(records: &'a [u8]) -> Self {
        BatchIter { rest: records }
    }
}

impl<'a> Iterator for BatchIter<'a> {
    type Item = (&'a RecordBatchHeader, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let header = RecordBatchHeader::parse(self.rest)?;
        let size = header.total_size()?;
        if size > self.rest.len() {
            return None;
        }
        let (batch, rest) = self.rest.split_at(size);
        self.rest = rest;
        Some((header, batch))
    }
}

#[cfg(test)]
pub(crate) mod test_util {
    use bytes::{Bytes, BytesMut};
    use kafka_protocol::records::{
        Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };

    /// Encodes one v2 batch of `timestamps.len()` records (offsets from 0, as a
    /// producer sends them) with values of `value_len` bytes.
    pub fn batch_with(timestamps: &[i64], value_len: usize, compression: Compression) -> Bytes {
        let records: Vec<Record> = timestamps
            .iter()
            .enumerate()
            .map(|(i, &ts)| Record {
                transactional: false,
                control: false,
                partition_leader_epoch: 0,
                producer_id: -1,
                producer_epoch: -1,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                // The encoder starts a new batch when offset - sequence
                // changes; this keeps one batch with baseSequence -1.
                sequence: i as i32 - 1,
                timestamp: ts,
                key: None,
                value: Some(Bytes::from(vec![b'v'; value_len])),
                headers: Default::default(),
                delete_horizon: false,
            })
            .collect();
        let mut buf = BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression,
        };
        RecordBatchEncoder::encode(&mut buf, &records, &options).expect("encode batch");
        buf.freeze()
    }

    /// Uncompressed batch of `n` records, all with timestamp `ts`.
    pub fn batch(n: usize, ts: i64, value_len: usize) -> Bytes {
        batch_with(&vec![ts; n], value_len, Compression::None)
    }

    pub fn concat(parts: &[Bytes]) -> Bytes {
        let mut buf = BytesMut::new();
        for p in parts {
            buf.extend_from_slice(p);
        }
        buf.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::{batch, batch_with, concat};
    use super::*;
    use kafka_protocol::records::Compression;

    const MAX: usize = 1 << 20;

    /// Hand-assembles an uncompressed batch holding one record with value "vv",
    /// so the CRC and layout are checked independently of the encoder.
    fn hand_built_batch() -> Vec<u8> {
        // Record: length, attributes, tsDelta, offsetDelta, keyLen=-1, valueLen=2, "hi", headers=0
        let record: [u8; 9] = [0x10, 0x00, 0x00, 0x00, 0x01, 0x04, b'v', b'v', 0x00];
        let mut body = Vec::new(); // from attributes to the end: what the CRC covers
        body.extend_from_slice(&0i16.to_be_bytes()); // attributes
        body.extend_from_slice(&0i32.to_be_bytes()); // lastOffsetDelta
        body.extend_from_slice(&1_000i64.to_be_bytes()); // baseTimestamp
        body.extend_from_slice(&1_000i64.to_be_bytes()); // maxTimestamp
        body.extend_from_slice(&(-1i64).to_be_bytes()); // producerId
        body.extend_from_slice(&(-1i16).to_be_bytes()); // producerEpoch
        body.extend_from_slice(&(-1i32).to_be_bytes()); // baseSequence
        body.extend_from_slice(&1i32.to_be_bytes()); // recordsCount
        body.extend_from_slice(&record);
        let mut out = Vec::new();
        out.extend_from_slice(&0i64.to_be_bytes()); // baseOffset
        let batch_length = (4 + 1 + 4 + body.len()) as i32;
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&0i32.to_be_bytes()); // partitionLeaderEpoch
        out.push(2); // magic
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn crc32c_known_vector() {
        // The standard CRC-32C check value (RFC 3720 / iSCSI).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn hand_built_batch_matches_encoder_and_validates() {
        let hand = hand_built_batch();
        let encoded = batch_with(&[1_000], 2, Compression::None);
        assert_eq!(hand, encoded.to_vec());
        let summary = validate_batches(&hand, MAX).unwrap();
        assert_eq!(summary.batch_count, 1);
        assert_eq!(summary.record_count, 1);
        assert_eq!(summary.max_timestamp, 1_000);
        let header = RecordBatchHeader::parse(&hand).unwrap();
        assert_eq!(header.crc.get(), compute_crc(&hand));
        assert_eq!(header.total_size(), Some(hand.len()));
    }

    #[test]
    fn good_batch() {
        let b = batch(5, 42, 10);
        let s = validate_batches(&b, MAX).unwrap();
        assert_eq!(
            s,
            BatchesSummary {
                batch_count: 1,
                record_count: 5,
                max_timestamp: 42,
                max_timestamp_batch: 0,
                total_bytes: b.len(),
            }
        );
    }

    #[test]
    fn several_batches() {
        let payload = concat(&[batch(2, 10, 5), batch(3, 30, 5), batch(1, 20, 5)]);
        let s = validate_batches(&payload, MAX).unwrap();
        assert_eq!(s.batch_count, 3);
        assert_eq!(s.record_count, 6);
        assert_eq!(s.max_timestamp, 30);
        assert_eq!(s.max_timestamp_batch, 1);
        assert_eq!(BatchIter::new(&payload).count(), 3);
    }

    #[test]
    fn bad_crc() {
        let mut b = batch(3, 1, 10).to_vec();
        let last = b.len() - 1;
        b[last] ^= 0x01;
        let err = validate_batches(&b, MAX).unwrap_err();
        assert!(matches!(err, BatchError::CrcMismatch { .. }), "{err}");
        assert_eq!(err.kafka_error_code(), error_code::CORRUPT_MESSAGE);
    }

    #[test]
    fn offset_and_epoch_are_outside_crc() {
        let mut b = batch(3, 1, 10).to_vec();
        b[..8].copy_from_slice(&12_345i64.to_be_bytes());
        b[12..16].copy_from_slice(&7i32.to_be_bytes());
        validate_batches(&b, MAX).unwrap();
    }

    #[test]
    fn old_magic_is_unsupported() {
        let mut b = batch(1, 1, 10).to_vec();
        b[MAGIC_OFFSET] = 1;
        let err = validate_batches(&b, MAX).unwrap_err();
        assert_eq!(
            err.kafka_error_code(),
            error_code::UNSUPPORTED_FOR_MESSAGE_FORMAT
        );
        b[MAGIC_OFFSET] = 7;
        let err = validate_batches(&b, MAX).unwrap_err();
        assert_eq!(
            err,
            BatchError::InvalidMagic {
                position: 0,
                magic: 7
            }
        );
        assert_eq!(err.kafka_error_code(), error_code::CORRUPT_MESSAGE);
    }

    #[test]
    fn truncated_batch() {
        let b = batch(3, 1, 10);
        for cut in [1, 16, 17, 60, 61, b.len() - 1] {
            let err = validate_batches(&b[..cut], MAX).unwrap_err();
            assert!(
                matches!(err, BatchError::Truncated { .. }),
                "cut {cut}: {err}"
            );
            assert_eq!(err.kafka_error_code(), error_code::CORRUPT_MESSAGE);
        }
        // A complete batch followed by a partial one is rejected as a whole.
        let payload = concat(&[b.clone(), b.slice(..30)]);
        let err = validate_batches(&payload, MAX).unwrap_err();
        assert!(matches!(err, BatchError::Truncated { position, .. } if position == b.len()));
    }

    #[test]
    fn too_large() {
        let b = batch(2, 1, 100);
        let err = validate_batches(&b, b.len() - 1).unwrap_err();
        assert_eq!(err.kafka_error_code(), error_code::MESSAGE_TOO_LARGE);
        validate_batches(&b, b.len()).unwrap();
    }

    #[test]
    fn empty_payload_and_bad_counts() {
        assert_eq!(
            validate_batches(&[], MAX).unwrap_err().kafka_error_code(),
            87
        );
        // lastOffsetDelta != recordsCount - 1, with a CRC fixed up so only the count is wrong.
        let mut b = batch(3, 1, 10).to_vec();
        b[23..27].copy_from_slice(&5i32.to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = validate_batches(&b, MAX).unwrap_err();
        assert_eq!(err.kafka_error_code(), error_code::INVALID_RECORD);
    }

    #[test]
    fn compressed_batch_validates() {
        let b = batch_with(&[5, 9, 7], 50, Compression::Gzip);
        let s = validate_batches(&b, MAX).unwrap();
        assert_eq!((s.record_count, s.max_timestamp), (3, 9));
    }

    /// Tiny xorshift generator: deterministic, no extra crate.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n.max(1) as u64) as usize
        }
    }

    #[test]
    fn fuzz_never_panics() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let good = concat(&[batch(3, 1, 20), batch(2, 5, 7)]);
        for _ in 0..20_000 {
            let mut input = match rng.below(3) {
                // pure noise
                0 => (0..rng.below(200))
                    .map(|_| rng.next() as u8)
                    .collect::<Vec<_>>(),
                // truncated valid payload
                1 => good[..rng.below(good.len() + 1)].to_vec(),
                // valid payload with random byte flips
                _ => good.to_vec(),
            };
            for _ in 0..rng.below(4) {
                if !input.is_empty() {
                    let i = rng.below(input.len());
                    input[i] ^= rng.next() as u8;
                }
            }
            // Make the magic byte plausible half the time, to get past that check.
            if input.len() > MAGIC_OFFSET && rng.below(2) == 0 {
                input[MAGIC_OFFSET] = 2;
            }
            if let Ok(s) = validate_batches(&input, rng.below(2 * MAX)) {
                assert!(s.batch_count >= 1);
            }
            let _ = BatchIter::new(&input).count();
        }
    }
}
