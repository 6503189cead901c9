//! Peer transport: length-prefixed frames over TCP.
//!
//! A frame is `u32 payload length (big-endian), u8 kind, payload`; a length above
//! [`MAX_FRAME`], an unknown kind or a payload that does not decode closes the connection.
//! Kinds:
//! - raft message: the protobuf encoding of a raft `Message`;
//! - request: `u64 id`, then the request bytes for the leader's handler;
//! - response: `u64 id`, `u8 status`, then the handler's answer.
//!
//! Each node keeps one outbound connection per peer, fed by a bounded queue: raft tolerates
//! lost messages, so a full queue drops (and counts) rather than blocks the raft loop. Raft
//! messages and requests travel outbound; the peer answers requests on the same connection.
//! Inbound connections deliver raft messages to the local node and serve requests.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use raft::SnapshotStatus;
use socket2::{Domain, Protocol, Socket, Type};

use super::node::Input;
use super::queue::LocalQueue;
use super::Core;
use corelog_io::{sleep, spawn_local, TcpListener, TcpStream};

/// Largest frame payload accepted or sent.
pub(crate) const MAX_FRAME: usize = 64 << 20;
const KIND_RAFT: u8 = 1;
const KIND_REQUEST: u8 = 2;
const KIND_RESPONSE: u8 = 3;
/// Frames waiting for one peer's connection.
const PEER_QUEUE: usize = 1024;
/// Requests to one peer awaiting their response.
const MAX_PENDING_CALLS: usize = 1024;
const MAX_INBOUND_CONNECTIONS: usize = 256;
/// Requests served concurrently per inbound connection; more are answered Busy.
const MAX_INFLIGHT_REQUESTS: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// How often a non-blocking connect is checked for completion.
const CONNECT_POLL: Duration = Duration::from_millis(2);
const MIN_BACKOFF: Duration = Duration::from_millis(20);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// How the serving node answered a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Ok = 0,
    /// The node no longer leads: ask the new leader.
    NotLeader = 1,
    /// The leader has no handler yet (it is still starting).
    NoHandler = 2,
    /// Too many requests in flight on the connection.
    Busy = 3,
    /// The answer does not fit in a frame.
    TooLarge = 4,
}

impl Status {
    fn from_u8(value: u8) -> Option<Status> {
        [
            Status::Ok,
            Status::NotLeader,
            Status::NoHandler,
            Status::Busy,
            Status::TooLarge,
        ]
        .into_iter()
        .find(|s| *s as u8 == value)
    }
}

pub(crate) struct Reply {
    pub(crate) status: Status,
    pub(crate) body: Vec<u8>,
}

enum Outbound {
    Raft(Message),
    Request { id: u64, body: Vec<u8> },
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Appends a frame of `kind` whose payload is the concatenation of `parts`.
fn encode_frame(out: &mut Vec<u8>, kind: u8, parts: &[&[u8]]) -> io::Result<()> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len > MAX_FRAME {
        return Err(invalid(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
    }
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.push(kind);
    for part in parts {
        out.extend_from_slice(part);
    }
    Ok(())
}

/// Reads one frame into `buf` and returns its kind.
async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut Vec<u8>) -> io::Result<u8> {
    let mut header = [0u8; 5];
    reader.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    if len > MAX_FRAME {
        return Err(invalid(format!("frame of {len} bytes exceeds {MAX_FRAME}")));
    }
    buf.clear();
    // Grows with the bytes that actually arrive, not with the length a peer claims.
    (&mut *reader).take(len as u64).read_to_end(buf).await?;
    if buf.len() != len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(header[4])
}

fn split_id(payload: &[u8]) -> io::Result<(u64, &[u8])> {
    let (id, rest) = payload
        .split_first_chunk::<8>()
        .ok_or_else(|| invalid("request or response shorter than its id"))?;
    Ok((u64::from_be_bytes(*id), rest))
}

/// One peer this node sends raft messages and requests to.
pub(crate) struct Peer {
    pub(crate) id: u64,
    addr: String,
    queue: LocalQueue<Outbound>,
    calls: RefCell<HashMap<u64, oneshot::Sender<Reply>>>,
    next_call: Cell<u64>,
}

impl Peer {
    pub(crate) fn new(id: u64, addr: String) -> Peer {
        Peer {
            id,
            addr,
            queue: LocalQueue::new(PEER_QUEUE),
            calls: RefCell::new(HashMap::new()),
            next_call: Cell::new(0),
        }
    }

    /// Queues a raft message; false when the queue is full and the message was dropped.
    pub(crate) fn send_raft(&self, message: Message) -> bool {
        self.queue.try_push(Outbound::Raft(message)).is_ok()
    }

    /// Sends a request and waits for its reply; None when it could not be sent or the
    /// connection closed first (the caller retries).
    pub(crate) async fn call(&self, body: Vec<u8>) -> Option<Reply> {
        if self.calls.borrow().len() >= MAX_PENDING_CALLS {
            return None;
        }
        let id = self.next_call.get();
        self.next_call.set(id.wrapping_add(1));
        let (tx, rx) = oneshot::channel();
        self.calls.borrow_mut().insert(id, tx);
        // Forgets the call however this future ends, including when it is dropped.
        struct Forget<'a>(&'a Peer, u64);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.calls.borrow_mut().remove(&self.1);
            }
        }
        let _forget = Forget(self, id);
        self.queue.try_push(Outbound::Request { id, body }).ok()?;
        rx.await.ok()
    }

    /// After the connection is lost: fails pending calls and discards stale frames.
    fn reset(&self, core: &Core) {
        self.calls.borrow_mut().clear();
        for item in self.queue.drain() {
            if let Outbound::Raft(m) = item {
                if m.get_msg_type() == MessageType::MsgSnapshot {
                    core.deliver(Input::Snapshot(self.id, SnapshotStatus::Failure));
                }
            }
        }
        core.deliver(Input::Unreachable(self.id));
    }
}

/// Keeps a connection to `peer` open, reconnecting with backoff, until shutdown.
pub(crate) async fn run_peer(core: Rc<Core>, peer: Rc<Peer>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match connect(&peer.addr, core.bind_address).await {
            Ok(stream) => {
                backoff = MIN_BACKOFF;
                tracing::debug!(node = core.node_id, peer = peer.id, "quorum: connected");
                if let Err(e) = peer_connection(&core, &peer, stream).await {
                    tracing::debug!(node = core.node_id, peer = peer.id, error = %e, "quorum: connection lost");
                }
            }
            Err(e) => {
                tracing::debug!(node = core.node_id, peer = peer.id, addr = %peer.addr, error = %e, "quorum: cannot connect");
            }
        }
        peer.reset(&core);
        sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

async fn peer_connection(core: &Core, peer: &Peer, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (mut reader, mut writer) = stream.split();
    let write = async {
        let mut buf = Vec::new();
        loop {
            let item = peer.queue.pop().await;
            buf.clear();
            let snapshot_to = match &item {
                Outbound::Raft(m) if m.get_msg_type() == MessageType::MsgSnapshot => Some(m.to),
                _ => None,
            };
            let encoded = match &item {
                Outbound::Raft(m) => {
                    let bytes = m.write_to_bytes().map_err(io::Error::other)?;
                    encode_frame(&mut buf, KIND_RAFT, &[&bytes])
                }
                Outbound::Request { id, body } => {
                    encode_frame(&mut buf, KIND_REQUEST, &[&id.to_be_bytes(), body])
                }
            };
            let sent = match encoded {
                Ok(()) => writer.write_all(&buf).await.map(|()| true),
                Err(e) => {
                    // Too big to ever send: drop it, the connection is fine.
                    tracing::warn!(node = core.node_id, peer = peer.id, error = %e, "quorum: dropping a frame");
                    core.dropped_messages.set(core.dropped_messages.get() + 1);
                    Ok(false)
                }
            };
            if let Some(to) = snapshot_to {
                let status = if matches!(sent, Ok(true)) {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                core.deliver(Input::Snapshot(to, status));
            }
            sent?;
        }
    };
    let read = async {
        let mut buf = Vec::new();
        loop {
            let kind = read_frame(&mut reader, &mut buf).await?;
            if kind != KIND_RESPONSE {
                return Err(invalid(format!("unexpected frame kind {kind} from a peer")));
            }
            let (id, rest) = split_id(&buf)?;
            let (&status, body) = rest
                .split_first()
                .ok_or_else(|| invalid("response without status"))?;
            let status = Status::from_u8(status)
                .ok_or_else(|| invalid(format!("unknown response status {status}")))?;
            if let Some(tx) = peer.calls.borrow_mut().remove(&id) {
                let _ = tx.send(Reply {
                    status,
                    body: body.to_vec(),
                });
            }
        }
    };
    futures_lite::future::or(write, read).await
}

/// Connects to `addr` from `bind` (any local address when None) without blocking the
/// executor: glommio's own connect cannot bind a source address, so the socket is made
/// here, connected non-blocking and polled until the handshake ends.
async fn connect(addr: &str, bind: Option<IpAddr>) -> io::Result<TcpStream> {
    let target = match addr.parse::<SocketAddr>() {
        Ok(target) => target,
        Err(_) => {
            // A host name: resolving may block, so it runs on the blocking pool.
            let name = addr.to_string();
            corelog_io::spawn_blocking(move || name.to_socket_addrs().map(|mut a| a.next()))
                .await?
                .ok_or_else(|| invalid(format!("{addr} resolves to no address")))?
        }
    };
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    if let Some(ip) = bind {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.set_nonblocking(true)?;
    match socket.connect(&target.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
            let started = Instant::now();
            loop {
                if let Some(e) = socket.take_error()? {
                    return Err(e);
                }
                match socket.peer_addr() {
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {}
                    Err(e) => return Err(e),
                }
                if started.elapsed() > CONNECT_TIMEOUT {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                sleep(CONNECT_POLL).await;
            }
        }
        Err(e) => return Err(e),
    }
    // glommio drives its sockets through io_uring and expects them in blocking mode.
    socket.set_nonblocking(false)?;
    // SAFETY: the descriptor is a connected TCP socket that we own and hand over whole.
    Ok(unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) })
}

/// Counts an inbound connection while it lives.
struct InboundSlot(Rc<Core>);

impl Drop for InboundSlot {
    fn drop(&mut self) {
        self.0.open_inbound.set(self.0.open_inbound.get() - 1);
        self.0.inbound_closed.notify(usize::MAX);
    }
}

/// Accepts peer connections until shutdown.
pub(crate) async fn accept_loop(core: Rc<Core>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                if core.open_inbound.get() >= MAX_INBOUND_CONNECTIONS {
                    tracing::warn!(
                        node = core.node_id,
                        "quorum: too many peer connections, refusing one"
                    );
                    continue;
                }
                core.open_inbound.set(core.open_inbound.get() + 1);
                let slot = InboundSlot(core.clone());
                spawn_local(async move {
                    let core = slot.0.clone();
                    core.shutdown.guard(serve_inbound(&core, stream)).await;
                    drop(slot);
                })
                .detach();
            }
            Err(e) => {
                // Out of descriptors and the like: pause rather than spin.
                tracing::warn!(node = core.node_id, error = %e, "quorum: accept failed");
                sleep(MIN_BACKOFF).await;
            }
        }
    }
}

async fn serve_inbound(core: &Rc<Core>, stream: TcpStream) {
    let from = stream.peer_addr().ok();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "quorum: set_nodelay failed");
    }
    let (mut reader, mut writer) = stream.split();
    let responses: Rc<LocalQueue<Vec<u8>>> = Rc::new(LocalQueue::new(2 * MAX_INFLIGHT_REQUESTS));
    let inflight = Rc::new(Cell::new(0usize));
    let read = async {
        let mut buf = Vec::new();
        loop {
            match read_frame(&mut reader, &mut buf).await? {
                KIND_RAFT => {
                    let message = Message::parse_from_bytes(&buf)
                        .map_err(|e| invalid(format!("bad raft message: {e}")))?;
                    if message.to != core.node_id {
                        return Err(invalid(format!(
                            "raft message for node {} reached node {}",
                            message.to, core.node_id
                        )));
                    }
                    core.deliver(Input::Raft(message));
                }
                KIND_REQUEST => {
                    let (id, body) = split_id(&buf)?;
                    if inflight.get() >= MAX_INFLIGHT_REQUESTS {
                        let _ = responses.try_push(encode_response(id, Status::Busy, Vec::new()));
                        continue;
                    }
                    inflight.set(inflight.get() + 1);
                    let (core, responses, inflight) =
                        (core.clone(), responses.clone(), inflight.clone());
                    let body = body.to_vec();
                    spawn_local(async move {
                        let reply = core.shutdown.guard(core.serve_request(body)).await;
                        inflight.set(inflight.get() - 1);
                        if let Some((status, body)) = reply {
                            core.shutdown
                                .guard(responses.push(encode_response(id, status, body)))
                                .await;
                        }
                    })
                    .detach();
                }
                kind => return Err(invalid(format!("unknown frame kind {kind}"))),
            }
        }
    };
    let write = async {
        loop {
            let frame = responses.pop().await;
            writer.write_all(&frame).await?;
        }
    };
    let result: io::Result<()> = futures_lite::future::or(read, write).await;
    if let Err(e) = result {
        if e.kind() == io::ErrorKind::InvalidData {
            tracing::warn!(node = core.node_id, from = ?from, error = %e, "quorum: closing a peer connection");
        } else {
            tracing::debug!(node = core.node_id, from = ?from, error = %e, "quorum: peer connection closed");
        }
    }
}

fn encode_response(id: u64, status: Status, body: Vec<u8>) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + body.len());
    match encode_frame(
        &mut frame,
        KIND_RESPONSE,
        &[&id.to_be_bytes(), &[status as u8], &body],
    ) {
        Ok(()) => frame,
        Err(_) => encode_response(id, Status::TooLarge, Vec::new()),
    }
}

/// Whether a request of `len` bytes fits in a frame.
pub(crate) fn request_fits(len: usize) -> bool {
    len + 8 <= MAX_FRAME
}
