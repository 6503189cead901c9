//! Interrupts of NICs and disks, and whether they land on broker cores.
//!
//! A thread-per-core broker polls its own queues; every hardware interrupt (and the softirq
//! work that follows it: TCP receive processing, block completions) that lands on a broker
//! core steals time from the shard pinned there, in the middle of whatever request it serves.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::cpu;
use crate::cpulist::{format_cpu_list, parse_cpu_list};
use crate::finding::{Finding, Fix, Write};
use crate::sysfs;

/// One line of /proc/interrupts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqLine {
    /// The label before the colon: an IRQ number, or a name such as "LOC" or "NMI".
    pub irq: String,
    /// (CPU number, interrupts handled there), for the CPUs named in the header.
    pub counts: Vec<(usize, u64)>,
    /// Everything after the counts: chip, hardware IRQ and trigger, then the handlers.
    pub desc: String,
}

impl IrqLine {
    /// The IRQ number, for lines that are real IRQs (not "LOC", "NMI", ...).
    pub fn number(&self) -> Option<u32> {
        self.irq.parse().ok()
    }

    /// The names of the handlers registered on this IRQ ("eth0-TxRx-0", "nvme0q1").
    ///
    /// They follow the trigger type ("1-edge", "IO-APIC 9-fasteoi", "Level"); several
    /// handlers sharing an IRQ are separated by ", " and a name may contain spaces
    /// ("PCIe PME"), so split on commas after the trigger, not on whitespace.
    pub fn actions(&self) -> Vec<String> {
        let words: Vec<&str> = self.desc.split_whitespace().collect();
        let start = words
            .iter()
            .rposition(|w| is_trigger(w))
            .map_or(words.len().saturating_sub(1), |i| i + 1);
        words
            .get(start..)
            .unwrap_or_default()
            .join(" ")
            .split(',')
            .map(|a| a.trim().to_string())
            .filter(|a| !a.is_empty())
            .collect()
    }
}

fn is_trigger(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    w == "edge"
        || w == "level"
        || w.ends_with("-edge")
        || w.ends_with("-level")
        || w.ends_with("-fasteoi")
}

/// The CPU numbers in the header line ("           CPU0       CPU1       CPU4").
/// Offline CPUs are absent, so the columns are named, not counted.
pub fn parse_header(line: &str) -> Vec<usize> {
    line.split_whitespace()
        .filter_map(|w| w.strip_prefix("CPU")?.parse().ok())
        .collect()
}

/// One IRQ line against the header's CPUs. Lines with fewer counts than CPUs ("ERR: 0") keep
/// what they have; lines without a colon are not IRQ lines.
pub fn parse_line(line: &str, cpus: &[usize]) -> Option<IrqLine> {
    let (label, mut rest) = line.split_once(':')?;
    let label = label.trim();
    if label.is_empty() {
        return None;
    }
    let mut counts = Vec::new();
    for &cpu in cpus {
        rest = rest.trim_start();
        let (word, remainder) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        match word.parse::<u64>() {
            Ok(n) => {
                counts.push((cpu, n));
                rest = remainder;
            }
            Err(_) => break,
        }
    }
    Some(IrqLine {
        irq: label.to_string(),
        counts,
        desc: rest.trim().to_string(),
    })
}

/// All lines of /proc/interrupts; empty for empty input.
pub fn parse_interrupts(text: &str) -> Vec<IrqLine> {
    let mut lines = text.lines();
    let Some(header) = lines.next() else {
        return Vec::new();
    };
    let cpus = parse_header(header);
    lines.filter_map(|l| parse_line(l, &cpus)).collect()
}

/// What kind of device a handler name belongs to, by the names drivers give their vectors.
/// Used where sysfs cannot tie the IRQ to a device (containers, odd buses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    Nic,
    Disk,
}

pub fn classify_action(name: &str) -> Option<DeviceKind> {
    let n = name.to_ascii_lowercase();
    // virtio names its vectors "virtio<N>-<queue>": req.N/requests/request for
    // virtio-blk and virtio-scsi, input.N/output.N for virtio-net. Bare "input"/"output"
    // are virtio-rng and virtio-console; config, vsock rx/tx and balloon are neither.
    if let Some(rest) = n.strip_prefix("virtio") {
        let queue = rest.trim_start_matches(|c: char| c.is_ascii_digit());
        return if queue.starts_with("-req") {
            Some(DeviceKind::Disk)
        } else if queue.starts_with("-input.") || queue.starts_with("-output.") {
            Some(DeviceKind::Nic)
        } else {
            None
        };
    }
    const DISK_PREFIXES: [&str; 6] = ["nvme", "ahci", "megasas", "mpt2sas", "mpt3sas", "blkif"];
    if DISK_PREFIXES.iter().any(|p| n.starts_with(p)) {
        return Some(DeviceKind::Disk);
    }
    // Queue vectors of NIC drivers: "eth0-TxRx-0", "ens5-Tx-Rx-1", "i40e-eth0-TxRx-3",
    // "eth0-rx-0", "mlx5_comp3@pci:0000:3b:00.0", "ena-mgmnt@pci:...", "gve-ntfy-blk0".
    const NIC_MARKERS: [&str; 5] = ["-txrx-", "-tx-rx-", "-rx-", "-tx-", "-combined-"];
    const NIC_PREFIXES: [&str; 5] = ["mlx4-", "mlx5_comp", "ena-", "gve-", "iavf-"];
    if NIC_MARKERS.iter().any(|m| n.contains(m)) || NIC_PREFIXES.iter().any(|p| n.starts_with(p)) {
        return Some(DeviceKind::Nic);
    }
    None
}

/// NVMe per-queue vectors ("nvme0q3"; q0 is the admin queue) are kernel-managed: the kernel
/// spreads them one queue per CPU group and refuses affinity changes. Their completions
/// arrive on the CPU that submitted the I/O, which for a shard is its own core, as wanted.
pub fn is_managed_queue(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_digit());
    match rest.strip_prefix('q') {
        Some(queue) => queue.parse::<u32>().is_ok_and(|q| q > 0),
        None => false,
    }
}

/// A NIC or disk interrupt found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceIrq {
    pub irq: u32,
    /// The device ("eth0", "vda") when sysfs names it, else the handler names.
    pub device: String,
    pub counts: Vec<(usize, u64)>,
    pub managed: bool,
}

/// IRQ number -> device name, for every NIC and block device backed by hardware: walks from
/// the device up to the bus device that owns the interrupts (virtio-net's eth0 sits below
/// the PCI function that has the MSI-X vectors). Empty when sysfs is not there.
pub fn sysfs_device_irqs() -> BTreeMap<u32, String> {
    let mut irqs = BTreeMap::new();
    for class in ["/sys/class/net", "/sys/block"] {
        let Ok(entries) = std::fs::read_dir(class) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // Virtual devices (lo, veth, bridges, loop, zram, dm) have no "device" link.
            let Ok(device) = std::fs::canonicalize(entry.path().join("device")) else {
                continue;
            };
            for irq in bus_irqs(&device) {
                irqs.entry(irq).or_insert_with(|| name.clone());
            }
        }
    }
    irqs
}

/// The interrupts of the nearest device at or above `dir` that has any: its MSI/MSI-X
/// vectors, or its legacy line.
fn bus_irqs(dir: &Path) -> Vec<u32> {
    // A few levels cover NVMe (nvme0 -> nvme -> PCI function) and virtio-scsi disks
    // (target -> host -> virtio -> PCI); the bound keeps a strange tree from looping.
    for dir in dir.ancestors().take(8) {
        if dir == Path::new("/sys/devices") || dir == Path::new("/sys") {
            break;
        }
        if let Ok(entries) = std::fs::read_dir(dir.join("msi_irqs")) {
            let irqs: Vec<u32> = entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect();
            if !irqs.is_empty() {
                return irqs;
            }
        }
        if let Ok(irq) = sysfs::read_u64(dir.join("irq")) {
            // 0 means "no legacy interrupt".
            if let Ok(irq) = u32::try_from(irq) {
                if irq > 0 {
                    return vec![irq];
                }
            }
        }
    }
    Vec::new()
}

/// The NIC and disk IRQs among `lines`: those sysfs ties to a device, plus those whose
/// handler names say so.
pub fn find_device_irqs(lines: &[IrqLine], sysfs: &BTreeMap<u32, String>) -> Vec<DeviceIrq> {
    lines
        .iter()
        .filter_map(|line| {
            let irq = line.number()?;
            let actions = line.actions();
            let device = match sysfs.get(&irq) {
                Some(name) => name.clone(),
                None if actions.iter().any(|a| classify_action(a).is_some()) => actions.join(","),
                None => return None,
            };
            Some(DeviceIrq {
                irq,
                device,
                counts: line.counts.clone(),
                managed: actions.iter().any(|a| is_managed_queue(a)),
            })
        })
        .collect()
}

/// Interrupts per CPU from NICs and disks (kernel-managed queues left out: they follow the
/// submitting CPU rather than burden a fixed one).
pub fn irq_load(irqs: &[DeviceIrq]) -> BTreeMap<usize, u64> {
    let mut load = BTreeMap::new();
    for irq in irqs.iter().filter(|i| !i.managed) {
        for &(cpu, n) in &irq.counts {
            *load.entry(cpu).or_insert(0u64) += n;
        }
    }
    load
}

/// The host's NIC and disk IRQs, read now.
pub fn device_irqs() -> Result<Vec<DeviceIrq>, String> {
    let text = sysfs::read("/proc/interrupts")?;
    Ok(find_device_irqs(
        &parse_interrupts(&text),
        &sysfs_device_irqs(),
    ))
}

/// irqbalance rewrites IRQ affinities every few seconds and would undo `apply`.
pub fn irqbalance_running() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let is_pid = e
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
        is_pid && sysfs::read(e.path().join("comm")).is_ok_and(|c| c == "irqbalance")
    })
}

const WHY: &str = "NIC and disk interrupts, and the network/block softirq work that follows \
them, run on whichever CPU the IRQ is routed to. On a broker core they preempt the shard \
pinned there mid-request, adding tail latency; routing them to the other cores keeps shards \
undisturbed.";

pub const NAME: &str = "irq_affinity";

pub fn check_irq_affinity(broker_cores: &[usize]) -> Finding {
    let recommended = "NIC/disk IRQs off broker cores".to_string();
    let irqs = match device_irqs() {
        Ok(irqs) => irqs,
        Err(e) => return Finding::unknown(NAME, WHY, e, recommended),
    };
    let online = cpu::online_cpus().unwrap_or_else(|_| cpu::allowed_cpus());
    let affinities = irqs
        .iter()
        .filter(|i| !i.managed)
        .map(|i| {
            let list = sysfs::read(affinity_path(i.irq)).and_then(|s| parse_cpu_list(&s));
            (i.irq, list)
        })
        .collect();
    evaluate_irq_affinity(
        broker_cores,
        &online,
        &irqs,
        &affinities,
        irqbalance_running(),
    )
}

fn affinity_path(irq: u32) -> PathBuf {
    PathBuf::from(format!("/proc/irq/{irq}/smp_affinity_list"))
}

/// The judgement behind [`check_irq_affinity`], apart from the reads so it can be tested.
pub fn evaluate_irq_affinity(
    broker_cores: &[usize],
    online: &[usize],
    irqs: &[DeviceIrq],
    affinities: &BTreeMap<u32, Result<Vec<usize>, String>>,
    irqbalance: bool,
) -> Finding {
    let broker: BTreeSet<usize> = broker_cores.iter().copied().collect();
    let target: Vec<usize> = online
        .iter()
        .copied()
        .filter(|c| !broker.contains(c))
        .collect();
    let mut recommended = if target.is_empty() {
        "NIC/disk IRQs off broker cores (needs a non-broker core)".to_string()
    } else {
        format!("NIC/disk IRQs only on cpu {}", format_cpu_list(&target))
    };
    if irqbalance {
        recommended.push_str(&format!(
            ", and irqbalance stopped or run with IRQBALANCE_BANNED_CPULIST={}",
            format_cpu_list(broker_cores)
        ));
    }
    let movable: Vec<&DeviceIrq> = irqs.iter().filter(|i| !i.managed).collect();
    let managed = irqs.len() - movable.len();
    let mut notes = Vec::new();
    if managed > 0 {
        notes.push(format!(
            "{managed} NVMe queue IRQs are kernel-managed (they follow the submitting core)"
        ));
    }
    if irqbalance {
        notes.push("irqbalance is running".to_string());
    }
    let mut offending = Vec::new();
    let mut unreadable = Vec::new();
    for irq in &movable {
        match affinities.get(&irq.irq) {
            Some(Ok(list)) if list.iter().any(|c| broker.contains(c)) => {
                offending.push((*irq, list.clone()))
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => unreadable.push(e.clone()),
            None => unreadable.push(format!("IRQ {} affinity not read", irq.irq)),
        }
    }
    if !movable.is_empty() && unreadable.len() == movable.len() {
        let reason = unreadable.into_iter().next().unwrap_or_default();
        return Finding::unknown(NAME, WHY, reason, recommended);
    }
    if !unreadable.is_empty() {
        notes.push(format!("affinity of {} IRQs unreadable", unreadable.len()));
    }
    let with_notes = |mut s: String| {
        for n in &notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    };
    if movable.is_empty() {
        let current = with_notes("no NIC/disk IRQs found in /proc/interrupts".to_string());
        return Finding::ok(NAME, WHY, current, recommended);
    }

    if offending.is_empty() {
        let current = with_notes(format!(
            "{} NIC/disk IRQs, none on broker cores {}",
            movable.len(),
            format_cpu_list(broker_cores)
        ));
        return Finding::ok(NAME, WHY, current, recommended);
    }

    const SHOWN: usize = 3;
    let mut examples: Vec<String> = offending
        .iter()
        .take(SHOWN)
        .map(|(irq, list)| {
            format!(
                "IRQ {} ({}) on {}",
                irq.irq,
                irq.device,
                format_cpu_list(list)
            )
        })
        .collect();
    if offending.len() > SHOWN {
        examples.push("...".to_string());
    }
    let current = with_notes(format!(
        "{} of {} NIC/disk IRQs may run on broker cores {}: {}",
        offending.len(),
        movable.len(),
        format_cpu_list(broker_cores),
        examples.join(", ")
    ));
    let fix = if target.is_empty() {
        Fix::Manual(
            "every online CPU is a broker core: run the broker on fewer cores (--cores) to \
             leave at least one for interrupts"
                .to_string(),
        )
    } else {
        let to = format_cpu_list(&target);
        Fix::Write(
            offending
                .iter()
                .map(|(irq, list)| Write {
                    what: format!("IRQ {} ({})", irq.irq, irq.device),
                    path: affinity_path(irq.irq),
                    from: format_cpu_list(list),
                    to: to.clone(),
                })
                .collect(),
        )
    };
    Finding::warn(NAME, WHY, current, recommended, fix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Status;

    // Taken from real hosts: a 2-vCPU Firecracker VM and a 4-CPU server with an Intel NIC,
    // NVMe and shared legacy lines.
    const VM: &str = "           CPU0       CPU1       
 24:          1          0  IO-APIC   5-edge      ACPI:Ged
 36:          0     349519 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0
 37:          0          0 PCI-MSIX-0000:00:03.0   0-edge      virtio2-config
 38:          0       4408 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0
 39:       3995          0 PCI-MSIX-0000:00:03.0   2-edge      virtio2-output.0
 41:       2380          0 PCI-MSIX-0000:00:04.0   1-edge      virtio3-rx
NMI:          0          0   Non-maskable interrupts
LOC:     358363     343489   Local timer interrupts
ERR:          0
";

    const SERVER: &str = "            CPU0       CPU1       CPU2       CPU3
   0:         28          0          0          0   IO-APIC    2-edge      timer
  16:          0          0         33          0   IO-APIC   16-fasteoi   ehci_hcd:usb1, i801_smbus
 122:          0          0          0          0  IR-PCI-MSI 458752-edge      PCIe PME, aerdrv
 130:        513          0          0          0  IR-PCI-MSI 524288-edge      nvme0q0
 131:      91412          0          0          0  IR-PCI-MSI 524289-edge      nvme0q1
 140:     812345          0       1200          0  IR-PCI-MSI 1048577-edge      i40e-eth0-TxRx-0
 141:          0     612345          0          0  IR-PCI-MSI 1048578-edge      i40e-eth0-TxRx-1
";

    #[test]
    fn header_names_cpus_even_with_gaps() {
        assert_eq!(parse_header("   CPU0       CPU1       CPU4"), [0, 1, 4]);
        assert_eq!(parse_header(""), Vec::<usize>::new());
    }

    #[test]
    fn parses_msix_line() {
        let line = parse_line(
            " 36:          0     349519 PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0",
            &[0, 1],
        )
        .unwrap();
        assert_eq!(line.number(), Some(36));
        assert_eq!(line.counts, [(0, 0), (1, 349519)]);
        assert_eq!(
            line.desc,
            "PCI-MSIX-0000:00:02.0   1-edge      virtio1-req.0"
        );
        assert_eq!(line.actions(), ["virtio1-req.0"]);
    }

    #[test]
    fn parses_shared_and_spaced_handler_names() {
        let lines = parse_interrupts(SERVER);
        let shared = lines.iter().find(|l| l.irq == "16").unwrap();
        assert_eq!(shared.actions(), ["ehci_hcd:usb1", "i801_smbus"]);
        let pme = lines.iter().find(|l| l.irq == "122").unwrap();
        assert_eq!(pme.actions(), ["PCIe PME", "aerdrv"]);
        let nic = lines.iter().find(|l| l.irq == "140").unwrap();
        assert_eq!(nic.counts, [(0, 812345), (1, 0), (2, 1200), (3, 0)]);
        assert_eq!(nic.actions(), ["i40e-eth0-TxRx-0"]);
    }

    #[test]
    fn named_and_short_lines() {
        let lines = parse_interrupts(VM);
        let loc = lines.iter().find(|l| l.irq == "LOC").unwrap();
        assert_eq!(loc.number(), None);
        assert_eq!(loc.counts, [(0, 358363), (1, 343489)]);
        assert_eq!(loc.desc, "Local timer interrupts");
        let err = lines.iter().find(|l| l.irq == "ERR").unwrap();
        assert_eq!(err.counts, [(0, 0)]);
        assert_eq!(err.desc, "");
    }

    #[test]
    fn arm_gic_trigger_word() {
        let line = parse_line(
            " 11:     123456     234567     GICv3  27 Level     arch_timer",
            &[0, 1],
        )
        .unwrap();
        assert_eq!(line.actions(), ["arch_timer"]);
    }

    #[test]
    fn odd_lines_do_not_panic() {
        for text in [
            "",
            "\n",
            "garbage",
            "CPU0\n:\n 1:\n 2: x y\n 3: 5",
            "CPU0\n 9: 99999999999999999999999 a",
        ] {
            let _ = parse_interrupts(text);
        }
        assert_eq!(parse_line("no colon here", &[0]), None);
        let line = parse_line(" 9: 1 2 3", &[0]).unwrap();
        assert_eq!(line.counts, [(0, 1)]);
        assert_eq!(line.actions(), ["3"]);
        assert_eq!(
            parse_line(" 9:", &[0, 1]).unwrap().actions(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn classifies_handler_names() {
        use DeviceKind::*;
        assert_eq!(classify_action("virtio1-req.0"), Some(Disk));
        assert_eq!(classify_action("virtio2-input.0"), Some(Nic));
        assert_eq!(classify_action("virtio2-output.3"), Some(Nic));
        assert_eq!(classify_action("virtio2-config"), None);
        assert_eq!(classify_action("virtio3-rx"), None); // vsock
        assert_eq!(classify_action("virtio4-input"), None); // virtio-rng
        assert_eq!(classify_action("virtio0-request"), Some(Disk)); // virtio-scsi
        assert_eq!(classify_action("nvme0q1"), Some(Disk));
        assert_eq!(classify_action("i40e-eth0-TxRx-0"), Some(Nic));
        assert_eq!(classify_action("ens5-Tx-Rx-1"), Some(Nic));
        assert_eq!(classify_action("mlx5_comp3@pci:0000:3b:00.0"), Some(Nic));
        assert_eq!(classify_action("timer"), None);
        assert_eq!(classify_action("ehci_hcd:usb1"), None);
        assert_eq!(classify_action(""), None);
    }

    #[test]
    fn managed_nvme_queues() {
        assert!(is_managed_queue("nvme0q1"));
        assert!(is_managed_queue("nvme12q31"));
        assert!(!is_managed_queue("nvme0q0")); // admin queue
        assert!(!is_managed_queue("nvme0"));
        assert!(!is_managed_queue("nvme0qx"));
        assert!(!is_managed_queue("eth0"));
    }

    #[test]
    fn finds_device_irqs_by_sysfs_and_by_name() {
        let lines = parse_interrupts(VM);
        let sysfs: BTreeMap<u32, String> =
            [(37, "eth0".to_string()), (38, "eth0".to_string())].into();
        let irqs = find_device_irqs(&lines, &sysfs);
        let found: Vec<(u32, &str)> = irqs.iter().map(|i| (i.irq, i.device.as_str())).collect();
        assert_eq!(
            found,
            [
                (36, "virtio1-req.0"),
                (37, "eth0"),
                (38, "eth0"),
                (39, "virtio2-output.0")
            ]
        );
        let load = irq_load(&irqs);
        assert_eq!(load.get(&0), Some(&3995));
        assert_eq!(load.get(&1), Some(&(349519 + 4408)));
    }

    #[test]
    fn managed_queues_do_not_count_as_load() {
        let irqs = find_device_irqs(&parse_interrupts(SERVER), &BTreeMap::new());
        let managed: Vec<u32> = irqs.iter().filter(|i| i.managed).map(|i| i.irq).collect();
        assert_eq!(managed, [131]);
        let load = irq_load(&irqs);
        assert_eq!(load.get(&0), Some(&(513 + 812345)));
        assert_eq!(load.get(&1), Some(&612345));
    }

    fn device(irq: u32, name: &str) -> DeviceIrq {
        DeviceIrq {
            irq,
            device: name.to_string(),
            counts: vec![],
            managed: false,
        }
    }

    #[test]
    fn warns_and_plans_moves_off_broker_cores() {
        let irqs = [
            device(40, "eth0"),
            device(41, "eth0"),
            device(50, "nvme0q0"),
        ];
        let affinities = [
            (40, Ok(vec![0, 1, 2, 3])),
            (41, Ok(vec![3])),
            (50, Ok(vec![1])),
        ]
        .into();
        let f = evaluate_irq_affinity(&[0, 1, 2], &[0, 1, 2, 3], &irqs, &affinities, false);
        assert_eq!(f.status, Status::Warn);
        assert!(f.current.starts_with("2 of 3"), "{}", f.current);
        let Some(Fix::Write(writes)) = f.fix else {
            panic!("expected writes");
        };
        let planned: Vec<(&str, &str, &str)> = writes
            .iter()
            .map(|w| (w.path.to_str().unwrap(), w.from.as_str(), w.to.as_str()))
            .collect();
        assert_eq!(
            planned,
            [
                ("/proc/irq/40/smp_affinity_list", "0-3", "3"),
                ("/proc/irq/50/smp_affinity_list", "1", "3")
            ]
        );
    }

    #[test]
    fn ok_when_irqs_are_elsewhere() {
        let irqs = [device(40, "eth0")];
        let affinities = [(40, Ok(vec![3]))].into();
        let f = evaluate_irq_affinity(&[0, 1], &[0, 1, 2, 3], &irqs, &affinities, false);
        assert_eq!(f.status, Status::Ok);
        assert_eq!(f.fix, None);
    }

    #[test]
    fn manual_when_every_cpu_is_a_broker_core() {
        let irqs = [device(40, "eth0")];
        let affinities = [(40, Ok(vec![0, 1]))].into();
        let f = evaluate_irq_affinity(&[0, 1], &[0, 1], &irqs, &affinities, true);
        assert_eq!(f.status, Status::Warn);
        assert!(matches!(f.fix, Some(Fix::Manual(_))));
        assert!(f.recommended.contains("IRQBALANCE_BANNED_CPULIST=0-1"));
        assert!(f.current.contains("irqbalance is running"));
    }

    #[test]
    fn unknown_when_no_affinity_readable() {
        let irqs = [device(40, "eth0")];
        let affinities = [(40, Err("cannot read /proc/irq/40".to_string()))].into();
        let f = evaluate_irq_affinity(&[0], &[0, 1], &irqs, &affinities, false);
        assert_eq!(f.status, Status::Unknown);
    }

    #[test]
    fn ok_without_device_irqs() {
        let f = evaluate_irq_affinity(&[0], &[0, 1], &[], &BTreeMap::new(), false);
        assert_eq!(f.status, Status::Ok);
    }
}
