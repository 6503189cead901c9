//! Starting a broker: data dir checks, then one shard per core, each loading its
//! partitions and serving the listen address.

use std::rc::Rc;
use std::sync::Arc;

use anyhow::Context;

use crate::cluster::ClusterMember;
use crate::config::BrokerConfig;
use crate::log::checkpoint;
use crate::metadata::load_node_identity;
use crate::shard::{remove_deleted_dirs, Shard, CONTROLLER_SHARD};
use crate::shutdown::{take_clean_shutdown_marker, Shutdown};

/// How long a starting broker waits to be registered and unfenced, and for the offsets
/// topic, before serving anyway.
const STARTUP_REGISTRATION_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Bound on messages queued between two shards; senders wait beyond it.
const MESH_CAPACITY: usize = 1024;

/// Removes what deleted topics left behind when the broker last stopped, without
/// delaying the start: those directories are never served again.
fn remove_deleted_partitions_in_background(data_dir: &std::path::Path) {
    let data_dir = data_dir.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("remove-deleted".into())
        .spawn(move || match remove_deleted_dirs(&data_dir) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed data of deleted partitions"),
            Err(e) => tracing::error!("cannot remove data of deleted partitions: {e}"),
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start removing data of deleted partitions: {e}");
    }
}

/// Fails when another process already listens on a Kafka listener of this broker: the
/// shards bind with SO_REUSEPORT, so the bind itself would succeed and the kernel would
/// split clients between two brokers.
fn refuse_ports_already_served(config: &BrokerConfig) -> anyhow::Result<()> {
    if !config.cluster.roles.broker {
        return Ok(());
    }
    let listeners = [Some(config.listen), config.cluster.inter_broker_listen];
    for address in listeners.into_iter().flatten().filter(|a| a.port() != 0) {
        match corelog_io::listeners::live_listener_on(address) {
            Ok(None) => {}
            Ok(Some(pid)) => anyhow::bail!(
                "cannot listen on {address}: process {pid} already listens there (another broker?)"
            ),
            Err(e) => tracing::warn!("cannot check whether {address} is in use: {e}"),
        }
    }
    Ok(())
}

pub fn run(config: BrokerConfig, cores: Option<usize>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    let _data_dir_lock = lock_data_dir(&config.data_dir)?;
    refuse_ports_already_served(&config)?;
    raise_open_file_limit();
    let clean_start = take_clean_shutdown_marker(&config.data_dir)?;
    let identity = load_node_identity(&config.data_dir, config.node_id)?;
    let directory_id = identity.directory_id;
    let cluster_id: Arc<str> = identity.cluster_id.into();
    let cpus = choose_cpus(cores)?;
    let checkpointed = Arc::new(
        checkpoint::read_all(&config.data_dir).context("cannot read the offset checkpoints")?,
    );
    checkpoint::remove_files_of_shards_from(&config.data_dir, cpus.len())?;
    warn_about_host(&cpus, &config.data_dir);
    remove_deleted_partitions_in_background(&config.data_dir);
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
    let stopping = shutdown.clone();
    corelog_io::shard::run_shards(&cpus, MESH_CAPACITY, move |ctx| {
        let shutdown = stopping.clone();
        let config = config.clone();
        let cluster_id = cluster_id.clone();
        let checkpointed = checkpointed.clone();
        async move {
            let shard = Rc::new(Shard::new(
                ctx.shard_id,
                ctx.shard_count,
                config.clone(),
                cluster_id,
                clean_start,
                checkpointed,
            ));
            let served = shard.clone();
            let mesh = ctx
                .mesh
                .join(move |request| served.clone().serve(request))
                .await;
            shard.set_mesh(mesh);
            let member = if ctx.shard_id == CONTROLLER_SHARD {
                match ClusterMember::start(config.clone(), directory_id, shard.cluster_id.clone())
                    .await
                {
                    Ok(member) => {
                        let _ = shard.cluster.set(member.clone());
                        corelog_io::spawn_local(shard.clone().run_image_updates()).detach();
                        corelog_io::spawn_local(member.clone().run_controller()).detach();
                        if config.cluster.roles.broker {
                            corelog_io::spawn_local(member.clone().run_heartbeats()).detach();
                        }
                        Some(member)
                    }
                    Err(e) => {
                        tracing::error!("cannot start the controller quorum member: {e:#}");
                        std::process::exit(1);
                    }
                }
            } else {
                None
            };
            let serves_clients = config.cluster.roles.broker;
            if let Some(member) = &member {
                if serves_clients {
                    member.wait_ready(STARTUP_REGISTRATION_WAIT).await;
                    // Every shard opens its partitions before any serves.
                    shard.wait_published(member.quorum.applied_index()).await;
                }
                shard.clear_shards_to_serve().await;
            }
            shard.wait_cleared_to_serve().await;
            corelog_io::spawn_local(shard.clone().run_periodic_flush()).detach();
            corelog_io::spawn_local(shard.clone().run_retention()).detach();
            corelog_io::spawn_local(shard.clone().run_group_timers()).detach();
            corelog_io::spawn_local(crate::group::api::run_offsets_retention(shard.clone()))
                .detach();
            corelog_io::spawn_local(shard.clone().run_isr_maintenance()).detach();
            let bind = |address: std::net::SocketAddr| match corelog_io::TcpListener::bind(address)
            {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::error!("shard {} cannot listen on {address}: {e}", ctx.shard_id);
                    std::process::exit(1);
                }
            };
            // A controller-only node serves no Kafka clients.
            let accept = |address| {
                corelog_io::spawn_local(crate::server::accept_loop(shard.clone(), bind(address)))
            };
            let accepting = serves_clients.then(|| accept(config.listen));
            // Followers fetch on their own listener when one is configured.
            let inter_broker = config
                .cluster
                .inter_broker_listen
                .filter(|_| serves_clients)
                .map(accept);
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
            shutdown.wait_requested().await;
            if let Some(member) = &member {
                member.controlled_shutdown().await;
            }
            // Dropping the accept task closes the listener; open connections finish the
            // requests they have in flight and close.
            drop(accepting);
            drop(inter_broker);
            drop(metrics_endpoint);
            shard.stop_serving().await;
            shutdown.drained(ctx.shard_count).await;
            if !shard.close_logs_cleanly() {
                shutdown.flush_failed();
            }
            if let Some(member) = member {
                member.quorum.shutdown().await;
            }
        }
    })?;
    shutdown.finish(&data_dir)
}

/// Holds an exclusive lock on the data dir for the life of the process, so two brokers
/// can never write the same logs.
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
