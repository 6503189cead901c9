//! Shards: one glommio executor per selected core, pinned, each running the same
//! entry point with its own [`ShardContext`].

use std::future::Future;

use anyhow::{bail, Context};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{CpuSet, LocalExecutorBuilder, Placement, PoolPlacement};

use crate::mesh::{Mesh, MeshPeers};

/// Threads per shard for blocking calls (fdatasync, sendfile). glommio's default is one,
/// which queues every partition's fdatasync behind the others': an acks=all produce to 16
/// partitions waited for 16 syncs in a row. Concurrent syncs also let the filesystem
/// commit them together. The threads mostly sleep in the kernel; they share the shard's CPU.
const BLOCKING_THREADS: usize = 16;

/// What a shard knows about itself when it starts.
pub struct ShardContext<Req: Send + 'static, Resp: Send + 'static> {
    pub shard_id: usize,
    pub shard_count: usize,
    pub cpu: usize,
    /// The connection to every other shard; join it once at start with [`MeshPeers::join`].
    pub mesh: MeshPeers<Req, Resp>,
}

/// Picks `count` CPUs among those this process may run on, in order. Fails clearly when
/// more are asked for than exist, rather than stacking two shards on one core.
pub fn select_cpus(count: Option<usize>) -> anyhow::Result<Vec<usize>> {
    let available: Vec<usize> = core_affinity::get_core_ids()
        .context("cannot read the CPUs this process may run on")?
        .into_iter()
        .map(|core| core.id)
        .collect();
    let count = count.unwrap_or(available.len());
    if count == 0 {
        bail!("at least one core is needed");
    }
    if count > available.len() {
        bail!(
            "{count} cores requested but only {} are available to this process ({available:?})",
            available.len()
        );
    }
    Ok(available[..count].to_vec())
}

/// Starts one pinned executor per CPU in `cpus`, runs `entry` on each, and waits until all
/// of them return. The cross-shard mesh is bounded to `mesh_capacity` messages per link.
pub fn run_shards<Req, Resp, F, Fut>(
    cpus: &[usize],
    mesh_capacity: usize,
    entry: F,
) -> anyhow::Result<()>
where
    Req: Send + 'static,
    Resp: Send + 'static,
    F: Fn(ShardContext<Req, Resp>) -> Fut + Send + Clone + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let mesh: Mesh<Req, Resp> = MeshBuilder::full(cpus.len(), mesh_capacity);
    let mut handles = Vec::with_capacity(cpus.len());
    for (shard_id, &cpu) in cpus.iter().enumerate() {
        let entry = entry.clone();
        let mesh = mesh.clone();
        let shard_count = cpus.len();
        let this_cpu = CpuSet::online()
            .map_err(|e| anyhow::anyhow!("cannot list the online CPUs: {e}"))?
            .filter(|l| l.cpu == cpu);
        let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
            .name(&format!("shard-{shard_id}"))
            .blocking_thread_pool_placement(PoolPlacement::Custom(vec![this_cpu; BLOCKING_THREADS]))
            .spawn(move || async move {
                entry(ShardContext {
                    shard_id,
                    shard_count,
                    cpu,
                    mesh: MeshPeers::new(mesh),
                })
                .await
            })
            .map_err(|e| anyhow::anyhow!("cannot start shard {shard_id} on cpu {cpu}: {e}"))?;
        handles.push(handle);
    }
    for handle in handles {
        handle
            .join()
            .map_err(|e| anyhow::anyhow!("shard failed: {e}"))?;
    }
    Ok(())
}
