//! corelog-tune: checks and tunes a Linux host for the corelog broker.
//!
//! Exit codes: 0 when it ran (warnings included), 1 when `apply` is refused (not root) or a
//! write failed, 2 on usage errors.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Parser, Subcommand, ValueEnum};

use corelog_tuning::apply::{apply, Writer};
use corelog_tuning::cpulist::{format_cpu_list, parse_cpu_list};
use corelog_tuning::{check_host_at, cpu, pick_cores, report, DEFAULT_DATA_DIR};

#[derive(Parser)]
#[command(
    name = "corelog-tune",
    version,
    about = "Check and tune a Linux host for corelog's thread-per-core broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Report every setting: current value, recommended value, status and why it matters.
    Check {
        #[command(flatten)]
        target: Target,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
    },
    /// Change what can be changed (as root); print each change or why it was skipped.
    Apply {
        #[command(flatten)]
        target: Target,
        /// Print what would change and write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(clap::Args)]
struct Target {
    /// The broker's cores, as a CPU list ("0-3,8"). Default: what the broker would pick
    /// (one thread per physical core, interrupt-heavy cores avoided on larger hosts).
    #[arg(long, value_name = "LIST")]
    cores: Option<CpuList>,
    /// The broker's data directory; its disk's I/O scheduler is checked.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_DATA_DIR)]
    data_dir: PathBuf,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

/// A parsed `--cores` value. A newtype, because clap treats a bare Vec as "many values".
#[derive(Clone)]
struct CpuList(Vec<usize>);

impl FromStr for CpuList {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let cpus = parse_cpu_list(s)?;
        if cpus.is_empty() {
            return Err("the CPU list is empty".to_string());
        }
        Ok(CpuList(cpus))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (target, action) = match cli.command {
        Command::Check { target, format } => (target, Action::Check(format)),
        Command::Apply { target, dry_run } => (target, Action::Apply { dry_run }),
    };
    let cores = match resolve_cores(target.cores) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let findings = check_host_at(&cores, &target.data_dir);
    match action {
        Action::Check(Format::Table) => {
            print(&report::table(&cores, &target.data_dir, &findings));
            ExitCode::SUCCESS
        }
        Action::Check(Format::Json) => {
            print(&report::json(&cores, &target.data_dir, &findings));
            print("\n");
            ExitCode::SUCCESS
        }
        Action::Apply { dry_run } => {
            let mut writer = Writer::new(dry_run);
            // SAFETY: geteuid has no preconditions and cannot fail.
            let is_root = unsafe { libc::geteuid() } == 0;
            match apply(&findings, &mut writer, is_root) {
                Ok(report) => {
                    let mut text = format!(
                        "broker cores: {}   data dir: {}{}\n",
                        format_cpu_list(&cores),
                        target.data_dir.display(),
                        if dry_run { "   (dry run)" } else { "" }
                    );
                    for line in &report.lines {
                        text.push_str(line);
                        text.push('\n');
                    }
                    print(&text);
                    if report.failed > 0 {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

enum Action {
    Check(Format),
    Apply { dry_run: bool },
}

/// `--cores` as given, checked against the CPUs that exist; otherwise the broker's own pick.
fn resolve_cores(requested: Option<CpuList>) -> Result<Vec<usize>, String> {
    let Some(CpuList(cores)) = requested else {
        return Ok(pick_cores(None));
    };
    // Only refuse what is certainly wrong: when the online list cannot be read, trust it.
    if let Ok(online) = cpu::online_cpus() {
        let missing: Vec<usize> = cores
            .iter()
            .copied()
            .filter(|c| !online.contains(c))
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "--cores {}: cpu {} not online (online: {})",
                format_cpu_list(&cores),
                format_cpu_list(&missing),
                format_cpu_list(&online)
            ));
        }
    }
    Ok(cores)
}

/// stdout without println!'s panic when the reader has gone (`corelog-tune check | head`).
fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}
