//! Non-blocking connections driven by `ppoll`.
//!
//! Why not one blocking thread per connection: a generator thread owns several connections
//! (1,000-connection scenarios run on 2 cores), must keep many requests in flight on each,
//! and must wake at the exact intended send time of the next message. Why not mio/epoll:
//! epoll_wait (and mio on it) rounds timeouts up to whole milliseconds, which would add up to
//! 1 ms of our own delay to every open-loop send; `ppoll` takes nanoseconds, and with a few
//! to a few hundred descriptors per thread its O(n) scan costs less than a syscall.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::{Buf, Bytes, BytesMut};

/// One broker connection: a write buffer requests are appended to (possibly while earlier
/// ones are still being sent) and a read buffer whole response frames are split from.
pub struct Conn {
    stream: TcpStream,
    wbuf: Vec<u8>,
    wpos: usize,
    rbuf: BytesMut,
    next_correlation: i32,
    /// Set once the peer has closed the connection.
    pub closed: bool,
}

const READ_CHUNK: usize = 256 * 1024;

impl Conn {
    /// Connects (blocking, with a timeout), then switches to non-blocking with Nagle off.
    pub fn connect(addr: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_nonblocking(true)?;
        Ok(Conn {
            stream,
            wbuf: Vec::with_capacity(1 << 20),
            wpos: 0,
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            next_correlation: 0,
            closed: false,
        })
    }

    /// A fresh correlation id for the next request.
    pub fn correlation(&mut self) -> i32 {
        self.next_correlation = self.next_correlation.wrapping_add(1);
        self.next_correlation
    }

    /// The buffer requests are appended to.
    pub fn wbuf(&mut self) -> &mut Vec<u8> {
        &mut self.wbuf
    }

    /// Bytes appended but not yet written to the socket.
    pub fn unsent(&self) -> usize {
        self.wbuf.len() - self.wpos
    }

    /// Writes as much as the socket takes; true when everything appended has been sent.
    pub fn write_some(&mut self) -> Result<bool> {
        while self.wpos < self.wbuf.len() {
            match self.stream.write(&self.wbuf[self.wpos..]) {
                Ok(0) => anyhow::bail!("connection closed while writing"),
                Ok(n) => self.wpos += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        // Everything sent: rewind so the buffer is reused from its start.
        self.wbuf.clear();
        self.wpos = 0;
        Ok(true)
    }

    /// Reads whatever has arrived, up to a bound so one busy socket cannot starve the others.
    pub fn read_some(&mut self) -> Result<()> {
        for _ in 0..16 {
            // Keep a chunk of spare room; the split-off frames are dropped by then, so
            // `reserve` reclaims the same allocation instead of growing.
            self.rbuf.reserve(READ_CHUNK);
            let spare = self.rbuf.spare_capacity_mut();
            let room = spare.len();
            // libc::read straight into the spare capacity: std's `Read` wants an initialised
            // slice, and zeroing 256 KiB before every small Produce response would cost more
            // than the read itself.
            // SAFETY: the pointer and length describe the BytesMut's own spare capacity.
            let n = unsafe { libc::read(self.stream.as_raw_fd(), spare.as_mut_ptr().cast(), room) };
            match n {
                0 => {
                    self.closed = true;
                    return Ok(());
                }
                n if n > 0 => {
                    // SAFETY: the kernel initialised exactly `n` bytes of the spare room.
                    unsafe { self.rbuf.set_len(self.rbuf.len() + n as usize) };
                    if (n as usize) < room {
                        return Ok(());
                    }
                }
                _ => {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::WouldBlock => return Ok(()),
                        io::ErrorKind::Interrupted => {}
                        _ => return Err(e.into()),
                    }
                }
            }
        }
        Ok(())
    }

    /// The next complete response frame (without its size prefix), if one has arrived.
    pub fn next_frame(&mut self) -> Option<Bytes> {
        if self.rbuf.len() < 4 {
            return None;
        }
        let len = (&self.rbuf[..4]).get_i32() as usize;
        if self.rbuf.len() < 4 + len {
            return None;
        }
        self.rbuf.advance(4);
        Some(self.rbuf.split_to(len).freeze())
    }

    /// The descriptor and events to poll for.
    pub fn pollfd(&self) -> libc::pollfd {
        let mut events = libc::POLLIN;
        if self.unsent() > 0 {
            events |= libc::POLLOUT;
        }
        libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events,
            revents: 0,
        }
    }
}

/// Waits until one of `fds` is ready or `timeout_ns` passes (0: just check).
pub fn poll(fds: &mut [libc::pollfd], timeout_ns: u64) -> Result<()> {
    let ts = libc::timespec {
        tv_sec: (timeout_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (timeout_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `fds` is a valid slice of pollfd for its length; no signal mask is passed.
    let rc = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if rc < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e.into());
        }
    }
    Ok(())
}
