//! Zero-copy file-to-socket sends: record bytes go from the page cache to the socket with
//! sendfile(2), never through a user-space buffer.
//!
//! glommio has no sendfile, and its sockets are non-blocking, so the call runs on the
//! shard's blocking pool (the shard keeps serving meanwhile), waiting with poll(2)
//! whenever the socket's send buffer is full.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

/// Longest wait for a full send buffer to drain: a consumer that stops reading for this
/// long loses its connection instead of holding a thread.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `len` bytes of `file` from `offset` to the socket `socket`.
pub async fn send_file(socket: RawFd, file: Arc<File>, offset: u64, len: usize) -> io::Result<()> {
    crate::spawn_blocking(move || send_file_blocking(socket, &file, offset, len)).await
}

fn send_file_blocking(socket: RawFd, file: &File, offset: u64, len: usize) -> io::Result<()> {
    let mut position = offset as libc::off_t;
    let mut left = len;
    while left > 0 {
        // SAFETY: both descriptors are open for the duration (the caller holds the file
        // and the connection); the kernel writes only `position`.
        let sent = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut position, left) };
        if sent > 0 {
            left -= sent as usize;
            continue;
        }
        if sent == 0 {
            // The file ends before the range does (it was truncated meanwhile).
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file range ends early",
            ));
        }
        let error = io::Error::last_os_error();
        match error.kind() {
            io::ErrorKind::WouldBlock => wait_writable(socket)?,
            io::ErrorKind::Interrupted => {}
            _ => return Err(error),
        }
    }
    Ok(())
}

fn wait_writable(socket: RawFd) -> io::Result<()> {
    let mut poll = libc::pollfd {
        fd: socket,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one pollfd on the stack, counted as one.
    let ready = unsafe { libc::poll(&mut poll, 1, STALL_TIMEOUT.as_millis() as libc::c_int) };
    match ready {
        1.. => Ok(()),
        0 => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "the peer stopped reading",
        )),
        _ => {
            let error = io::Error::last_os_error();
            if error.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(error)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn sends_a_file_range_through_a_full_socket() {
        let mut file = tempfile_with(&(0..=255u8).cycle().take(1 << 20).collect::<Vec<_>>());
        file.flush().unwrap();
        let (a, mut b) = std::os::unix::net::UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        send_file_blocking(a.as_raw_fd(), &file, 1000, 600_000).unwrap();
        drop(a);
        let got = reader.join().unwrap();
        let expected: Vec<u8> = (0..=255u8).cycle().skip(1000).take(600_000).collect();
        assert_eq!(got, expected);
    }

    fn tempfile_with(content: &[u8]) -> File {
        let path = std::env::temp_dir().join(format!("corelog-sendfile-{}", std::process::id()));
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        file.write_all(content).unwrap();
        std::fs::remove_file(&path).unwrap();
        file
    }
}
