//! Kafka wire framing: size-prefixed frames, request headers, response encoding.
//!
//! Request bodies stay `Bytes` sliced from the frame (kafka-protocol keeps `records` that
//! way), so record batches reach the log without a copy.

pub mod fetch_frame;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::{AsyncRead, AsyncReadExt};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable};

use crate::errors::ErrorCode;

/// Why a connection is being closed instead of answered.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("connection closed by peer")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("frame of {size} bytes exceeds socket.request.max.bytes ({max})")]
    TooLarge { size: i64, max: usize },
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported (supported: v{min}..v{max})")]
    UnsupportedVersion {
        api: ApiKey,
        version: i16,
        min: i16,
        max: i16,
    },
}

/// Reads one size-prefixed frame. The size is checked before any allocation.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_size: usize,
) -> Result<Bytes, FrameError> {
    let mut size = [0u8; 4];
    match reader.read_exact(&mut size).await {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let size = i32::from_be_bytes(size) as i64;
    // A header alone is at least 8 bytes (api key, version, correlation id).
    if size < 8 || size as u64 > max_size as u64 {
        return Err(FrameError::TooLarge {
            size,
            max: max_size,
        });
    }
    let mut frame = BytesMut::zeroed(size as usize);
    reader.read_exact(&mut frame).await?;
    Ok(frame.freeze())
}

/// The fixed start of every request header: enough to route or refuse the request
/// before decoding the rest (whose layout depends on the version).
pub struct HeaderPrefix {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
}

/// Reads the header prefix; [`read_frame`] guarantees the frame holds at least 8 bytes.
pub fn header_prefix(frame: &[u8]) -> HeaderPrefix {
    HeaderPrefix {
        api_key: i16::from_be_bytes([frame[0], frame[1]]),
        api_version: i16::from_be_bytes([frame[2], frame[3]]),
        correlation_id: i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]),
    }
}

/// A request whose header has been decoded; the body is decoded next.
pub struct RequestFrame {
    pub api_key: ApiKey,
    pub header: RequestHeader,
    pub body: Bytes,
}

pub fn decode_header(api_key: ApiKey, mut frame: Bytes) -> Result<RequestFrame, FrameError> {
    let version = header_prefix(&frame).api_version;
    let header = RequestHeader::decode(&mut frame, api_key.request_header_version(version))
        .map_err(|e| FrameError::Malformed(format!("{api_key:?} header: {e}")))?;
    Ok(RequestFrame {
        api_key,
        header,
        body: frame,
    })
}

pub fn decode_body(frame: &mut RequestFrame) -> Result<RequestKind, FrameError> {
    let version = frame.header.request_api_version;
    let request = RequestKind::decode(frame.api_key, &mut frame.body, version)
        .map_err(|e| FrameError::Malformed(format!("{:?} v{version}: {e}", frame.api_key)))?;
    // Kafka ignores bytes after the body, and some clients send them (librdkafka 2.16's
    // Metadata v13 for all topics): accept them too.
    if frame.body.has_remaining() {
        tracing::debug!(
            "{:?} v{version}: ignoring {} trailing bytes",
            frame.api_key,
            frame.body.remaining()
        );
    }
    Ok(request)
}

/// Encodes a response frame (size, header, body) for the request's version.
pub fn encode_response(
    api_key: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &ResponseKind,
) -> anyhow::Result<Bytes> {
    // ApiVersions always answers with header v0 so that clients can parse it before they
    // know which versions we speak.
    let header_version = api_key.response_header_version(version);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    header.encode(&mut buf, header_version)?;
    response.encode(&mut buf, version)?;
    let size = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(buf.freeze())
}

/// The reply to an ApiVersions request of a version we do not serve: Kafka's v0 format
/// with UNSUPPORTED_VERSION and our ranges, so the client retries with one we do.
pub fn api_versions_fallback(correlation_id: i32, mut response: ApiVersionsResponse) -> Bytes {
    response.error_code = ErrorCode::UnsupportedVersion.code();
    encode_response(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(response),
    )
    .expect("an ApiVersions v0 response always encodes")
}
