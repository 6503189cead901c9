//! Small positional-IO helpers over `std::fs::File` that std does not provide:
//! a vectored positional write, a windowed sequential reader, and the shard's
//! bounded cache of open files for inactive segments.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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

/// Flushes every dirty page and inode of the filesystem holding `dir`, with one journal
/// commit for all of them.
pub fn syncfs(dir: &Path) -> io::Result<()> {
    let dir = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `dir` keeps open.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Open files kept per shard for inactive segments. A broker with 10,000
/// partitions already holds 10,000 descriptors for the active segments; this
/// bounds what old segments add, whatever their number.
pub const CACHED_FILES_PER_SHARD: usize = 1024;

thread_local! {
    /// Shards are threads and a log is only used by its shard, so the cache
    /// needs no lock.
    static OPEN_FILES: RefCell<FileCache> = RefCell::new(FileCache::new(CACHED_FILES_PER_SHARD));
}

/// Keys of [`CachedFile`]s: unique in the process, never reused, so an entry
/// can never be mistaken for another file's.
static NEXT_CACHE_KEY: AtomicU64 = AtomicU64::new(0);

/// A read-only file opened on demand through the shard's cache. Readers get an
/// `Arc<File>`: eviction only drops the cache's reference, so a send in flight
/// keeps its descriptor until it is done.
#[derive(Debug)]
pub struct CachedFile {
    key: u64,
    path: PathBuf,
}

impl CachedFile {
    /// A handle for `path`; `open` (if given) is put in the cache, saving a
    /// reopen when the file was in use a moment ago.
    pub fn new(path: PathBuf, open: Option<Arc<File>>) -> Self {
        let key = NEXT_CACHE_KEY.fetch_add(1, Ordering::Relaxed);
        if let Some(file) = open {
            OPEN_FILES.with(|cache| cache.borrow_mut().insert(key, file));
        }
        CachedFile { key, path }
    }

    pub fn get(&self) -> io::Result<Arc<File>> {
        OPEN_FILES.with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(file) = cache.get(self.key) {
                return Ok(file);
            }
            let file = Arc::new(File::open(&self.path)?);
            cache.insert(self.key, Arc::clone(&file));
            Ok(file)
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CachedFile {
    /// Closes the cached descriptor now: the file may have been deleted, and its
    /// space is only freed once the last descriptor is closed. `try_with`: the
    /// cache may already be gone when a thread exits.
    fn drop(&mut self) {
        let _ = OPEN_FILES.try_with(|cache| cache.borrow_mut().remove(self.key));
    }
}

/// A fixed number of slots replaced by the CLOCK policy (an LRU approximation):
/// a hit only sets a flag, no reordering; a miss sweeps a hand over the slots,
/// sparing (and unflagging) recently used ones and evicting the first that
/// was not used since the hand last passed.
struct FileCache {
    capacity: usize,
    slots: Vec<Slot>,
    /// Key to slot number.
    by_key: HashMap<u64, usize>,
    hand: usize,
}

struct Slot {
    key: u64,
    /// `None` once removed: the slot is free for the next insert.
    file: Option<Arc<File>>,
    used: bool,
}

impl FileCache {
    fn new(capacity: usize) -> Self {
        FileCache {
            capacity,
            slots: Vec::new(),
            by_key: HashMap::new(),
            hand: 0,
        }
    }

    fn get(&mut self, key: u64) -> Option<Arc<File>> {
        let slot = &mut self.slots[*self.by_key.get(&key)?];
        slot.used = true;
        slot.file.clone()
    }

    fn insert(&mut self, key: u64, file: Arc<File>) {
        let slot = Slot {
            key,
            file: Some(file),
            used: true,
        };
        if let Some(&i) = self.by_key.get(&key) {
            self.slots[i] = slot;
            return;
        }
        let i = if self.slots.len() < self.capacity {
            self.slots.push(slot);
            self.slots.len() - 1
        } else {
            let i = self.victim();
            let old = std::mem::replace(&mut self.slots[i], slot);
            if old.file.is_some() {
                self.by_key.remove(&old.key);
            }
            i
        };
        self.by_key.insert(key, i);
    }

    /// The slot to reuse: a free one, or the first not used since the hand's
    /// last pass. Ends within two sweeps, as the first clears every flag.
    fn victim(&mut self) -> usize {
        loop {
            let i = self.hand;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = &mut self.slots[i];
            if slot.file.is_none() || !slot.used {
                return i;
            }
            slot.used = false;
        }
    }

    fn remove(&mut self, key: u64) {
        if let Some(i) = self.by_key.remove(&key) {
            self.slots[i].file = None;
            self.slots[i].used = false;
        }
    }

    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_cache_keeps_recently_used_files_and_frees_removed_slots() {
        let file = || Arc::new(tempfile::tempfile().unwrap());
        let mut cache = FileCache::new(3);
        for key in 0..3 {
            cache.insert(key, file());
        }
        // Every flag is set: the sweep clears them all, then evicts slot 0.
        cache.insert(3, file());
        assert!(cache.get(0).is_none());
        // 1 is used again, so the next miss spares it and evicts 2.
        assert!(cache.get(1).is_some());
        cache.insert(4, file());
        assert!(cache.get(1).is_some() && cache.get(2).is_none());
        assert_eq!(cache.open_count(), 3);
        cache.remove(1);
        assert_eq!(cache.open_count(), 2);
        // The removed slot is reused before anything else is evicted.
        cache.insert(5, file());
        assert!([3, 4, 5].iter().all(|&k| cache.get(k).is_some()));
    }

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
