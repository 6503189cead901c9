//! CPUs: which exist and may be used, their SMT siblings, frequency governor and clocksource.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::cpulist::{format_cpu_list, parse_cpu_list};
use crate::finding::{Finding, Fix, Write};
use crate::sysfs::{self, parse_choice};

const CPU_DIR: &str = "/sys/devices/system/cpu";
const CLOCKSOURCE_DIR: &str = "/sys/devices/system/clocksource/clocksource0";

/// CPUs the kernel has online.
pub fn online_cpus() -> Result<Vec<usize>, String> {
    parse_cpu_list(&sysfs::read(format!("{CPU_DIR}/online"))?)
}

/// The CPUs this process may run on (its affinity mask, narrowed by cgroups/taskset), which is
/// what the broker can pin shards to. Falls back to the online CPUs, then to
/// `available_parallelism`, so there is always at least one CPU.
pub fn allowed_cpus() -> Vec<usize> {
    if let Some(cpus) = sched_affinity().filter(|c| !c.is_empty()) {
        return cpus;
    }
    if let Ok(cpus) = online_cpus() {
        if !cpus.is_empty() {
            return cpus;
        }
    }
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..n).collect()
}

fn sched_affinity() -> Option<Vec<usize>> {
    // SAFETY: cpu_set_t is plain bits, valid when zeroed; the kernel writes at most
    // size_of::<cpu_set_t>() bytes into it. Hosts with more than 1024 CPUs get EINVAL here
    // and use the fallback.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let bits = std::mem::size_of::<libc::cpu_set_t>() * 8;
        Some(
            (0..bits)
                .filter(|&cpu| libc::CPU_ISSET(cpu, &set))
                .collect(),
        )
    }
}

/// The hardware threads sharing `cpu`'s physical core, itself included.
pub fn thread_siblings(cpu: usize) -> Result<Vec<usize>, String> {
    // core_cpus_list is the newer name (5.x); thread_siblings_list is kept for compatibility
    // and present on older kernels too.
    let dir = format!("{CPU_DIR}/cpu{cpu}/topology");
    let text = sysfs::read(format!("{dir}/thread_siblings_list"))
        .or_else(|_| sysfs::read(format!("{dir}/core_cpus_list")))?;
    let mut siblings = parse_cpu_list(&text)?;
    if !siblings.contains(&cpu) {
        siblings.push(cpu);
        siblings.sort_unstable();
    }
    Ok(siblings)
}

/// Sibling lists of the given CPUs; CPUs whose topology cannot be read are left out, which
/// makes them count as cores of their own.
pub fn sibling_map(cpus: &[usize]) -> BTreeMap<usize, Vec<usize>> {
    cpus.iter()
        .filter_map(|&cpu| thread_siblings(cpu).ok().map(|s| (cpu, s)))
        .collect()
}

const GOVERNOR_WHY: &str = "Power-saving governors lower the clock of idle cores and take \
milliseconds to ramp back up, so a request arriving at a quiet shard is served slowly; \
'performance' keeps every core at full speed, which is what a polling thread-per-core \
reactor expects.";

/// The frequency governor of every online CPU (IRQ cores matter too: they run the network
/// stack for the broker).
pub fn check_governor() -> Finding {
    const NAME: &str = "cpu_governor";
    let recommended = "performance".to_string();
    let cpus = match online_cpus() {
        Ok(cpus) => cpus,
        Err(e) => return Finding::unknown(NAME, GOVERNOR_WHY, e, recommended),
    };
    let mut by_governor: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut unreadable = Vec::new();
    let mut writes = Vec::new();
    let mut missing_performance = Vec::new();
    for &cpu in &cpus {
        let dir = PathBuf::from(format!("{CPU_DIR}/cpu{cpu}/cpufreq"));
        let governor = match sysfs::read(dir.join("scaling_governor")) {
            Ok(g) => g,
            Err(_) => {
                unreadable.push(cpu);
                continue;
            }
        };
        if governor != "performance" {
            // Offer the write only when the driver lists the governor; when the list itself
            // cannot be read, try anyway and let the write report the error.
            let available = sysfs::read(dir.join("scaling_available_governors"));
            match available {
                Ok(list) if !list.split_whitespace().any(|g| g == "performance") => {
                    missing_performance.push(cpu)
                }
                _ => writes.push(Write {
                    what: format!("cpu{cpu}"),
                    path: dir.join("scaling_governor"),
                    from: governor.clone(),
                    to: "performance".to_string(),
                }),
            }
        }
        by_governor.entry(governor).or_default().push(cpu);
    }
    if by_governor.is_empty() {
        return Finding::unknown(
            NAME,
            GOVERNOR_WHY,
            "no cpufreq interface (VM, container, or frequency managed by firmware)".to_string(),
            recommended,
        );
    }
    let mut parts: Vec<String> = by_governor
        .iter()
        .map(|(g, cpus)| format!("{g} on cpu {}", format_cpu_list(cpus)))
        .collect();
    if !unreadable.is_empty() {
        parts.push(format!(
            "no cpufreq on cpu {}",
            format_cpu_list(&unreadable)
        ));
    }
    let current = parts.join("; ");
    if writes.is_empty() && missing_performance.is_empty() {
        return Finding::ok(NAME, GOVERNOR_WHY, current, recommended);
    }
    let fix = if missing_performance.is_empty() {
        Fix::Write(writes)
    } else {
        Fix::Manual(format!(
            "the cpufreq driver offers no 'performance' governor on cpu {}: set the firmware \
             (BIOS) power profile to maximum performance",
            format_cpu_list(&missing_performance)
        ))
    };
    Finding::warn(NAME, GOVERNOR_WHY, current, recommended, fix)
}

const SMT_WHY: &str = "SMT siblings share one core's execution units and caches; two broker \
shards on siblings of one core each run slower and with noisier latency than on two cores. \
Use one thread per physical core (SMT may stay on for other work).";

/// SMT state and whether any two broker cores are siblings of one physical core.
pub fn check_smt(broker_cores: &[usize]) -> Finding {
    let control = sysfs::read(format!("{CPU_DIR}/smt/control"));
    let siblings = sibling_map(broker_cores);
    evaluate_smt(control, broker_cores, &siblings)
}

/// The judgement behind [`check_smt`], apart from the reads so it can be tested.
pub fn evaluate_smt(
    control: Result<String, String>,
    broker_cores: &[usize],
    siblings: &BTreeMap<usize, Vec<usize>>,
) -> Finding {
    const NAME: &str = "smt";
    let recommended = "one broker core per physical core".to_string();
    if control.is_err() && siblings.is_empty() {
        let reason = control.err().unwrap_or_default();
        return Finding::unknown(NAME, SMT_WHY, reason, recommended);
    }
    let threads_per_core = siblings.values().map(Vec::len).max().unwrap_or(1);
    let mut current = match &control {
        Ok(c) => format!("control={c}, {threads_per_core} thread(s) per core"),
        Err(_) => format!("{threads_per_core} thread(s) per core"),
    };
    // Broker cores grouped by physical core; a group of two or more is the problem.
    let mut groups: BTreeMap<Vec<usize>, Vec<usize>> = BTreeMap::new();
    for &cpu in broker_cores {
        let key = siblings.get(&cpu).cloned().unwrap_or_else(|| vec![cpu]);
        groups.entry(key).or_default().push(cpu);
    }
    let shared: Vec<String> = groups
        .values()
        .filter(|g| g.len() > 1)
        .map(|g| format_cpu_list(g))
        .collect();
    if shared.is_empty() {
        return Finding::ok(NAME, SMT_WHY, current, recommended);
    }
    current.push_str(&format!(
        "; broker cores share a physical core: {}",
        shared.join(" and ")
    ));
    let one_per_core: Vec<usize> = groups.values().filter_map(|g| g.first().copied()).collect();
    let fix = Fix::Manual(format!(
        "run the broker on one thread per core, e.g. --cores {} (what pick_cores chooses), or \
         turn SMT off with: echo off > {CPU_DIR}/smt/control",
        format_cpu_list(&one_per_core)
    ));
    Finding::warn(NAME, SMT_WHY, current, recommended, fix)
}

const CLOCKSOURCE_WHY: &str = "The broker reads the clock for every request (timestamps, \
timeouts, latency metrics). With tsc (arch_sys_counter on arm64) that is a few nanoseconds in \
user space; hpet, acpi_pm or a paravirtual clock make it a slow read or even a system call.";

/// The clocksource user space should have on this architecture.
pub fn expected_clocksource() -> Option<&'static str> {
    if cfg!(any(target_arch = "x86_64", target_arch = "x86")) {
        Some("tsc")
    } else if cfg!(target_arch = "aarch64") {
        Some("arch_sys_counter")
    } else {
        None
    }
}

pub fn check_clocksource() -> Finding {
    const NAME: &str = "clocksource";
    let dir = CLOCKSOURCE_DIR;
    let Some(expected) = expected_clocksource() else {
        return Finding::unknown(
            NAME,
            CLOCKSOURCE_WHY,
            "no recommendation for this CPU architecture".to_string(),
            "the architecture's cycle counter".to_string(),
        );
    };
    let recommended = expected.to_string();
    let current = match sysfs::read(format!("{dir}/current_clocksource")) {
        Ok(c) => c,
        Err(e) => return Finding::unknown(NAME, CLOCKSOURCE_WHY, e, recommended),
    };
    if current == expected {
        return Finding::ok(NAME, CLOCKSOURCE_WHY, current, recommended);
    }
    let available = sysfs::read(format!("{dir}/available_clocksource")).unwrap_or_default();
    let (_, options) = parse_choice(&available);
    let fix = if options.iter().any(|o| o == expected) {
        Fix::Write(vec![Write {
            what: String::new(),
            path: PathBuf::from(format!("{dir}/current_clocksource")),
            from: current.clone(),
            to: expected.to_string(),
        }])
    } else {
        Fix::Manual(format!(
            "the kernel does not offer {expected} (available: {}); it drops tsc when it finds \
             it unstable (see `dmesg | grep -i clocksource`); on VMs enable an invariant TSC \
             in the hypervisor",
            if available.is_empty() {
                "unknown"
            } else {
                &available
            }
        ))
    };
    Finding::warn(NAME, CLOCKSOURCE_WHY, current, recommended, fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Status;

    fn map(entries: &[(usize, &[usize])]) -> BTreeMap<usize, Vec<usize>> {
        entries.iter().map(|(c, s)| (*c, s.to_vec())).collect()
    }

    #[test]
    fn smt_ok_when_broker_cores_are_on_distinct_cores() {
        let siblings = map(&[(0, &[0, 4]), (1, &[1, 5])]);
        let f = evaluate_smt(Ok("on".into()), &[0, 1], &siblings);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(f.current, "control=on, 2 thread(s) per core");
    }

    #[test]
    fn smt_warns_when_two_broker_cores_are_siblings() {
        let siblings = map(&[(0, &[0, 4]), (1, &[1, 5]), (4, &[0, 4])]);
        let f = evaluate_smt(Ok("on".into()), &[0, 1, 4], &siblings);
        assert_eq!(f.status, Status::Warn);
        assert!(f.current.contains("0,4"), "{}", f.current);
        match f.fix {
            Some(Fix::Manual(text)) => assert!(text.contains("--cores 0-1"), "{text}"),
            other => panic!("expected a manual fix, got {other:?}"),
        }
    }

    #[test]
    fn smt_unknown_when_nothing_readable() {
        let f = evaluate_smt(Err("cannot read".into()), &[0], &BTreeMap::new());
        assert_eq!(f.status, Status::Unknown);
        assert!(f.current.contains("cannot read"));
    }

    #[test]
    fn smt_without_control_file_uses_topology() {
        let siblings = map(&[(0, &[0]), (1, &[1])]);
        let f = evaluate_smt(Err("not present".into()), &[0, 1], &siblings);
        assert_eq!(f.status, Status::Ok);
    }

    #[test]
    fn allowed_cpus_is_never_empty() {
        assert!(!allowed_cpus().is_empty());
    }
}
