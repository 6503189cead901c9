//! Zero-copy file-to-socket sends: record bytes go from the page cache to the socket with
//! sendfile(2), never through a user-space buffer.
//!
//! The sendfile calls run on the shard thread itself, on the non-blocking socket. They
//! used to run on glommio's blocking pool, but that pool is one thread per shard and also
//! runs the periodic fdatasyncs: behind a flush of hundreds of MB a fetch response waited
//! seconds, and tailing consumers fell that far behind. Sending from the shard costs no
//! thread handoff either. The price: a read of data no longer in the page cache blocks
//! the shard while the disk answers, as in Kafka's network threads. glommio offers no
//! writability wait for a raw descriptor, so a full socket is retried after a short sleep
//! that doubles while the socket stays full.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest wait for a full send buffer to drain: a consumer that stops reading for this
/// long loses its connection.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// First and longest sleep while the socket's send buffer is full. Loopback drains a
/// few MB of buffer in about a millisecond, so the first retry comes well before that.
const FIRST_BACKOFF: Duration = Duration::from_micros(50);
const MAX_BACKOFF: Duration = Duration::from_millis(5);

/// Sends `len` bytes of `file` from `offset` to the non-blocking socket `socket`.
pub async fn send_file(socket: RawFd, file: Arc<File>, offset: u64, len: usize) -> io::Result<()> {
    let mut position = offset as libc::off_t;
    let mut left = len;
    let mut backoff = FIRST_BACKOFF;
    let mut full_since: Option<Instant> = None;
    while left > 0 {
        // SAFETY: both descriptors are open for the duration (the caller holds the file
        // and the connection); the kernel writes only `position`.
        let sent = unsafe { libc::sendfile(socket, file.as_raw_fd(), &mut position, left) };
        if sent > 0 {
            left -= sent as usize;
            backoff = FIRST_BACKOFF;
            full_since = None;
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
            io::ErrorKind::WouldBlock => {
                if full_since.get_or_insert_with(Instant::now).elapsed() > STALL_TIMEOUT {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer stopped reading",
                    ));
                }
                crate::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            io::ErrorKind::Interrupted => {}
            _ => return Err(error),
        }
    }
    Ok(())
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
        let file = Arc::new(file);
        glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(send_file(a.as_raw_fd(), file, 1000, 600_000))
            .unwrap();
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
