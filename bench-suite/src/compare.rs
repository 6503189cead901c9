//! Side by side: one scenario against several targets in turn (never at once: they would
//! share this machine's cores), then one table with each target's ratio to the first.

use std::str::FromStr;

use anyhow::{bail, Context, Result};

use crate::report::RunSummary;
use crate::workload::runner::{run, RunOptions};
use crate::workload::scenario::Scenario;

/// `name=host:port` or `name=host:port@pid` (the pid adds broker CPU and memory figures).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub bootstrap: String,
    pub pid: Option<i32>,
}

impl FromStr for Target {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        let (name, rest) = s
            .split_once('=')
            .context("a target is name=host:port[@pid]")?;
        let (bootstrap, pid) = match rest.split_once('@') {
            Some((b, p)) => (b, Some(p.parse().context("target pid")?)),
            None => (rest, None),
        };
        if name.is_empty() || bootstrap.is_empty() {
            bail!("a target is name=host:port[@pid]");
        }
        Ok(Target {
            name: name.into(),
            bootstrap: bootstrap.into(),
            pid,
        })
    }
}

/// Runs `scenario` against each target, in order. A target that fails is reported (as
/// `name: error`) and the others still run, so one broken peer hides no one's figures.
pub fn compare(
    scenario: &Scenario,
    targets: &[Target],
    base: &RunOptions,
) -> (Vec<RunSummary>, Vec<String>) {
    let mut runs = Vec::new();
    let mut failures = Vec::new();
    for t in targets {
        if base.progress {
            eprintln!("== {} ({}) ==", t.name, t.bootstrap);
        }
        let opts = RunOptions {
            target: t.name.clone(),
            bootstrap: t.bootstrap.clone(),
            broker_pid: t.pid,
            ..base.clone()
        };
        match run(scenario, &opts) {
            Ok(r) => runs.push(r),
            Err(e) => {
                eprintln!("Error: target {}: {e:#}", t.name);
                failures.push(format!("{}: {e:#}", t.name));
            }
        }
    }
    (runs, failures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert_eq!(
            "corelog=127.0.0.1:9092@42".parse::<Target>().unwrap(),
            Target {
                name: "corelog".into(),
                bootstrap: "127.0.0.1:9092".into(),
                pid: Some(42)
            }
        );
        assert_eq!("null=localhost:9999".parse::<Target>().unwrap().pid, None);
        assert!("127.0.0.1:9092".parse::<Target>().is_err());
        assert!("x=h:1@notapid".parse::<Target>().is_err());
    }
}
