//! Request framing shared by the load connections and the admin client: a 4-byte size
//! prefix, a request header, a body; responses are matched by correlation id.

use anyhow::{bail, Context, Result};
use bytes::{Buf, Bytes};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

/// The client id every request carries.
pub const CLIENT_ID: &str = "corelog-bench";

/// Starts a frame at the end of `buf`: reserves the size prefix and returns where it is.
pub fn begin_frame(buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    at
}

/// Writes the size prefix of the frame started at `at`.
pub fn end_frame(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at - 4) as i32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a Kafka `STRING` (i16 length, non-flexible).
pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as i16).to_be_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends a whole request (frame, header, body) encoded by kafka-protocol.
pub fn put_request<R: Request>(
    buf: &mut Vec<u8>,
    req: &R,
    version: i16,
    correlation_id: i32,
) -> Result<()> {
    let at = begin_frame(buf);
    let header = RequestHeader::default()
        .with_request_api_key(R::KEY)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
    header.encode(buf, R::header_version(version))?;
    req.encode(buf, version)?;
    end_frame(buf, at);
    Ok(())
}

/// Decodes a response frame (without its size prefix) to `R::Response`, checking the
/// correlation id.
pub fn decode_response<R: Request>(
    mut frame: Bytes,
    version: i16,
    correlation_id: i32,
) -> Result<R::Response> {
    let api = ApiKey::try_from(R::KEY).map_err(|_| anyhow::anyhow!("unknown api key"))?;
    let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))?;
    if header.correlation_id != correlation_id {
        bail!(
            "{api:?} response has correlation id {} where {correlation_id} was expected",
            header.correlation_id
        );
    }
    R::Response::decode(&mut frame, version).with_context(|| format!("decoding {api:?} v{version}"))
}

/// The correlation id at the start of a response frame.
pub fn correlation_id(frame: &[u8]) -> Option<i32> {
    frame.get(..4).map(|mut b| b.get_i32())
}
