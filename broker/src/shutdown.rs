//! Graceful shutdown on SIGTERM or SIGINT: stop accepting, finish in-flight requests,
//! flush every log with its indexes, then leave a clean-shutdown marker so the next start
//! trusts the logs instead of scanning them. A second signal exits at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;

/// Present only between a clean stop and the next start (Kafka's
/// `.kafka_cleanshutdown`, under our name).
const CLEAN_SHUTDOWN_MARKER: &str = ".corelog_cleanshutdown";
/// How often shards look at the stop flag; signals are rare, this is cheap.
pub const POLL: Duration = Duration::from_millis(20);

/// Shared by the signal thread and the shards: a flag set once, and a count of shards
/// done serving clients, so none flushes while another may still forward work to it.
#[derive(Default)]
pub struct Shutdown {
    requested: AtomicBool,
    drained: AtomicUsize,
    failed: AtomicBool,
}

impl Shutdown {
    /// Blocks SIGTERM and SIGINT in this thread (and the shard threads it will start,
    /// which inherit the mask) and handles them on a dedicated thread.
    pub fn on_signals() -> anyhow::Result<Arc<Shutdown>> {
        let shutdown = Arc::new(Shutdown::default());
        // SAFETY: plain libc signal-set manipulation on a zeroed, owned sigset_t.
        let signals = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGTERM);
            libc::sigaddset(&mut set, libc::SIGINT);
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                anyhow::bail!("cannot block SIGTERM/SIGINT");
            }
            set
        };
        let flag = shutdown.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || loop {
                let mut signal = 0;
                // SAFETY: waits on the set blocked above; writes only `signal`.
                if unsafe { libc::sigwait(&signals, &mut signal) } != 0 {
                    continue;
                }
                if flag.requested.swap(true, Ordering::SeqCst) {
                    tracing::warn!("second signal: exiting without a clean shutdown");
                    std::process::exit(1);
                }
                tracing::info!(
                    signal,
                    "shutting down: finishing requests and flushing logs"
                );
            })
            .context("cannot start the signal thread")?;
        Ok(shutdown)
    }

    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Waits until a stop is requested.
    pub async fn wait_requested(&self) {
        while !self.requested() {
            corelog_io::sleep(POLL).await;
        }
    }

    /// Marks this shard as done with clients, then waits for all `shards` to be.
    pub async fn drained(&self, shards: usize) {
        self.drained.fetch_add(1, Ordering::SeqCst);
        while self.drained.load(Ordering::SeqCst) < shards {
            corelog_io::sleep(POLL).await;
        }
    }

    pub fn flush_failed(&self) {
        self.failed.store(true, Ordering::SeqCst);
    }

    /// After every shard stopped: records a clean stop unless a flush failed.
    pub fn finish(&self, data_dir: &Path) -> anyhow::Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            anyhow::bail!("a log could not be flushed: the next start will recover");
        }
        // Checkpoints are written without fsync; make them durable before the marker says
        // the logs and their checkpoints can be trusted.
        crate::log::syncfs(data_dir)?;
        crate::metadata::write_atomically(&data_dir.join(CLEAN_SHUTDOWN_MARKER), b"")?;
        tracing::info!("stopped cleanly");
        Ok(())
    }
}

/// Whether the previous run stopped cleanly. The marker is removed at once: a crash of
/// this run must not look clean to the next one.
pub fn take_clean_shutdown_marker(data_dir: &Path) -> anyhow::Result<bool> {
    let marker = data_dir.join(CLEAN_SHUTDOWN_MARKER);
    match std::fs::remove_file(&marker) {
        Ok(()) => {
            std::fs::File::open(data_dir)?.sync_all()?;
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove {}", marker.display())),
    }
}
