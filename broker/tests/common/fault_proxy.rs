//! A TCP proxy that injects network faults between brokers of a test cluster.
//!
//! One proxy stands in front of one listening port of one broker (its raft port or its
//! replication listener). Brokers bind their outbound inter-broker connections to
//! 127.0.1.<node id>, so the proxy knows which broker a connection comes from by its peer
//! address, and faults apply per (source, this target): `cut` closes that source's
//! connections and closes new ones at once until `heal`; `delay` holds every chunk for a
//! while in each direction. Buffers are bounded (a few chunks per direction), and every
//! thread ends once the proxy is dropped.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Who opened a connection through the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// Broker n, connecting from 127.0.1.n.
    Broker(u8),
    /// Anyone else (a test's own client on 127.0.0.1).
    External,
}

impl Source {
    fn of(peer: SocketAddr) -> Source {
        match peer.ip() {
            IpAddr::V4(ip) if ip.octets()[..3] == [127, 0, 1] => Source::Broker(ip.octets()[3]),
            _ => Source::External,
        }
    }

    /// The loopback address broker `n` binds its outbound connections to.
    pub fn broker_ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(127, 0, 1, n)
    }
}

/// Bytes read per chunk, and chunks queued per direction (so at most 1 MiB in flight).
const CHUNK: usize = 16 << 10;
const QUEUED_CHUNKS: usize = 64;
/// How often idle threads look at the stop flag.
const POLL: Duration = Duration::from_millis(20);

#[derive(Default)]
struct Fault {
    cut: bool,
    delay: Duration,
}

struct Link {
    source: Source,
    /// Both sockets of the connection: shutting them down ends its threads.
    client: TcpStream,
    upstream: TcpStream,
}

impl Link {
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

#[derive(Default)]
struct State {
    faults: HashMap<Source, Fault>,
    links: HashMap<u64, Link>,
    next_link: u64,
}

struct Shared {
    target: SocketAddr,
    stop: AtomicBool,
    state: Mutex<State>,
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Listens on a free 127.0.0.1 port and forwards every connection to `target`.
    pub fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target,
            stop: AtomicBool::new(false),
            state: Mutex::default(),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::spawn(move || accept_loop(&listener, &shared))
        };
        FaultProxy {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes `source`'s connections, and closes its new ones on accept until healed.
    pub fn cut(&self, source: Source) {
        let mut state = self.shared.state.lock().unwrap();
        state.faults.entry(source).or_default().cut = true;
        state.links.retain(|_, link| {
            let keep = link.source != source;
            if !keep {
                link.close();
            }
            keep
        });
    }

    /// Holds each chunk from or to `source` for `delay` before passing it on.
    pub fn delay(&self, source: Source, delay: Duration) {
        let mut state = self.shared.state.lock().unwrap();
        state.faults.entry(source).or_default().delay = delay;
    }

    /// Ends every fault (connections cut stay closed; new ones pass).
    pub fn heal(&self) {
        self.shared.state.lock().unwrap().faults.clear();
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.shared.state.lock().unwrap().links.len()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for (_, link) in self.shared.state.lock().unwrap().links.drain() {
            link.close();
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((client, peer)) => open_link(shared, client, Source::of(peer)),
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
            Err(_) => std::thread::sleep(POLL),
        }
    }
}

fn open_link(shared: &Arc<Shared>, client: TcpStream, source: Source) {
    let cut = |shared: &Shared| {
        let state = shared.state.lock().unwrap();
        state.faults.get(&source).is_some_and(|f| f.cut)
    };
    if cut(shared) {
        // Dropping the accepted socket closes it: the connection is refused in effect.
        return;
    }
    client.set_nonblocking(false).unwrap();
    // A target that is down (killed) refuses at once; a stopped one would accept.
    let Ok(upstream) = TcpStream::connect_timeout(&shared.target, Duration::from_secs(2)) else {
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let id = {
        let mut state = shared.state.lock().unwrap();
        // Checked again under the lock: a cut that came while connecting must win.
        if state.faults.get(&source).is_some_and(|f| f.cut) || shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let id = state.next_link;
        state.next_link += 1;
        let (Ok(c), Ok(u)) = (client.try_clone(), upstream.try_clone()) else {
            return;
        };
        state.links.insert(
            id,
            Link {
                source,
                client: c,
                upstream: u,
            },
        );
        id
    };
    for (from, to) in [
        (client.try_clone(), upstream.try_clone()),
        (upstream.try_clone(), client.try_clone()),
    ] {
        let (Ok(from), Ok(to)) = (from, to) else {
            close_link(shared, id);
            return;
        };
        let (tx, rx) = sync_channel(QUEUED_CHUNKS);
        let reader_shared = shared.clone();
        std::thread::spawn(move || read_side(&reader_shared, source, from, tx));
        let writer_shared = shared.clone();
        std::thread::spawn(move || write_side(&writer_shared, id, to, rx));
    }
}

/// Reads chunks and queues each with the time it may be passed on.
fn read_side(
    shared: &Shared,
    source: Source,
    mut from: TcpStream,
    queue: SyncSender<(Instant, Vec<u8>)>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let delay = shared
                    .state
                    .lock()
                    .unwrap()
                    .faults
                    .get(&source)
                    .map_or(Duration::ZERO, |f| f.delay);
                if queue
                    .send((Instant::now() + delay, buf[..n].to_vec()))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // Dropping the queue lets the writer pass on what was read, then close the link.
}

/// Passes queued chunks on when their time comes; a failed write closes the connection.
fn write_side(shared: &Shared, id: u64, mut to: TcpStream, queue: Receiver<(Instant, Vec<u8>)>) {
    while let Ok((due, chunk)) = queue.recv() {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if shared.stop.load(Ordering::SeqCst) || to.write_all(&chunk).is_err() {
            break;
        }
    }
    close_link(shared, id);
}

fn close_link(shared: &Shared, id: u64) {
    if let Some(link) = shared.state.lock().unwrap().links.remove(&id) {
        link.close();
    }
}

/// Connects to `target` from `source` (a 127.x address), as a broker binds its
/// inter-broker connections. std cannot bind a socket before connecting it.
pub fn connect_from(source: Ipv4Addr, target: SocketAddr) -> std::io::Result<TcpStream> {
    use std::os::fd::FromRawFd;
    let SocketAddr::V4(target) = target else {
        panic!("IPv4 only");
    };
    let sockaddr = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a fresh socket, owned by the TcpStream at once; the addresses outlive the calls.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let stream = TcpStream::from_raw_fd(fd);
        let local = sockaddr(source, 0);
        if libc::bind(fd, (&raw const local).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let remote = sockaddr(*target.ip(), target.port());
        if libc::connect(fd, (&raw const remote).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(stream)
    }
}
