//! corelog-bench: drive a Kafka-compatible broker with load and report honest figures.
//! See bench-suite/README.md.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use corelog_bench::client::batch::Compression;
use corelog_bench::compare::{compare, Target};
use corelog_bench::report::{self, table};
use corelog_bench::workload::runner::{Driver, RunOptions};
use corelog_bench::workload::scenario::{
    Acks, GroupProtocol, KeyDistribution, MessageSize, Rate, Scenario, BUILT_IN,
};

#[derive(Parser)]
#[command(
    name = "corelog-bench",
    version,
    about = "Load generator and side-by-side benchmarks for Kafka-compatible brokers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario against one broker.
    Run {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap: String,
        /// Name of the target in reports.
        #[arg(long, default_value = "corelog")]
        name: String,
        /// The broker's pid: adds its CPU time and peak RSS to the report.
        #[arg(long)]
        broker_pid: Option<i32>,
        #[command(flatten)]
        common: Common,
    },
    /// Run a scenario against several brokers in turn and print their ratios.
    Compare {
        /// `name=host:port[@pid]`, repeated; the first is the baseline of the ratios.
        #[arg(long = "target", required = true)]
        targets: Vec<Target>,
        /// Runs per target, the order reversed every other round; the table pools them.
        /// Two or more make the ratios fairer: the target that runs first is often favoured.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
        rounds: u32,
        #[command(flatten)]
        common: Common,
    },
    /// Serve a broker that keeps produced records in memory only, serving them back to
    /// fetches (the generator's own ceiling, producing and consuming).
    NullBroker {
        #[arg(long, default_value = "127.0.0.1:9999")]
        listen: String,
        /// MiB of produce requests kept for fetches; past it the oldest go.
        #[arg(long, default_value_t = corelog_bench::null_broker::DEFAULT_RETAIN_MIB)]
        retain_mib: usize,
    },
    /// List the built-in scenarios, or print one as TOML.
    Scenarios { name: Option<String> },
}

#[derive(Args)]
struct Common {
    /// A built-in scenario name or a TOML file.
    #[arg(long, default_value = "smoke")]
    scenario: String,
    #[command(flatten)]
    overrides: Overrides,
    /// Cores to pin generator threads to, e.g. `1` or `0,1` (default: all).
    #[arg(long, value_delimiter = ',')]
    cpus: Vec<usize>,
    #[arg(long, value_enum, default_value = "builtin")]
    driver: Driver,
    /// Directory for the report files (default: bench-results/<timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The first target's data directory: acks=all scenarios then also measure the disk's
    /// own write + fdatasync latency there, at the byte rate that target sustained.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Write no files, print only.
    #[arg(long)]
    no_save: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

/// Per-field overrides of the scenario.
#[derive(Args)]
struct Overrides {
    #[arg(long)]
    topic_prefix: Option<String>,
    #[arg(long)]
    topics: Option<u32>,
    #[arg(long)]
    partitions: Option<u32>,
    #[arg(long)]
    producers: Option<u32>,
    #[arg(long)]
    connections_per_producer: Option<u32>,
    #[arg(long)]
    consumers: Option<u32>,
    /// `100` or `64..1024` bytes.
    #[arg(long)]
    message_size: Option<MessageSize>,
    /// none, uniform or zipf.
    #[arg(long)]
    keys: Option<KeyDistribution>,
    #[arg(long)]
    key_space: Option<u64>,
    #[arg(long)]
    headers: Option<u32>,
    /// 0, 1 or all.
    #[arg(long)]
    acks: Option<Acks>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    linger_ms: Option<f64>,
    /// none, gzip, lz4 or zstd.
    #[arg(long)]
    compression: Option<Compression>,
    /// `max`, msgs/s (`250000`, `250k`, `1.5m`) or `NN%` of a measured max.
    #[arg(long)]
    rate: Option<Rate>,
    #[arg(long)]
    duration: Option<u64>,
    #[arg(long)]
    warmup: Option<u64>,
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Consume-only: fill the topics for this many seconds first (0: off).
    #[arg(long)]
    prefill_secs: Option<u64>,
    /// Consumers use KIP-227 fetch sessions (`true`/`false`).
    #[arg(long)]
    fetch_sessions: Option<bool>,
    /// How consumers share partitions: none (manual), consumer (KIP-848) or classic
    /// (rdkafka only).
    #[arg(long, value_enum)]
    group_protocol: Option<GroupProtocol>,
    /// The consumers' group id.
    #[arg(long)]
    consumer_group: Option<String>,
    /// Group consumers commit their offsets (`true`/`false`).
    #[arg(long)]
    commit_offsets: Option<bool>,
    /// A librdkafka setting for `--driver rdkafka` clients, `KEY=VALUE`; repeatable.
    #[arg(long = "rdkafka-set", value_parser = key_value)]
    rdkafka_settings: Vec<(String, String)>,
}

fn key_value(s: &str) -> Result<(String, String)> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => anyhow::bail!("expected KEY=VALUE, got {s:?}"),
    }
}

impl Overrides {
    fn apply(self, s: &mut Scenario) {
        macro_rules! set {
            ($($field:ident => $target:ident),*) => {
                $(if let Some(v) = self.$field { s.$target = v; })*
            };
        }
        set!(topic_prefix => topic_prefix, topics => topics, partitions => partitions,
             producers => producers, connections_per_producer => connections_per_producer,
             consumers => consumers, message_size => message_size, keys => keys,
             key_space => key_space, headers => headers, acks => acks,
             batch_size => batch_size, linger_ms => linger_ms, compression => compression,
             rate => rate, duration => duration_secs, warmup => warmup_secs,
             max_in_flight => max_in_flight, prefill_secs => prefill_secs,
             fetch_sessions => fetch_sessions, group_protocol => group_protocol,
             consumer_group => consumer_group, commit_offsets => commit_offsets);
        s.rdkafka_config.extend(self.rdkafka_settings);
    }
}

fn main() {
    // One line per cause, without the backtrace anyhow captures when RUST_BACKTRACE is set.
    if let Err(e) = run_cli() {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
}

fn run_cli() -> Result<()> {
    let cli = Cli::parse();
    let command_line = std::env::args().collect::<Vec<_>>().join(" ");
    match cli.command {
        Command::Run {
            bootstrap,
            name,
            broker_pid,
            common,
        } => {
            let target = Target {
                name,
                bootstrap,
                pid: broker_pid,
            };
            execute(common, vec![target], 1, command_line)
        }
        Command::Compare {
            targets,
            rounds,
            common,
        } => execute(common, targets, rounds, command_line),
        Command::NullBroker { listen, retain_mib } => {
            let broker = corelog_bench::null_broker::start(&listen, retain_mib << 20)?;
            eprintln!("null broker listening on {}", broker.addr);
            loop {
                std::thread::park();
            }
        }
        Command::Scenarios { name: Some(name) } => {
            print!("{}", toml::to_string(&Scenario::load(&name)?)?);
            Ok(())
        }
        Command::Scenarios { name: None } => {
            for (name, _) in BUILT_IN {
                println!("{name:18} {}", Scenario::load(name)?.description);
            }
            Ok(())
        }
    }
}

fn execute(common: Common, targets: Vec<Target>, rounds: u32, command: String) -> Result<()> {
    let mut scenario = Scenario::load(&common.scenario)?;
    common.overrides.apply(&mut scenario);
    scenario.validate()?;
    let base = RunOptions {
        target: targets[0].name.clone(),
        bootstrap: targets[0].bootstrap.clone(),
        broker_pid: targets[0].pid,
        cpus: common.cpus,
        driver: common.driver,
        progress: !common.quiet,
        command,
    };
    let (mut runs, failures) = compare(&scenario, &targets, &base, rounds);
    if let (Some(dir), Some(first)) = (&common.data_dir, runs.first_mut()) {
        if scenario.acks == Acks::All && first.target == targets[0].name {
            if base.progress {
                eprintln!("== disk: write + fdatasync in {} ==", dir.display());
            }
            let probe = |files| {
                corelog_bench::disk_probe::fdatasync_loop(
                    dir,
                    first.produce.mb_per_sec * 1e6,
                    scenario.message_size.bounds().0,
                    Duration::from_secs(scenario.duration_secs),
                    files,
                )
            };
            let one_file = probe(1)?;
            let partitions = (scenario.topics * scenario.partitions) as usize;
            let per_partition = match partitions {
                1 => None,
                n => {
                    if base.progress {
                        eprintln!("== disk: the same over {n} files at once ==");
                    }
                    Some(probe(n)?)
                }
            };
            first.disk_sync = Some(one_file);
            first.disk_sync_per_partition = per_partition;
        }
    }
    if !runs.is_empty() {
        println!("{}", table::table(&runs));
    }
    for r in &runs {
        for n in &r.notes {
            println!("- {}: {n}", r.target);
        }
    }
    if !common.no_save {
        let dir = common
            .out
            .unwrap_or_else(|| PathBuf::from("bench-results").join(report::timestamp()));
        let stem = targets
            .iter()
            .map(|t| t.name.as_str())
            .collect::<Vec<_>>()
            .join("-vs-");
        let stem = format!("{}-{stem}", scenario.name);
        let files = report::write_files(&dir, &stem, &scenario, &runs, &failures, &base.command)?;
        for f in files {
            println!("wrote {}", f.display());
        }
    }
    if !failures.is_empty() {
        anyhow::bail!("{} of {} targets failed", failures.len(), targets.len());
    }
    Ok(())
}
