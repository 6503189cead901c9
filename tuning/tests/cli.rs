//! The real `corelog-tune` binary against this host. CI runs these as root on a small VM
//! that may lack cpufreq and more, so they assert shape and safety, not tuning values.
//! `apply` only ever runs here with --dry-run.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use corelog_tuning::SETTINGS;
use serde_json::Value;

fn tune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_corelog-tune"))
        .args(args)
        .output()
        .expect("run corelog-tune")
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

fn check_json(extra: &[&str]) -> Value {
    let mut args = vec!["check", "--format", "json"];
    args.extend_from_slice(extra);
    let out = tune(&args);
    assert!(out.status.success(), "{out:?}");
    serde_json::from_str(&stdout(&out)).expect("check --format json prints JSON")
}

#[test]
fn check_table_has_a_row_per_setting() {
    let out = tune(&["check"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    for name in SETTINGS {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no row for {name} in:\n{text}"));
        let status = row.split_whitespace().nth(1);
        assert!(
            matches!(status, Some("ok" | "warn" | "unknown")),
            "bad status in {row:?}"
        );
    }
    assert_eq!(text.matches("why: ").count(), SETTINGS.len(), "{text}");
}

#[test]
fn check_json_has_every_setting() {
    let report = check_json(&[]);
    let findings = report["findings"].as_array().expect("findings array");
    let names: Vec<&str> = findings
        .iter()
        .map(|f| f["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, SETTINGS);
    for f in findings {
        let status = f["status"].as_str().expect("status");
        assert!(matches!(status, "ok" | "warn" | "unknown"), "{f}");
        assert!(
            f["current"].is_string() && f["recommended"].is_string(),
            "{f}"
        );
        assert!(!f["why"].as_str().unwrap_or_default().is_empty(), "{f}");
        // A fix exactly when there is something to fix.
        assert_eq!(f["fix"].is_null(), status != "warn", "{f}");
    }
    let cores = report["broker_cores"].as_array().expect("broker_cores");
    assert!(!cores.is_empty());
}

#[test]
fn check_takes_cores_and_data_dir() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("not/created/yet");
    let report = check_json(&["--cores", "0", "--data-dir", data.to_str().expect("utf-8")]);
    assert_eq!(report["broker_cores"], serde_json::json!([0]));
    assert_eq!(report["data_dir"], data.to_str().expect("utf-8"));
    // The data dir is not created by a check.
    assert!(!data.exists());
}

#[test]
fn usage_errors_exit_non_zero() {
    for args in [
        &["check", "--format", "xml"][..],
        &["check", "--cores", "0-x"],
        &["check", "--cores", "3-1"],
        &["check", "--cores", ""],
        &["check", "--cores", "8191"],
        &["apply", "--format", "json"],
        &["tune-everything"],
        &[],
    ] {
        let out = tune(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert!(out.stdout.is_empty(), "{args:?} printed to stdout: {out:?}");
    }
}

/// Every kernel value `apply` could touch, as text (or the read error), keyed by path.
fn snapshot(extra: &[PathBuf]) -> BTreeMap<PathBuf, String> {
    let mut paths: Vec<PathBuf> = [
        "/proc/sys/vm/swappiness",
        "/proc/sys/net/core/somaxconn",
        "/proc/sys/net/core/rmem_max",
        "/proc/sys/net/core/wmem_max",
        "/proc/sys/net/ipv4/tcp_rmem",
        "/proc/sys/net/ipv4/tcp_wmem",
        "/proc/sys/fs/aio-max-nr",
        "/proc/sys/kernel/io_uring_disabled",
        "/sys/kernel/mm/transparent_hugepage/enabled",
        "/sys/devices/system/cpu/smt/control",
        "/sys/devices/system/clocksource/clocksource0/current_clocksource",
    ]
    .iter()
    .map(PathBuf::from)
    .collect();
    let glob = |dir: &str, suffix: &str| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .map(|e| e.path().join(suffix))
                    .filter(|p| p.exists())
                    .collect()
            })
            .unwrap_or_default()
    };
    paths.extend(glob("/sys/devices/system/cpu", "cpufreq/scaling_governor"));
    paths.extend(glob("/sys/block", "queue/scheduler"));
    paths.extend(glob("/proc/irq", "smp_affinity_list"));
    paths.extend_from_slice(extra);
    paths
        .into_iter()
        .map(|p| {
            let value = std::fs::read_to_string(&p).unwrap_or_else(|e| format!("error: {e}"));
            (p, value)
        })
        .collect()
}

/// The files the check says apply would write.
fn planned_writes(report: &Value) -> Vec<(String, PathBuf)> {
    let mut writes = Vec::new();
    for f in report["findings"].as_array().into_iter().flatten() {
        for w in f["fix"]["write"].as_array().into_iter().flatten() {
            let name = f["name"].as_str().unwrap_or_default().to_string();
            writes.push((name, PathBuf::from(w["path"].as_str().unwrap_or_default())));
        }
    }
    writes
}

#[test]
fn apply_dry_run_changes_nothing() {
    let report = check_json(&[]);
    let planned = planned_writes(&report);
    let extra: Vec<PathBuf> = planned.iter().map(|(_, p)| p.clone()).collect();
    for (_, path) in &planned {
        assert!(
            ["/proc/sys/", "/sys/", "/proc/irq/"]
                .iter()
                .any(|root| path.starts_with(Path::new(root))),
            "planned write outside the kernel trees: {}",
            path.display()
        );
    }

    let before = snapshot(&extra);
    let out = tune(&["apply", "--dry-run"]);
    let after = snapshot(&extra);

    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = stdout(&out);
    for (path, value) in &before {
        assert_eq!(
            after.get(path),
            Some(value),
            "{} changed during apply --dry-run",
            path.display()
        );
    }
    assert!(text.contains("(dry run)"), "{text}");
    assert!(
        !text.contains("\nchanged "),
        "dry run claims a change:\n{text}"
    );
    // Every setting is accounted for: ok, skipped (with why), or what would change.
    for name in SETTINGS {
        assert!(
            text.lines().any(|l| l
                .split_whitespace()
                .any(|w| w.trim_end_matches(':') == name)),
            "{name} missing from:\n{text}"
        );
    }
    // And each write the check plans is announced, not made.
    for (name, path) in &planned {
        let announced = text.lines().any(|l| {
            l.starts_with(&format!("would change {name}")) && l.contains(&*path.to_string_lossy())
        });
        assert!(
            announced,
            "no 'would change' for {name} {}:\n{text}",
            path.display()
        );
    }
}
