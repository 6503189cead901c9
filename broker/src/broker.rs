//! Starting a broker: data dir checks, then one shard per core, each loading its
//! partitions and serving the listen address.

use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context;

use crate::config::BrokerConfig;
use crate::metadata::{load_cluster_id, TopicRegistry};
use crate::shard::{Shard, CONTROLLER_SHARD};
use crate::shutdown::{take_clean_shutdown_marker, Shutdown};

/// Bound on messages queued between two shards; senders wait beyond it.
const MESH_CAPACITY: usize = 1024;

pub fn run(config: BrokerConfig, cores: Option<usize>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    raise_open_file_limit();
    let clean_start = take_clean_shutdown_marker(&config.data_dir)?;
    let cluster_id: Arc<str> = load_cluster_id(&config.data_dir, config.node_id)?.into();
    // Read the registry before starting shards, so a corrupt one fails the start loudly.
    let registry = TopicRegistry::load(&config.data_dir)?;
    let registry = std::sync::Mutex::new(Some(registry));
    let cpus = choose_cpus(cores)?;
    warn_about_host(&cpus, &config.data_dir);
    tracing::info!(
        listen = %config.listen,
        data_dir = %config.data_dir.display(),
        shards = cpus.len(),
        cpus = ?cpus,
        cluster_id = %cluster_id,
        "corelog starting"
    );
    let shutdown = Shutdown::on_signals()?;
    let data_dir = config.data_dir.clone();
    let config = Arc::new(config);
    let registry = Arc::new(registry);
    let stopping = shutdown.clone();
    corelog_io::shard::run_shards(&cpus, MESH_CAPACITY, move |ctx| {
        let shutdown = stopping.clone();
        let config = config.clone();
        let cluster_id = cluster_id.clone();
        let registry = registry.clone();
        async move {
            let owned_registry = if ctx.shard_id == CONTROLLER_SHARD {
                registry.lock().expect("registry handed over once").take()
            } else {
                None
            };
            let shard = Rc::new(Shard::new(
                ctx.shard_id,
                ctx.shard_count,
                config.clone(),
                cluster_id,
                owned_registry,
                clean_start,
            ));
            let served = shard.clone();
            let mesh = ctx
                .mesh
                .join(move |request| served.clone().serve(request))
                .await;
            shard.set_mesh(mesh);
            if ctx.shard_id == CONTROLLER_SHARD {
                if let Err(e) = shard.publish_initial_image().await {
                    tracing::error!("cannot create the internal offsets topic: {e:#}");
                    std::process::exit(1);
                }
            }
            shard.wait_for_first_image().await;
            corelog_io::spawn_local(shard.clone().run_periodic_flush()).detach();
            corelog_io::spawn_local(shard.clone().run_retention()).detach();
            corelog_io::spawn_local(shard.clone().run_group_timers()).detach();
            corelog_io::spawn_local(crate::group::api::run_offsets_retention(shard.clone()))
                .detach();
            let listener = match corelog_io::TcpListener::bind(config.listen) {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!(
                        "shard {} cannot listen on {}: {e}",
                        ctx.shard_id,
                        config.listen
                    );
                    std::process::exit(1);
                }
            };
            tracing::info!(shard = ctx.shard_id, cpu = ctx.cpu, "shard serving");
            let metrics_endpoint = match (ctx.shard_id, config.metrics_listen) {
                (CONTROLLER_SHARD, Some(address)) => match corelog_io::TcpListener::bind(address) {
                    Ok(listener) => Some(corelog_io::spawn_local(crate::admin_http::serve(
                        shard.clone(),
                        listener,
                    ))),
                    Err(e) => {
                        tracing::error!("cannot serve metrics on {address}: {e}");
                        std::process::exit(1);
                    }
                },
                _ => None,
            };
            let accepting =
                corelog_io::spawn_local(crate::server::accept_loop(shard.clone(), listener));
            shutdown.wait_requested().await;
            // Dropping the accept task closes the listener; open connections finish the
            // requests they have in flight and close.
            drop(accepting);
            drop(metrics_endpoint);
            shard.stop_serving().await;
            shutdown.drained(ctx.shard_count).await;
            if !shard.close_logs_cleanly() {
                shutdown.flush_failed();
            }
        }
    })?;
    shutdown.finish(&data_dir)
}

/// Holds an exclusive lock on the data dir for the life of the process, so two brokers
/// can never write the same logs. (Shards bind with SO_REUSEPORT, so a second broker on
/// the same port would not be refused by the kernel.)
fn lock_data_dir(dir: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(".lock");
    let file = std::fs::File::create(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        anyhow::bail!(
            "data dir {} is in use by another corelog process",
            dir.display()
        );
    }
    Ok(file)
}

/// One shard per physical core by default, the cores busiest with device interrupts
/// last: the same choice `corelog-tune` recommends. An explicit count must be available.
fn choose_cpus(cores: Option<usize>) -> anyhow::Result<Vec<usize>> {
    match cores {
        None => Ok(corelog_tuning::pick_cores(None)),
        Some(count) => {
            corelog_io::shard::select_cpus(Some(count))?;
            Ok(corelog_tuning::pick_cores(Some(count)))
        }
    }
}

/// Logs each host setting that hurts latency, as `corelog-tune check` reports it.
fn warn_about_host(cpus: &[usize], data_dir: &std::path::Path) {
    for finding in corelog_tuning::check_host_at(cpus, data_dir) {
        if finding.status == corelog_tuning::Status::Warn {
            tracing::warn!(
                "host setting {} is {}, recommended {} (`corelog-tune check` says why)",
                finding.name,
                finding.current,
                finding.recommended
            );
        }
    }
}

/// Lifts the soft open-file limit to the hard one: each partition holds its directory and
/// segment files open, and each client a socket; the usual soft limit of 1024 runs out
/// at a few hundred partitions.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit read and write only the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let soft = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                tracing::debug!(
                    from = soft,
                    to = limit.rlim_max,
                    "raised the open-file limit"
                );
            }
        }
    }
}
