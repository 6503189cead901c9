//! Host checks and tuning for corelog, a thread-per-core broker: the library behind
//! `corelog-tune`, and what the broker calls at start to warn about a badly tuned host.
//!
//! Everything is read straight from /proc and /sys. A setting that cannot be read
//! (container, VM without cpufreq, old kernel) is a [`Status::Unknown`] finding, never an
//! error or a panic. Nothing in the checks writes; fixes are carried out only by
//! [`apply::apply`] through [`apply::Writer`].

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod apply;
pub mod balloon;
pub mod block;
pub mod cores;
pub mod cpu;
pub mod cpulist;
pub mod finding;
pub mod irq;
pub mod limits;
pub mod report;
pub mod sysctl;
pub mod sysfs;
pub mod uring;

use std::path::Path;

pub use cores::pick_cores;
pub use finding::{Finding, Fix, Status, Write};

/// Where the broker keeps its log unless told otherwise (`corelog serve --data-dir`).
pub const DEFAULT_DATA_DIR: &str = "./data";

/// The name of every finding [`check_host`] returns, in its order.
pub const SETTINGS: [&str; 17] = [
    "cpu_governor",
    "smt",
    "irq_affinity",
    "clocksource",
    "transparent_hugepages",
    "vm.swappiness",
    "free_page_reporting",
    "memlock_limit",
    "nofile_limit",
    "net.core.somaxconn",
    "net.core.rmem_max",
    "net.core.wmem_max",
    "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem",
    "fs.aio-max-nr",
    "io_scheduler",
    "io_uring",
];

/// Checks the host for a broker pinned to `broker_cores` with its data in
/// [`DEFAULT_DATA_DIR`]. One finding per entry of [`SETTINGS`], in that order. An empty
/// `broker_cores` means "what [`pick_cores`]`(None)` would choose".
pub fn check_host(broker_cores: &[usize]) -> Vec<Finding> {
    check_host_at(broker_cores, Path::new(DEFAULT_DATA_DIR))
}

/// [`check_host`] with the data directory whose disk's I/O scheduler is checked. The
/// directory need not exist yet: its nearest existing parent decides the disk.
pub fn check_host_at(broker_cores: &[usize], data_dir: &Path) -> Vec<Finding> {
    let picked;
    let cores = if broker_cores.is_empty() {
        picked = pick_cores(None);
        &picked
    } else {
        broker_cores
    };
    vec![
        cpu::check_governor(),
        cpu::check_smt(cores),
        irq::check_irq_affinity(cores),
        cpu::check_clocksource(),
        sysctl::check_thp(),
        sysctl::check_swappiness(),
        balloon::check_free_page_reporting(),
        limits::check_memlock(),
        limits::check_nofile(),
        sysctl::check_somaxconn(),
        sysctl::check_rmem_max(),
        sysctl::check_wmem_max(),
        sysctl::check_tcp_rmem(),
        sysctl::check_tcp_wmem(),
        sysctl::check_aio_max_nr(),
        block::check_scheduler(data_dir),
        uring::check_io_uring(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_finding_per_setting_in_order() {
        let findings = check_host(&[0]);
        let names: Vec<&str> = findings.iter().map(|f| f.name).collect();
        assert_eq!(names, SETTINGS);
    }

    #[test]
    fn fixes_only_on_warnings_and_writes_only_under_kernel_trees() {
        for f in check_host(&[]) {
            assert_eq!(f.fix.is_some(), f.status == Status::Warn, "{f:?}");
            if let Some(Fix::Write(writes)) = &f.fix {
                assert!(!writes.is_empty(), "{f:?}");
                for w in writes {
                    assert!(
                        apply::WRITABLE_ROOTS.iter().any(|r| w.path.starts_with(r)),
                        "{f:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn odd_data_dirs_are_unknown_not_panics() {
        for dir in ["/proc/self", "/dev/shm", "", "/nonexistent/deeper/still"] {
            let f = block::check_scheduler(Path::new(dir));
            assert_eq!(f.name, "io_scheduler");
        }
    }
}
