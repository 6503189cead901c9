//! Small positional-IO helpers over `std::fs::File` that std does not provide:
//! a vectored positional write and a windowed sequential reader.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;

/// Linux's `IOV_MAX`: the most iovecs one `pwritev` accepts.
pub const IOV_MAX: usize = 1024;

pub const EMPTY_IOVEC: libc::iovec = libc::iovec {
    iov_base: std::ptr::null_mut(),
    iov_len: 0,
};

/// An iovec pointing at `bytes`. `pwritev` only reads through it, so the
/// `*mut` is never used to write.
pub fn iovec(bytes: &[u8]) -> libc::iovec {
    libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    }
}

/// Writes every byte described by `iovs` at `offset`, retrying on short
/// writes and `EINTR`. `iovs` is consumed (advanced) in the process.
///
/// The iovecs must point to memory that stays valid and unmodified for the
/// duration of the call; taking them from live `&[u8]` borrows (as `iovec`
/// does) guarantees it.
pub fn pwritev_all(file: &File, iovs: &mut [libc::iovec], mut offset: u64) -> io::Result<()> {
    let mut first = 0;
    while first < iovs.len() {
        let pending = &iovs[first..(iovs.len().min(first + IOV_MAX))];
        let off = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "file offset overflow"))?;
        // SAFETY: the fd is open for the lifetime of `file`; `pending` is a
        // valid array of at most IOV_MAX iovecs whose buffers are readable
        // (see the function contract). pwritev does not retain the pointers.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                pending.as_ptr(),
                pending.len() as libc::c_int,
                off,
            )
        };
        if written < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        let mut written = written as usize; // > 0, checked above
        offset += written as u64;
        // Skip fully written iovecs, then advance into a partially written one.
        while first < iovs.len() && written >= iovs[first].iov_len {
            written -= iovs[first].iov_len;
            first += 1;
        }
        if written > 0 {
            let iov = &mut iovs[first];
            // SAFETY: written < iov_len, so the new base stays inside the buffer.
            iov.iov_base = unsafe { (iov.iov_base as *mut u8).add(written) } as *mut libc::c_void;
            iov.iov_len -= written;
        }
    }
    Ok(())
}

/// Sequential reads over `[0, end)` of a file through a fixed window, so a
/// scan over many small batches costs one large `pread` per window rather
/// than one per batch.
pub struct WindowReader<'a> {
    file: &'a File,
    end: u64,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    start: u64,
    /// Valid bytes in `buf`.
    filled: usize,
}

impl<'a> WindowReader<'a> {
    pub fn new(file: &'a File, end: u64, capacity: usize) -> Self {
        // Small files get a small buffer; the cap bounds memory for big ones.
        let capacity = capacity
            .min(usize::try_from(end).unwrap_or(usize::MAX))
            .max(1);
        WindowReader {
            file,
            end,
            buf: vec![0; capacity],
            start: 0,
            filled: 0,
        }
    }

    /// Largest `len` that `get` accepts.
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Returns the bytes `[pos, pos + len)`; `len` must not exceed `capacity`.
    /// Fails with `UnexpectedEof` if the range goes past `end` or the file
    /// is shorter than expected.
    pub fn get(&mut self, pos: u64, len: usize) -> io::Result<&[u8]> {
        if len > self.buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read larger than window",
            ));
        }
        let window_end = self.start + self.filled as u64;
        if pos < self.start || pos + len as u64 > window_end {
            self.fill(pos)?;
        }
        let from = (pos - self.start) as usize; // pos >= start and within the window
        self.buf[..self.filled]
            .get(from..from + len)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past end of file"))
    }

    fn fill(&mut self, pos: u64) -> io::Result<()> {
        let want = self.end.saturating_sub(pos).min(self.buf.len() as u64) as usize;
        let mut got = 0;
        while got < want {
            match self
                .file
                .read_at(&mut self.buf[got..want], pos + got as u64)
            {
                Ok(0) => break, // file shrank under us; `get` reports the EOF
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.start = pos;
        self.filled = got;
        Ok(())
    }
}

/// CRC-32C of the file range `[pos, pos + len)`, computed window by window so
/// a batch of any size is checked without holding it in memory.
pub fn crc32c_range(reader: &mut WindowReader<'_>, mut pos: u64, mut len: u64) -> io::Result<u32> {
    let mut crc = 0;
    while len > 0 {
        let n = len.min(reader.capacity() as u64) as usize;
        crc = crc32c::crc32c_append(crc, reader.get(pos, n)?);
        pos += n as u64;
        len -= n as u64;
    }
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pwritev_writes_all_iovecs_in_order() {
        let file = tempfile::tempfile().unwrap();
        let parts: [&[u8]; 4] = [b"ab", b"", b"cde", b"f"];
        let mut iovs: Vec<libc::iovec> = parts.iter().map(|p| iovec(p)).collect();
        pwritev_all(&file, &mut iovs, 3).unwrap();
        let mut out = [0u8; 9];
        file.read_exact_at(&mut out, 0).unwrap();
        assert_eq!(&out, b"\0\0\0abcdef");
    }

    #[test]
    fn window_reader_crosses_windows() {
        let file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        file.write_all_at(&data, 0).unwrap();
        let mut r = WindowReader::new(&file, 1000, 64);
        assert_eq!(r.get(0, 10).unwrap(), &data[..10]);
        assert_eq!(r.get(60, 10).unwrap(), &data[60..70]); // spans the first window
        assert_eq!(r.get(5, 3).unwrap(), &data[5..8]); // going back
        assert!(r.get(995, 10).is_err()); // past the end
        assert!(r.get(0, 65).is_err()); // larger than the window
        assert_eq!(
            crc32c_range(&mut r, 7, 900).unwrap(),
            crc32c::crc32c(&data[7..907])
        );
    }
}
