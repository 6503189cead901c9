//! The `corelog` command.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use corelog_broker::config::BrokerConfig;

mod cli;

#[global_allocator]
static ALLOCATOR: corelog_io::alloc::GuardedAllocator = corelog_io::alloc::GuardedAllocator;

#[derive(Parser)]
#[command(
    name = "corelog",
    version,
    about = "A Kafka-compatible, thread-per-core event streaming broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker.
    Serve {
        /// Address to accept Kafka clients on.
        #[arg(long, default_value = "127.0.0.1:9092")]
        listen: SocketAddr,
        /// Directory holding the partition logs and metadata.
        #[arg(long, default_value = "./data")]
        data_dir: PathBuf,
        /// Number of cores (one shard each); default: every core this process may use.
        #[arg(long)]
        cores: Option<usize>,
        /// TOML file of Kafka-style settings (e.g. `log.segment.bytes = 1048576`).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Serve Prometheus metrics and health checks over HTTP on this address.
        #[arg(long)]
        metrics_listen: Option<SocketAddr>,
        /// A setting as key=value, applied after the file; may be repeated.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    #[command(flatten)]
    Admin(cli::Command),
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CORELOG_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person watching, not in log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve {
            listen,
            data_dir,
            cores,
            config,
            mut settings,
            metrics_listen,
        } => {
            settings.extend(metrics_listen.map(|addr| format!("metrics.listen={addr}")));
            BrokerConfig::load(listen, data_dir, config.as_deref(), &settings)
                .and_then(|config| corelog_broker::broker::run(config, cores))
        }
        Command::Admin(command) => cli::run(command),
    };
    if let Err(e) = outcome {
        eprintln!("corelog: {e:#}");
        std::process::exit(1);
    }
}
