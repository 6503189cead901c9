//! Durable raft storage of the quorum: the log, the hard state and the latest snapshot.
//!
//! Layout of `data_dir` (all integers little-endian):
//! - `log`: the entries after the snapshot, in index order, one record each.
//! - `state`: two records, the raft `HardState` then the `ConfState`.
//! - `snapshot`: one record, a raft `Snapshot` (metadata + state machine bytes).
//!
//! A record is `u32 payload length, u32 CRC32C of the payload, payload`, the payload being
//! a protobuf message. `state` and `snapshot` are replaced atomically (write `<name>.tmp`,
//! fsync, rename, fsync the directory), so a crash leaves the old or the new file whole.
//! `log` is appended in place and fsynced before raft may rely on the entries; a crash can
//! leave a torn last record, which opening truncates away. Entries covered by the snapshot
//! may linger at the head of `log` (a crash between writing the snapshot and rewriting the
//! log) and are skipped on open.
//!
//! Every entry after the snapshot is also kept in memory: raft reads the log through the
//! synchronous [`raft::Storage`] trait, and compaction every `snapshot_every` entries keeps
//! that bounded. Writes go through the executor's blocking pool so the shard keeps serving.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

const LOG_FILE: &str = "log";
const STATE_FILE: &str = "state";
const SNAPSHOT_FILE: &str = "snapshot";
const RECORD_HEADER: usize = 8;
/// A length above this in a record header can only be corruption.
const MAX_RECORD: usize = 1 << 30;

fn encode_record(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// The first record of `buf` and the bytes it spans, or None when it is incomplete or its
/// CRC does not match (a torn write).
fn decode_record(buf: &[u8]) -> Option<(&[u8], usize)> {
    let header = buf.get(..RECORD_HEADER)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = buf.get(RECORD_HEADER..RECORD_HEADER + len)?;
    (crc32c::crc32c(payload) == crc).then_some((payload, RECORD_HEADER + len))
}

fn encode_entry(out: &mut Vec<u8>, entry: &Entry) -> io::Result<()> {
    let payload = entry.write_to_bytes().map_err(io::Error::other)?;
    encode_record(out, &payload);
    Ok(())
}

/// Replaces `dir/name` with `bytes` so that a crash leaves either the old or the new file.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    File::open(dir)?.sync_all()
}

/// Reads a file written by [`write_atomically`]: None when absent, an error when damaged
/// (it was replaced whole, so damage is not a torn write but lost data).
fn read_records(path: &Path, count: usize) -> anyhow::Result<Option<Vec<Vec<u8>>>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut rest = &bytes[..];
    let mut records = Vec::with_capacity(count);
    for _ in 0..count {
        let (payload, used) = decode_record(rest)
            .with_context(|| format!("{} is damaged (bad length or CRC)", path.display()))?;
        records.push(payload.to_vec());
        rest = &rest[used..];
    }
    Ok(Some(records))
}

/// The raft log, hard state and snapshot, in memory and on disk.
pub(crate) struct LogStorage {
    dir: PathBuf,
    log: Arc<File>,
    /// Bytes of `log` in use; appends go here.
    log_len: u64,
    hard_state: HardState,
    /// Whether `hard_state` holds a commit index not yet written to `state`.
    commit_dirty: bool,
    conf_state: ConfState,
    snapshot: Snapshot,
    /// Entries after the snapshot, contiguous.
    entries: Vec<Entry>,
    /// File position of each entry's record, parallel to `entries`.
    positions: Vec<u64>,
}

impl LogStorage {
    /// Opens (or creates) the storage in `dir`, truncating a torn tail of the log. The
    /// membership is static, so `conf_state` (from the configuration) is authoritative.
    /// Blocking: call it on the blocking pool.
    pub(crate) fn open(dir: &Path, conf_state: ConfState) -> anyhow::Result<LogStorage> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let snapshot = match read_records(&dir.join(SNAPSHOT_FILE), 1)? {
            Some(records) => Snapshot::parse_from_bytes(&records[0])
                .context("the snapshot file does not hold a raft snapshot")?,
            None => Snapshot::default(),
        };
        let mut hard_state = match read_records(&dir.join(STATE_FILE), 2)? {
            Some(records) => HardState::parse_from_bytes(&records[0])
                .context("the state file does not hold a raft hard state")?,
            None => HardState::default(),
        };
        let snap_index = snapshot.get_metadata().index;
        let snap_term = snapshot.get_metadata().term;

        let log_path = dir.join(LOG_FILE);
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&log_path)
            .with_context(|| format!("cannot open {}", log_path.display()))?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut &log, &mut bytes)
            .with_context(|| format!("cannot read {}", log_path.display()))?;
        let mut entries = Vec::new();
        let mut positions = Vec::new();
        let mut pos = 0usize;
        while let Some((payload, used)) = decode_record(&bytes[pos..]) {
            let entry = Entry::parse_from_bytes(payload)
                .with_context(|| format!("bad entry at byte {pos} of {}", log_path.display()))?;
            if let Some(prev) = entries.last().map(|e: &Entry| e.index) {
                if entry.index != prev + 1 {
                    bail!(
                        "{}: entry {} follows entry {prev} at byte {pos}",
                        log_path.display(),
                        entry.index
                    );
                }
            }
            entries.push(entry);
            positions.push(pos as u64);
            pos += used;
        }
        if pos < bytes.len() {
            tracing::warn!(
                path = %log_path.display(),
                kept = pos,
                dropped = bytes.len() - pos,
                "quorum log: truncating a torn tail"
            );
            log.set_len(pos as u64)?;
            log.sync_all()?;
        }

        // Skip entries the snapshot covers. If the log disagrees with the snapshot at its
        // index, it predates a snapshot received from the leader and is all stale.
        let stale = entries
            .iter()
            .any(|e| e.index == snap_index && e.term != snap_term);
        let keep_from = if stale {
            entries.len()
        } else {
            entries.partition_point(|e| e.index <= snap_index)
        };
        entries.drain(..keep_from);
        positions.drain(..keep_from);
        if let Some(first) = entries.first() {
            if first.index != snap_index + 1 {
                bail!(
                    "{}: the log starts at {} but the snapshot ends at {snap_index}",
                    log_path.display(),
                    first.index
                );
            }
        }

        let last_index = entries.last().map_or(snap_index, |e| e.index);
        hard_state.term = hard_state.term.max(snap_term);
        hard_state.commit = hard_state.commit.max(snap_index);
        if hard_state.commit > last_index {
            bail!(
                "{}: commit index {} is past the last entry {last_index}",
                dir.display(),
                hard_state.commit
            );
        }
        Ok(LogStorage {
            dir: dir.to_path_buf(),
            log: Arc::new(log),
            log_len: pos as u64,
            hard_state,
            commit_dirty: false,
            conf_state,
            snapshot,
            entries,
            positions,
        })
    }

    pub(crate) fn snapshot_ref(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Committed entries from `low` on, for replay at start.
    pub(crate) fn committed_entries(&self, low: u64) -> &[Entry] {
        let first = self.first();
        let from = low.saturating_sub(first) as usize;
        let to = (self.hard_state.commit + 1).saturating_sub(first) as usize;
        self.entries.get(from..to).unwrap_or_default()
    }

    fn first(&self) -> u64 {
        self.snapshot.get_metadata().index + 1
    }

    fn last(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.get_metadata().index, |e| e.index)
    }

    /// Appends `new` durably. Entries from an index already held replace the tail from
    /// there (a new leader overwriting what the old one did not commit).
    pub(crate) async fn append(&mut self, new: &[Entry]) -> io::Result<()> {
        let Some(first_new) = new.first().map(|e| e.index) else {
            return Ok(());
        };
        if first_new <= self.snapshot.get_metadata().index || first_new > self.last() + 1 {
            return Err(io::Error::other(format!(
                "append at {first_new} does not fit the log [{}, {}]",
                self.first(),
                self.last()
            )));
        }
        let keep = (first_new - self.first()) as usize;
        let start = self.positions.get(keep).copied().unwrap_or(self.log_len);
        let mut buf = Vec::new();
        let mut positions = Vec::with_capacity(new.len());
        for entry in new {
            positions.push(start + buf.len() as u64);
            encode_entry(&mut buf, entry)?;
        }
        let end = start + buf.len() as u64;
        let truncate = start < self.log_len;
        let log = self.log.clone();
        corelog_io::spawn_blocking(move || {
            if truncate {
                log.set_len(start)?;
            }
            log.write_all_at(&buf, start)?;
            log.sync_data()
        })
        .await?;
        self.entries.truncate(keep);
        self.positions.truncate(keep);
        self.entries.extend_from_slice(new);
        self.positions.extend(positions);
        self.log_len = end;
        Ok(())
    }

    /// Records a new hard state: durably when its term or vote changed (raft must never
    /// forget a vote), in memory when only the commit index moved (see [`Self::set_commit`]).
    pub(crate) async fn set_hard_state(&mut self, hard_state: HardState) -> io::Result<()> {
        if hard_state.term == self.hard_state.term && hard_state.vote == self.hard_state.vote {
            self.set_commit(hard_state.commit);
            return Ok(());
        }
        self.hard_state = hard_state;
        self.write_state().await
    }

    /// Records a commit index in memory only: raft needs no fsync for it, and a lagging
    /// commit on disk only means raft re-delivers those entries after a restart.
    pub(crate) fn set_commit(&mut self, commit: u64) {
        if commit > self.hard_state.commit {
            self.hard_state.commit = commit;
            self.commit_dirty = true;
        }
    }

    /// Writes a commit index held only in memory, so a restart replays up to it.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.commit_dirty {
            self.write_state().await?;
        }
        Ok(())
    }

    async fn write_state(&mut self) -> io::Result<()> {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            &self.hard_state.write_to_bytes().map_err(io::Error::other)?,
        );
        encode_record(
            &mut buf,
            &self.conf_state.write_to_bytes().map_err(io::Error::other)?,
        );
        let dir = self.dir.clone();
        corelog_io::spawn_blocking(move || write_atomically(&dir, STATE_FILE, &buf)).await?;
        self.commit_dirty = false;
        Ok(())
    }

    async fn write_snapshot(&mut self, snapshot: Snapshot) -> io::Result<()> {
        let mut buf = Vec::new();
        encode_record(
            &mut buf,
            &snapshot.write_to_bytes().map_err(io::Error::other)?,
        );
        let dir = self.dir.clone();
        corelog_io::spawn_blocking(move || write_atomically(&dir, SNAPSHOT_FILE, &buf)).await?;
        self.snapshot = snapshot;
        Ok(())
    }

    /// Rewrites `log` with only the entries after the snapshot.
    async fn rewrite_log(&mut self) -> io::Result<()> {
        let keep = self
            .entries
            .partition_point(|e| e.index <= self.snapshot.get_metadata().index);
        self.entries.drain(..keep);
        let mut buf = Vec::new();
        let mut positions = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            positions.push(buf.len() as u64);
            encode_entry(&mut buf, entry)?;
        }
        let dir = self.dir.clone();
        let len = buf.len() as u64;
        let log = corelog_io::spawn_blocking(move || {
            write_atomically(&dir, LOG_FILE, &buf)?;
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(dir.join(LOG_FILE))
        })
        .await?;
        self.log = Arc::new(log);
        self.log_len = len;
        self.positions = positions;
        Ok(())
    }

    /// Installs a snapshot received from the leader: it replaces the whole log.
    pub(crate) async fn apply_snapshot(&mut self, snapshot: Snapshot) -> io::Result<()> {
        let meta = snapshot.get_metadata();
        if meta.index < self.first() {
            return Err(io::Error::other(format!(
                "snapshot at {} is older than the log start {}",
                meta.index,
                self.first()
            )));
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
        self.hard_state.commit = self.hard_state.commit.max(meta.index);
        self.entries.clear();
        self.write_snapshot(snapshot).await?;
        self.rewrite_log().await?;
        self.write_state().await
    }

    /// Replaces the snapshot with `data`, the state machine as of `index` (applied), and
    /// drops the entries it covers.
    pub(crate) async fn compact(&mut self, index: u64, data: Vec<u8>) -> io::Result<()> {
        let term = raft::Storage::term(self, index).map_err(io::Error::other)?;
        let mut snapshot = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snapshot.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state.clone());
        self.write_snapshot(snapshot).await?;
        self.rewrite_log().await
    }
}

impl raft::Storage for LogStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(
            self.hard_state.clone(),
            self.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let first = self.first();
        let mut entries = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let meta = self.snapshot.get_metadata();
        if idx == meta.index {
            return Ok(meta.term);
        }
        if idx < self.first() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.first()) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index < request_index {
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::Storage as _;

    fn entry(index: u64, term: u64, data: &str) -> Entry {
        Entry {
            index,
            term,
            data: data.as_bytes().to_vec().into(),
            ..Default::default()
        }
    }

    fn voters() -> ConfState {
        ConfState::from((vec![1, 2, 3], vec![]))
    }

    fn run<F: std::future::Future<Output = ()> + 'static>(f: impl FnOnce() -> F + Send + 'static) {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    fn datas(storage: &LogStorage, low: u64, high: u64) -> Vec<String> {
        storage
            .entries(low, high, None, GetEntriesContext::empty(false))
            .unwrap()
            .iter()
            .map(|e| String::from_utf8(e.data.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn restart_keeps_entries_hard_state_and_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let mut s = LogStorage::open(&path, voters()).unwrap();
            assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 0));
            s.append(&[entry(1, 1, "a"), entry(2, 1, "b"), entry(3, 1, "c")])
                .await
                .unwrap();
            // A new leader of term 2 replaces entries 2.. of term 1.
            s.append(&[entry(2, 2, "B"), entry(3, 2, "C"), entry(4, 2, "D")])
                .await
                .unwrap();
            let mut hs = HardState {
                term: 2,
                vote: 3,
                commit: 2,
                ..Default::default()
            };
            s.set_hard_state(hs.clone()).await.unwrap();
            s.set_commit(4);
            s.flush().await.unwrap();
            drop(s);

            let s = LogStorage::open(&path, voters()).unwrap();
            assert_eq!(datas(&s, 1, 5), ["a", "B", "C", "D"]);
            assert_eq!(s.term(2).unwrap(), 2);
            hs.commit = 4;
            assert_eq!(s.initial_state().unwrap().hard_state, hs);
            assert_eq!(s.initial_state().unwrap().conf_state, voters());
            assert!(matches!(
                s.entries(1, 6, None, GetEntriesContext::empty(false)),
                Err(raft::Error::Store(StorageError::Unavailable))
            ));
        });
    }

    #[test]
    fn torn_tail_is_truncated_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let mut s = LogStorage::open(&path, voters()).unwrap();
            s.append(&[entry(1, 1, "one"), entry(2, 1, "two")])
                .await
                .unwrap();
            drop(s);
            // Tear the last record: cut its last byte, then add half a header of junk.
            let log = path.join(LOG_FILE);
            let len = std::fs::metadata(&log).unwrap().len();
            let file = OpenOptions::new().write(true).open(&log).unwrap();
            file.set_len(len - 1).unwrap();
            file.write_all_at(&[7, 7, 7], len - 1).unwrap();
            drop(file);

            let mut s = LogStorage::open(&path, voters()).unwrap();
            assert_eq!(s.last_index().unwrap(), 1);
            assert_eq!(datas(&s, 1, 2), ["one"]);
            s.append(&[entry(2, 1, "deux")]).await.unwrap();
            drop(s);
            let s = LogStorage::open(&path, voters()).unwrap();
            assert_eq!(datas(&s, 1, 3), ["one", "deux"]);
        });
    }

    #[test]
    fn compaction_drops_covered_entries_and_survives_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let mut s = LogStorage::open(&path, voters()).unwrap();
            let entries: Vec<Entry> = (1..=10).map(|i| entry(i, 1, &i.to_string())).collect();
            s.append(&entries).await.unwrap();
            let hs = HardState {
                term: 1,
                commit: 10,
                ..Default::default()
            };
            s.set_hard_state(hs).await.unwrap();
            s.compact(7, b"state@7".to_vec()).await.unwrap();
            assert_eq!(s.first_index().unwrap(), 8);
            assert_eq!(s.term(7).unwrap(), 1);
            assert!(matches!(
                s.term(6),
                Err(raft::Error::Store(StorageError::Compacted))
            ));
            assert!(matches!(
                s.snapshot(8, 2),
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable
                ))
            ));
            let snap = s.snapshot(0, 2).unwrap();
            assert_eq!(snap.get_metadata().index, 7);
            assert_eq!(&snap.data[..], b"state@7");
            s.append(&[entry(11, 1, "11")]).await.unwrap();
            drop(s);

            let s = LogStorage::open(&path, voters()).unwrap();
            assert_eq!(s.first_index().unwrap(), 8);
            assert_eq!(datas(&s, 8, 12), ["8", "9", "10", "11"]);
            assert_eq!(&s.snapshot_ref().data[..], b"state@7");
            assert_eq!(
                s.committed_entries(8)
                    .iter()
                    .map(|e| e.index)
                    .collect::<Vec<_>>(),
                [8, 9, 10]
            );
        });
    }

    #[test]
    fn received_snapshot_replaces_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        run(move || async move {
            let mut s = LogStorage::open(&path, voters()).unwrap();
            s.append(&[entry(1, 1, "a"), entry(2, 1, "b")])
                .await
                .unwrap();
            let mut snap = Snapshot {
                data: b"leader state".to_vec().into(),
                ..Default::default()
            };
            snap.mut_metadata().index = 50;
            snap.mut_metadata().term = 3;
            s.apply_snapshot(snap).await.unwrap();
            assert_eq!(
                (s.first_index().unwrap(), s.last_index().unwrap()),
                (51, 50)
            );
            s.append(&[entry(51, 3, "next")]).await.unwrap();
            drop(s);

            let s = LogStorage::open(&path, voters()).unwrap();
            let hs = s.initial_state().unwrap().hard_state;
            assert_eq!((hs.commit, hs.term), (50, 3));
            assert_eq!(datas(&s, 51, 52), ["next"]);
        });
    }

    #[test]
    fn damaged_state_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"\x05\0\0\0garbage").unwrap();
        let err = LogStorage::open(dir.path(), voters()).err().unwrap();
        assert!(format!("{err:#}").contains("damaged"), "{err:#}");
    }
}
