//! One TCP connection to one broker: size-prefixed frames, correlation ids, and the API
//! versions the broker serves (asked once, when connecting).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{
    Decodable, Encodable, HeaderVersion, Message, Request, StrBytes, VersionRange,
};

use crate::error::{check, Error, Result};
use crate::versions::ApiVersions;

/// Frames larger than this are refused: a size that large means the stream is not Kafka.
const MAX_FRAME_BYTES: usize = 100 << 20;

/// What every connection of a client shares.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bounds connecting and each request's answer.
    pub timeout: Duration,
    pub client_id: String,
}

pub struct Connection {
    addr: String,
    stream: TcpStream,
    timeout: Duration,
    client_id: StrBytes,
    next_correlation_id: i32,
    versions: ApiVersions,
    /// The outgoing frame, reused so that requests do not allocate once it has grown.
    out: BytesMut,
}

impl Connection {
    /// Connects and asks the broker which API versions it serves.
    pub fn open(addr: &str, options: &Options) -> Result<Connection> {
        let stream = connect(addr, options.timeout)?;
        let mut connection = Connection {
            addr: addr.to_string(),
            stream,
            timeout: options.timeout,
            client_id: StrBytes::from_string(options.client_id.clone()),
            next_correlation_id: 0,
            versions: ApiVersions::default(),
            out: BytesMut::with_capacity(4096),
        };
        connection.versions = connection.ask_api_versions()?;
        Ok(connection)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn api_versions(&self) -> &ApiVersions {
        &self.versions
    }

    /// The version to send `R` in: the highest both sides speak within `wanted` (the
    /// versions the caller's request building handles).
    pub fn version_for<R: Request>(&self, wanted: impl Into<Wanted>) -> Result<i16> {
        let client = R::VERSIONS.intersect(&wanted.into().0);
        self.versions
            .negotiate(R::KEY, client)
            .map_err(|broker| self.unsupported(R::KEY, broker, client))
    }

    /// Negotiates the version, builds the request for it and waits for the answer.
    pub fn request<R: Request>(
        &mut self,
        wanted: impl Into<Wanted>,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response> {
        let version = self.version_for::<R>(wanted)?;
        self.call(version, &build(version))
    }

    /// Sends a request in `version` and waits for its answer.
    pub fn call<R: Request>(&mut self, version: i16, request: &R) -> Result<R::Response> {
        let mut body = self.exchange(version, request)?;
        self.decode::<R::Response>(&mut body, version)
    }

    /// Sends a request the broker does not answer (a produce with acks=0).
    pub fn send<R: Request>(&mut self, version: i16, request: &R) -> Result<i32> {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = correlation_id.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        encode_frame(&mut self.out, &header, request, version).map_err(|e| self.protocol(e))?;
        self.stream
            .write_all(&self.out)
            .map_err(|e| self.io_error(e))?;
        Ok(correlation_id)
    }

    /// Sends a request and returns its answer's body, after the response header.
    fn exchange<R: Request>(&mut self, version: i16, request: &R) -> Result<Bytes> {
        let sent = self.send(version, request)?;
        let mut frame = read_frame(&mut self.stream).map_err(|e| self.io_error(e))?;
        let header_version = R::Response::header_version(version);
        let header =
            ResponseHeader::decode(&mut frame, header_version).map_err(|e| self.protocol(e))?;
        if header.correlation_id != sent {
            return Err(self.protocol(format!(
                "answer to request {} arrived for request {sent}",
                header.correlation_id
            )));
        }
        Ok(frame)
    }

    fn decode<T: Decodable>(&self, body: &mut Bytes, version: i16) -> Result<T> {
        T::decode(body, version).map_err(|e| self.protocol(format!("undecodable answer: {e}")))
    }

    /// ApiVersions in the newest version this client knows. A broker that does not know
    /// that version answers in v0 with UNSUPPORTED_VERSION and its own range, so the
    /// request is sent again in the highest version both know.
    fn ask_api_versions(&mut self) -> Result<ApiVersions> {
        let known = ApiVersionsRequest::VERSIONS;
        let mut response = self.api_versions_call(known.max)?;
        if response.error_code == ResponseError::UnsupportedVersion.code() {
            let version = ApiVersions::from_response(&response)
                .negotiate(ApiVersionsRequest::KEY, known)
                .map_err(|broker| self.unsupported(ApiVersionsRequest::KEY, broker, known))?;
            response = self.api_versions_call(version)?;
        }
        check(response.error_code, None, || {
            format!("ApiVersions from {}", self.addr)
        })?;
        Ok(ApiVersions::from_response(&response))
    }

    fn api_versions_call(&mut self, version: i16) -> Result<ApiVersionsResponse> {
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("corelog-client"))
            .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));
        let mut body = self.exchange(version, &request)?;
        // Every version starts with the error code; UNSUPPORTED_VERSION comes in v0.
        let unsupported =
            body.len() >= 2 && (&body[..2]).get_i16() == ResponseError::UnsupportedVersion.code();
        self.decode(&mut body, if unsupported { 0 } else { version })
    }

    fn unsupported(
        &self,
        api_key: i16,
        broker: Option<VersionRange>,
        client: VersionRange,
    ) -> Error {
        Error::Unsupported {
            addr: self.addr.clone(),
            api_key,
            broker,
            client,
        }
    }

    fn io_error(&self, source: std::io::Error) -> Error {
        io_error(&self.addr, self.timeout, source)
    }

    fn protocol(&self, message: impl std::fmt::Display) -> Error {
        Error::Protocol {
            addr: self.addr.clone(),
            message: message.to_string(),
        }
    }
}

/// The versions a caller's request building handles: `Wanted::from(4..=12)` or `..`.
pub struct Wanted(VersionRange);

impl From<std::ops::RangeInclusive<i16>> for Wanted {
    fn from(range: std::ops::RangeInclusive<i16>) -> Self {
        Wanted(VersionRange {
            min: *range.start(),
            max: *range.end(),
        })
    }
}

impl From<std::ops::RangeFrom<i16>> for Wanted {
    fn from(range: std::ops::RangeFrom<i16>) -> Self {
        Wanted::from(range.start..=i16::MAX)
    }
}

impl From<std::ops::RangeFull> for Wanted {
    fn from(_: std::ops::RangeFull) -> Self {
        Wanted::from(0..)
    }
}

/// Connects to the first address `addr` resolves to that accepts, within `timeout` each.
fn connect(addr: &str, timeout: Duration) -> Result<TcpStream> {
    let connect_error = |cause| Error::Connect {
        addr: addr.to_string(),
        cause,
    };
    let mut last_error = None;
    for resolved in addr.to_socket_addrs().map_err(connect_error)? {
        match TcpStream::connect_timeout(&resolved, timeout) {
            Ok(stream) => {
                let configure = || -> std::io::Result<()> {
                    stream.set_nodelay(true)?;
                    stream.set_read_timeout(Some(timeout))?;
                    stream.set_write_timeout(Some(timeout))
                };
                configure().map_err(connect_error)?;
                return Ok(stream);
            }
            Err(e) => last_error = Some(e),
        }
    }
    Err(connect_error(last_error.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the name resolves to no address",
        )
    })))
}

fn io_error(addr: &str, timeout: Duration, source: std::io::Error) -> Error {
    use std::io::ErrorKind;
    match source.kind() {
        ErrorKind::WouldBlock | ErrorKind::TimedOut => Error::Timeout {
            addr: addr.to_string(),
            timeout_ms: timeout.as_millis(),
        },
        ErrorKind::UnexpectedEof => Error::Io {
            addr: addr.to_string(),
            cause: std::io::Error::new(
                ErrorKind::UnexpectedEof,
                "the broker closed the connection",
            ),
        },
        _ => Error::Io {
            addr: addr.to_string(),
            cause: source,
        },
    }
}

/// Encodes `header` and `body` as one frame into `out` (cleared first): a 4-byte
/// big-endian size, then the header in the version the API's `version` implies, then the
/// body.
pub fn encode_frame<R: Encodable + HeaderVersion>(
    out: &mut BytesMut,
    header: &RequestHeader,
    body: &R,
    version: i16,
) -> anyhow::Result<()> {
    out.clear();
    out.put_i32(0); // the size, patched below once known
    header.encode(out, R::header_version(version))?;
    body.encode(out, version)?;
    let size = i32::try_from(out.len() - 4)?;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Reads one frame and returns its body (without the size).
pub fn read_frame(reader: &mut impl Read) -> std::io::Result<Bytes> {
    let mut size = [0u8; 4];
    reader.read_exact(&mut size)?;
    let size = i32::from_be_bytes(size);
    let size = usize::try_from(size)
        .ok()
        .filter(|&size| size <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("frame size {size} is not a Kafka frame"),
            )
        })?;
    let mut body = vec![0u8; size];
    reader.read_exact(&mut body)?;
    Ok(body.into())
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;
    use std::net::TcpListener;

    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{
        ApiKey, IncrementalAlterConfigsRequest, MetadataRequest, MetadataResponse,
    };

    use super::*;

    fn options() -> Options {
        Options {
            timeout: Duration::from_secs(5),
            client_id: "tests".into(),
        }
    }

    #[test]
    fn frames_carry_size_header_and_body() {
        let header = RequestHeader::default()
            .with_request_api_key(MetadataRequest::KEY)
            .with_request_api_version(12)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("tests")));
        let request = MetadataRequest::default().with_allow_auto_topic_creation(false);
        let mut out = BytesMut::from(&b"stale bytes from an earlier request"[..]);
        encode_frame(&mut out, &header, &request, 12).unwrap();
        let size = i32::from_be_bytes(out[..4].try_into().unwrap());
        assert_eq!(size as usize, out.len() - 4);

        let mut frame = read_frame(&mut Cursor::new(out.to_vec())).unwrap();
        let decoded =
            RequestHeader::decode(&mut frame, MetadataRequest::header_version(12)).unwrap();
        assert_eq!(decoded, header);
        assert_eq!(MetadataRequest::decode(&mut frame, 12).unwrap(), request);
        assert!(frame.is_empty());
    }

    #[test]
    fn frames_of_impossible_sizes_are_refused() {
        for size in [-1i32, (MAX_FRAME_BYTES + 1) as i32] {
            let error = read_frame(&mut Cursor::new(size.to_be_bytes().to_vec())).unwrap_err();
            assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        }
        let truncated = [0, 0, 0, 9, 1, 2];
        let error = read_frame(&mut Cursor::new(truncated.to_vec())).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::UnexpectedEof);
    }

    /// Reads one request from a fake broker's side: its header and body bytes.
    fn receive(stream: &mut TcpStream, api: ApiKey) -> (RequestHeader, Bytes) {
        let mut frame = read_frame(stream).unwrap();
        let version = (&frame[2..4]).get_i16();
        let header =
            RequestHeader::decode(&mut frame, api.request_header_version(version)).unwrap();
        assert_eq!(header.request_api_key, api as i16);
        (header, frame)
    }

    fn respond<T: Encodable + HeaderVersion>(
        stream: &mut TcpStream,
        correlation_id: i32,
        version: i16,
        body: &T,
    ) {
        let mut out = BytesMut::new();
        out.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation_id)
            .encode(&mut out, T::header_version(version))
            .unwrap();
        body.encode(&mut out, version).unwrap();
        let size = (out.len() - 4) as i32;
        out[..4].copy_from_slice(&size.to_be_bytes());
        stream.write_all(&out).unwrap();
    }

    fn advertised(apis: &[(ApiKey, i16, i16)]) -> ApiVersionsResponse {
        ApiVersionsResponse::default().with_api_keys(
            apis.iter()
                .map(|&(api, min, max)| {
                    ApiVersion::default()
                        .with_api_key(api as i16)
                        .with_min_version(min)
                        .with_max_version(max)
                })
                .collect(),
        )
    }

    /// A broker that knows ApiVersions only up to v2 answers the client's v4 in v0 with
    /// UNSUPPORTED_VERSION; the client retries in v2, then speaks the highest common
    /// version of each API and refuses APIs the broker lacks.
    #[test]
    fn negotiates_versions_with_an_older_broker() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let apis = [(ApiKey::ApiVersions, 0, 2), (ApiKey::Metadata, 1, 11)];

            let (header, _) = receive(&mut stream, ApiKey::ApiVersions);
            assert_eq!(header.request_api_version, ApiVersionsRequest::VERSIONS.max);
            let refusal =
                advertised(&apis).with_error_code(ResponseError::UnsupportedVersion.code());
            respond(&mut stream, header.correlation_id, 0, &refusal);

            let (header, _) = receive(&mut stream, ApiKey::ApiVersions);
            assert_eq!(header.request_api_version, 2);
            respond(&mut stream, header.correlation_id, 2, &advertised(&apis));

            let (header, mut body) = receive(&mut stream, ApiKey::Metadata);
            assert_eq!(header.request_api_version, 11);
            MetadataRequest::decode(&mut body, 11).unwrap();
            let answer = MetadataResponse::default().with_cluster_id(Some("c1".into()));
            respond(&mut stream, header.correlation_id, 11, &answer);
        });

        let mut connection = Connection::open(&addr, &options()).unwrap();
        assert_eq!(connection.version_for::<MetadataRequest>(4..).unwrap(), 11);
        let lacking = connection.version_for::<IncrementalAlterConfigsRequest>(..);
        assert!(matches!(
            lacking,
            Err(Error::Unsupported {
                broker: None,
                api_key: 44,
                ..
            })
        ));
        let too_new = connection.version_for::<MetadataRequest>(12..).unwrap_err();
        assert!(too_new
            .to_string()
            .contains("serves Metadata (API key 3) in versions 1..11"));

        let answer = connection
            .request(4.., |_| MetadataRequest::default())
            .unwrap();
        assert_eq!(answer.cluster_id.as_deref(), Some("c1"));
        broker.join().unwrap();
    }

    #[test]
    fn an_answer_to_another_request_is_an_error() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let (header, _) = receive(&mut stream, ApiKey::ApiVersions);
            let answer = advertised(&[(ApiKey::ApiVersions, 0, 4)]);
            respond(&mut stream, header.correlation_id + 1, 4, &answer);
        });
        let error = Connection::open(&addr, &options()).err().unwrap();
        assert!(matches!(error, Error::Protocol { .. }), "{error}");
        broker.join().unwrap();
    }

    #[test]
    fn a_silent_broker_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let quick = Options {
            timeout: Duration::from_millis(200),
            ..options()
        };
        let error = Connection::open(&addr, &quick).err().unwrap();
        assert!(matches!(error, Error::Timeout { .. }), "{error}");
        drop(listener);
    }
}
