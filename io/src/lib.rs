//! corelog-io: the thread-per-core runtime under corelog.
//!
//! Everything corelog needs from glommio goes through this crate, so a workaround for a
//! glommio bug (0.9.0 is no longer maintained upstream) or a swap of runtime touches one
//! place. It knows nothing of Kafka.

pub mod alloc;
pub mod listeners;
pub mod mesh;
pub mod net;
pub mod sendfile;
pub mod shard;

pub use glommio::net::{TcpListener, TcpStream};
pub use glommio::timer::sleep;
pub use glommio::{spawn_local, Task};

/// Runs a blocking closure (fdatasync, directory scans) on the shard's blocking pool so
/// the executor keeps serving sockets meanwhile.
pub async fn spawn_blocking<F, R>(func: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    glommio::executor().spawn_blocking(func).await
}

/// Yields to other tasks if this one has run past its time slice; long loops call it so
/// one busy connection cannot starve the shard.
pub async fn yield_if_needed() {
    glommio::yield_if_needed().await
}
