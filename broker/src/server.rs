//! Per-shard TCP serving: every shard binds the listen address with SO_REUSEPORT (glommio
//! sets it), so the kernel spreads connections over shards.
//!
//! A connection is served by two tasks: the reader decodes frames and spawns one handler
//! task per request, passing the task handles in arrival order through a bounded queue;
//! the writer awaits them in that order. Requests on one connection thus run concurrently
//! (pipelining) while responses leave in request order, and the queue bound limits the
//! requests in flight per connection. Because of that order, a fetch long poll ends early
//! once a later request's answer is ready ([`AnswerOrder`]): waiting on would only hold
//! that answer back. Followers rely on this to keep several fetches in flight on one
//! connection.

use std::cell::Cell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::Arc;

use bytes::Bytes;
use corelog_io::{TcpListener, TcpStream};
use futures::channel::mpsc;
use futures::io::BufReader;
use futures::{AsyncReadExt, AsyncWriteExt, SinkExt, StreamExt};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use crate::handlers::{self, ClientInfo, RequestContext};
use crate::metrics::ShardMetrics;
use crate::protocol::fetch_frame::Part;
use crate::protocol::{self, FrameError};
use crate::shard::Shard;

/// Requests one connection may have in flight; the reader stops reading past this.
const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;
/// Read buffer per connection: most produce frames fit in one read.
const READ_BUFFER_BYTES: usize = 64 * 1024;

pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                corelog_io::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if shard.connections.get() >= shard.config.max_connections {
            tracing::warn!(
                "closing a new connection: {} connections already open on shard {} (max.connections)",
                shard.connections.get(),
                shard.id
            );
            continue;
        }
        let shard = shard.clone();
        corelog_io::spawn_local(async move {
            shard.connections.set(shard.connections.get() + 1);
            let peer: Arc<str> = stream
                .peer_addr()
                .map(|a| format!("/{}", a.ip()))
                .unwrap_or_default()
                .into();
            match serve_connection(shard.clone(), stream, peer.clone()).await {
                Ok(()) | Err(FrameError::Closed) => tracing::debug!(%peer, "connection closed"),
                // Clients that exit without closing (kill, crash) reset; nothing to report.
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    tracing::debug!(%peer, "connection reset by client")
                }
                Err(e) => tracing::warn!(%peer, "closing connection: {e}"),
            }
            shard.connections.set(shard.connections.get() - 1);
        })
        .detach();
    }
}

async fn serve_connection(
    shard: Rc<Shard>,
    stream: TcpStream,
    peer: Arc<str>,
) -> Result<(), FrameError> {
    stream
        .set_nodelay(true)
        .map_err(|e| FrameError::Io(e.into()))?;
    // For sendfile, which needs the socket itself; the connection outlives every send.
    let socket = stream.as_raw_fd();
    let (reader, mut writer) = stream.split();
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
    let (mut queue, mut responses) =
        mpsc::channel::<corelog_io::Task<Reply>>(MAX_IN_FLIGHT_PER_CONNECTION);

    let writer_task = corelog_io::spawn_local(async move {
        while let Some(response) = responses.next().await {
            match response.await {
                Reply::Frame(frame) => writer.write_all(&frame).await?,
                Reply::Parts(parts) => {
                    for part in parts {
                        match part {
                            Part::Bytes(bytes) => writer.write_all(&bytes).await?,
                            Part::File(slice) => {
                                corelog_io::sendfile::send_file(
                                    socket,
                                    slice.file,
                                    slice.position,
                                    slice.len,
                                )
                                .await?
                            }
                        }
                    }
                }
                Reply::Nothing => {}
                Reply::Close => break,
            }
        }
        writer.flush().await
    });

    let order = Rc::new(AnswerOrder::default());
    let mut sequence = 0u64;
    let max_frame = shard.config.socket_request_max_bytes;
    // One stop future for the connection's life, polled alongside each read.
    let mut stopping = std::pin::pin!(shard.stopping());
    let outcome = loop {
        let read = std::pin::pin!(protocol::read_frame(&mut reader, max_frame));
        let frame = match futures::future::select(read, stopping.as_mut()).await {
            futures::future::Either::Left((Ok(frame), _)) => frame,
            futures::future::Either::Left((Err(e), _)) => break Err(e),
            // The broker is stopping: answer what is in flight, read nothing more.
            futures::future::Either::Right(_) => break Ok(()),
        };
        sequence += 1;
        let place = QueuePlace {
            order: order.clone(),
            sequence,
        };
        let reply = match prepare(&shard, &peer, frame, place.clone()) {
            Ok(Prepared::Immediate(response)) => {
                futures::future::Either::Left(futures::future::ready(Reply::Frame(response)))
            }
            Ok(Prepared::Handle(handle)) => futures::future::Either::Right(answer(handle)),
            Err(e) => break Err(e),
        };
        let task = corelog_io::spawn_local(async move {
            let reply = reply.await;
            place.order.answered(place.sequence);
            reply
        });
        if queue.send(task).await.is_err() {
            // The writer stopped: the socket failed.
            break Ok(());
        }
    };
    drop(queue);
    // Answer what was already accepted before closing, as Kafka does.
    let written = writer_task.await;
    outcome?;
    written.map_err(FrameError::Io)
}

/// Runs a decoded request's handler and encodes its answer.
async fn answer(handle: Handle) -> Reply {
    let Handle {
        ctx,
        request,
        api_key,
        correlation_id,
        respond,
    } = handle;
    let started = std::time::Instant::now();
    let request = match (*request, ctx.shard.config.fetch_zero_copy_min_bytes) {
        (RequestKind::Fetch(fetch), Some(copy_below)) => {
            return zero_copy_fetch(&ctx, fetch, correlation_id, copy_below, started).await;
        }
        (request, _) => request,
    };
    let Some(response) = handlers::dispatch(&ctx, request).await else {
        return Reply::Close;
    };
    record_metrics(&ctx.shard.metrics, api_key, started.elapsed(), &response);
    if !respond {
        return Reply::Nothing;
    }
    match protocol::encode_response(api_key, ctx.api_version, correlation_id, &response) {
        Ok(frame) => Reply::Frame(frame),
        Err(e) => {
            // A broker bug; closing lets the client retry at once instead of waiting out
            // its request timeout.
            tracing::error!(
                "cannot encode {api_key:?} v{} response, closing the connection: {e}",
                ctx.api_version
            );
            Reply::Close
        }
    }
}

/// Serves a Fetch whose record ranges go out with sendfile.
async fn zero_copy_fetch(
    ctx: &RequestContext,
    fetch: kafka_protocol::messages::FetchRequest,
    correlation_id: i32,
    copy_below: usize,
    started: std::time::Instant,
) -> Reply {
    match handlers::fetch::handle_zero_copy(ctx, fetch, correlation_id, copy_below).await {
        Ok((response, parts)) => {
            record_metrics(
                &ctx.shard.metrics,
                ApiKey::Fetch,
                started.elapsed(),
                &ResponseKind::Fetch(response),
            );
            Reply::Parts(parts)
        }
        Err(e) => {
            tracing::error!(
                "cannot encode a Fetch v{} response, closing the connection: {e}",
                ctx.api_version
            );
            Reply::Close
        }
    }
}

/// What a request's task hands the connection's writer.
enum Reply {
    Frame(Bytes),
    /// A response in pieces, some sent from files (zero-copy Fetch).
    Parts(Vec<Part>),
    /// Produce with acks=0: no response at all.
    Nothing,
    /// Close the connection after the responses before this one.
    Close,
}

enum Prepared {
    Immediate(Bytes),
    Handle(Handle),
}

/// A decoded request to hand its handler.
struct Handle {
    ctx: RequestContext,
    request: Box<RequestKind>,
    api_key: ApiKey,
    correlation_id: i32,
    /// Produce with acks=0 gets no response at all.
    respond: bool,
}

/// The order of a connection's answers: the highest request sequence number whose answer
/// is ready, and an event when it rises.
#[derive(Default)]
pub struct AnswerOrder {
    latest_answered: Cell<u64>,
    answered_event: event_listener::Event,
}

impl AnswerOrder {
    fn answered(&self, sequence: u64) {
        if sequence > self.latest_answered.get() {
            self.latest_answered.set(sequence);
            self.answered_event.notify(usize::MAX);
        }
    }
}

/// A request's place among its connection's requests.
#[derive(Clone)]
pub struct QueuePlace {
    order: Rc<AnswerOrder>,
    sequence: u64,
}

impl QueuePlace {
    /// Resolves once a request that arrived after this one has its answer ready, which
    /// then waits for this one's.
    pub async fn overtaken(&self) {
        loop {
            if self.order.latest_answered.get() > self.sequence {
                return;
            }
            let listener = self.order.answered_event.listen();
            if self.order.latest_answered.get() > self.sequence {
                return;
            }
            listener.await;
        }
    }
}

/// Decodes a frame into a request we serve, or decides how to refuse it.
fn prepare(
    shard: &Rc<Shard>,
    peer: &Arc<str>,
    frame: Bytes,
    place: QueuePlace,
) -> Result<Prepared, FrameError> {
    let prefix = protocol::header_prefix(&frame);
    let (version, correlation_id) = (prefix.api_version, prefix.correlation_id);
    let api_key =
        ApiKey::try_from(prefix.api_key).map_err(|_| FrameError::UnknownApi(prefix.api_key))?;
    let Some(range) = handlers::served_versions(api_key) else {
        return Err(FrameError::UnknownApi(prefix.api_key));
    };
    if version < range.min || version > range.max {
        // The header layout of a version we do not know is unknown too: answer from the
        // prefix alone.
        if api_key == ApiKey::ApiVersions {
            return Ok(Prepared::Immediate(protocol::api_versions_fallback(
                correlation_id,
                handlers::api_versions_response(),
            )));
        }
        return Err(FrameError::UnsupportedVersion {
            api: api_key,
            version,
            min: range.min,
            max: range.max,
        });
    }
    let mut frame = protocol::decode_header(api_key, frame)?;
    let request = protocol::decode_body(&mut frame)?;
    let respond = !matches!(&request, RequestKind::Produce(p) if p.acks == 0);
    Ok(Prepared::Handle(Handle {
        ctx: RequestContext {
            shard: shard.clone(),
            api_version: version,
            client: ClientInfo {
                client_id: frame.header.client_id.take().unwrap_or_default(),
                client_host: peer.clone(),
            },
            place,
        },
        request: Box::new(request),
        api_key,
        correlation_id,
        respond,
    }))
}

fn record_metrics(
    metrics: &ShardMetrics,
    api_key: ApiKey,
    elapsed: std::time::Duration,
    response: &ResponseKind,
) {
    match api_key {
        ApiKey::Produce => metrics.produce_latency.record(elapsed),
        ApiKey::Fetch => metrics.fetch_latency.record(elapsed),
        _ => {}
    }
    metrics.count_request(api_key as i16);
    handlers::visit_error_codes(response, |code| metrics.count_error(api_key as i16, code));
}
