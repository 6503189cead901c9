//! The I/O scheduler of the disk(s) under the broker's data directory.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::finding::{Finding, Fix, Write};
use crate::sysfs::{self, parse_choice};

/// Linux's dev_t encoding (glibc's gnu_dev_major/minor): 12 bits of major and 20 of minor,
/// split across the word for compatibility with the old 16-bit layout.
pub fn dev_major_minor(dev: u64) -> (u64, u64) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (major, minor)
}

/// `path` made absolute, then its nearest ancestor that exists: the data directory may not
/// have been created yet, and it will live on its parent's filesystem when it is.
fn existing_ancestor(path: &Path) -> Result<PathBuf, String> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot resolve {}: {}", path.display(), sysfs::describe(&e)))?
            .join(path)
    };
    absolute
        .ancestors()
        .find(|p| p.exists())
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("no part of {} exists", absolute.display()))
}

/// One line of /proc/self/mountinfo, the parts needed here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub mount_point: PathBuf,
    pub fstype: String,
    pub source: String,
}

/// "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue":
/// field 5 is the mount point; after the lone "-" come the type and the source.
pub fn parse_mountinfo_line(line: &str) -> Option<Mount> {
    let fields: Vec<&str> = line.split(' ').collect();
    let mount_point = fields.get(4)?;
    let dash = fields.iter().position(|f| *f == "-")?;
    Some(Mount {
        mount_point: PathBuf::from(unescape_octal(mount_point)),
        fstype: fields.get(dash + 1)?.to_string(),
        source: unescape_octal(fields.get(dash + 2)?),
    })
}

/// mountinfo escapes space, tab, newline and backslash as \040, \011, \012, \134.
fn unescape_octal(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('\\') {
        let (before, after) = rest.split_at(i);
        out.push_str(before);
        let code = after.get(1..4).and_then(|d| u8::from_str_radix(d, 8).ok());
        match code {
            Some(c) => {
                out.push(char::from(c));
                rest = after.get(4..).unwrap_or_default();
            }
            None => {
                out.push('\\');
                rest = after.get(1..).unwrap_or_default();
            }
        }
    }
    out.push_str(rest);
    out
}

/// The mount holding `path`: the one with the longest mount point above it.
pub fn mount_for<'a>(path: &Path, mounts: &'a [Mount]) -> Option<&'a Mount> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| m.mount_point.components().count())
}

/// The sysfs directory of the block device holding `existing` (a path that exists), as
/// /sys/dev/block/MAJ:MIN resolves it.
fn block_device_dir(existing: &Path) -> Result<PathBuf, String> {
    let meta = std::fs::metadata(existing).map_err(|e| {
        format!(
            "cannot stat {}: {}",
            existing.display(),
            sysfs::describe(&e)
        )
    })?;
    let (major, minor) = dev_major_minor(meta.dev());
    if major != 0 {
        let link = format!("/sys/dev/block/{major}:{minor}");
        return std::fs::canonicalize(&link)
            .map_err(|e| format!("cannot resolve {link}: {}", sysfs::describe(&e)));
    }
    // Major 0 is an anonymous device: tmpfs and overlay (no disk at all), but also btrfs,
    // whose subvolumes get one each. mountinfo still names btrfs's real source device.
    let mounts: Vec<Mount> = sysfs::read("/proc/self/mountinfo")?
        .lines()
        .filter_map(parse_mountinfo_line)
        .collect();
    let canonical = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    let mount = mount_for(&canonical, &mounts)
        .ok_or_else(|| format!("no mount found for {}", canonical.display()))?;
    let not_a_disk = || {
        format!(
            "{} is on {} ({}), which has no block device",
            existing.display(),
            mount.fstype,
            mount.source
        )
    };
    if !mount.source.starts_with("/dev/") {
        return Err(not_a_disk());
    }
    // /dev/mapper/vg-data -> /dev/dm-3 -> /sys/class/block/dm-3
    let name = std::fs::canonicalize(&mount.source)
        .ok()
        .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .ok_or_else(not_a_disk)?;
    std::fs::canonicalize(format!("/sys/class/block/{name}")).map_err(|_| not_a_disk())
}

/// The devices whose scheduler decides the data dir's I/O: a partition's whole disk, and
/// for device-mapper/md the disks below it (the scheduler of dm itself is always none).
fn queue_devices(dir: &Path, depth: usize) -> Vec<PathBuf> {
    // Stacks deeper than this (dm on md on dm on partitions) do not occur in practice.
    if depth > 4 {
        return Vec::new();
    }
    if dir.join("partition").exists() {
        return match dir.parent() {
            Some(disk) => queue_devices(disk, depth + 1),
            None => Vec::new(),
        };
    }
    let slaves: Vec<PathBuf> = std::fs::read_dir(dir.join("slaves"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::canonicalize(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    if slaves.is_empty() {
        return vec![dir.to_path_buf()];
    }
    let mut leaves: Vec<PathBuf> = slaves
        .iter()
        .flat_map(|s| queue_devices(s, depth + 1))
        .collect();
    leaves.sort();
    leaves.dedup();
    leaves
}

/// Schedulers acceptable for a device, best first. NVMe devices have deep hardware queues
/// and microsecond latency, where any scheduler only adds CPU time and lock contention;
/// slower devices (SATA/SAS SSDs, virtual disks, HDDs) gain from mq-deadline's bounded
/// latency for reads stuck behind writes. noop/deadline are the pre-blk-mq names.
pub fn acceptable_schedulers(device: &str) -> &'static [&'static str] {
    if device.starts_with("nvme") {
        &["none", "noop"]
    } else {
        &["mq-deadline", "deadline"]
    }
}

/// One device's scheduler verdict: `Ok(None)` is fine, `Ok(Some(fix))` needs a change.
pub fn evaluate_scheduler(
    device: &str,
    scheduler_path: &Path,
    text: &str,
) -> Result<Option<Result<Write, String>>, String> {
    let (active, options) = parse_choice(text);
    let active = active.ok_or_else(|| {
        format!(
            "{} holds {text:?}, with no active choice",
            scheduler_path.display()
        )
    })?;
    let acceptable = acceptable_schedulers(device);
    if acceptable.contains(&active.as_str()) {
        return Ok(None);
    }
    let target = acceptable.iter().find(|s| options.iter().any(|o| o == *s));
    Ok(Some(match target {
        Some(to) => Ok(Write {
            what: device.to_string(),
            path: scheduler_path.to_path_buf(),
            from: active,
            to: to.to_string(),
        }),
        None => Err(format!(
            "{device} offers no {} scheduler (has: {}); load it with `modprobe {}`",
            acceptable.first().copied().unwrap_or("suitable"),
            options.join(" "),
            acceptable.first().copied().unwrap_or("mq-deadline"),
        )),
    }))
}

const WHY: &str = "Every segment write, fsync and catch-up read of the log goes through the \
block queue of the data directory's disk. On NVMe a scheduler only adds CPU time and locking \
per request; on slower disks mq-deadline stops reads from starving behind large write \
bursts.";

pub const NAME: &str = "io_scheduler";

pub fn check_scheduler(data_dir: &Path) -> Finding {
    let recommended = "none for NVMe, mq-deadline otherwise".to_string();
    let existing = match existing_ancestor(data_dir) {
        Ok(p) => p,
        Err(e) => return Finding::unknown(NAME, WHY, e, recommended),
    };
    let device_dir = match block_device_dir(&existing) {
        Ok(d) => d,
        Err(e) => return Finding::unknown(NAME, WHY, e, recommended),
    };
    let leaves = queue_devices(&device_dir, 0);
    let mut parts = Vec::new();
    let mut recommended_parts = Vec::new();
    let mut writes = Vec::new();
    let mut manual = Vec::new();
    let mut unreadable = Vec::new();
    for leaf in &leaves {
        let device = leaf
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = leaf.join("queue/scheduler");
        let text = match sysfs::read(&path) {
            Ok(t) => t,
            Err(e) => {
                unreadable.push(e);
                continue;
            }
        };
        match evaluate_scheduler(&device, &path, &text) {
            Err(e) => {
                unreadable.push(e);
                continue;
            }
            Ok(None) => {}
            Ok(Some(Ok(write))) => writes.push(write),
            Ok(Some(Err(how))) => manual.push(how),
        }
        let active = parse_choice(&text).0.unwrap_or_default();
        parts.push(format!("{device}: {active}"));
        recommended_parts.push(format!(
            "{device}: {}",
            acceptable_schedulers(&device)
                .first()
                .copied()
                .unwrap_or_default()
        ));
    }
    if parts.is_empty() {
        let reason = unreadable
            .into_iter()
            .next()
            .unwrap_or_else(|| format!("no disk found below {}", device_dir.display()));
        return Finding::unknown(NAME, WHY, reason, recommended);
    }
    let mut current = parts.join(", ");
    if !data_dir.exists() {
        current.push_str(&format!(
            " ({} does not exist yet; checked {})",
            data_dir.display(),
            existing.display()
        ));
    }
    let recommended = recommended_parts.join(", ");
    if writes.is_empty() && manual.is_empty() {
        return Finding::ok(NAME, WHY, current, recommended);
    }
    let fix = if manual.is_empty() {
        Fix::Write(writes)
    } else {
        Fix::Manual(manual.join("; "))
    };
    Finding::warn(NAME, WHY, current, recommended, fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_dev_t() {
        assert_eq!(dev_major_minor(0xfe00), (254, 0));
        assert_eq!(dev_major_minor(0x0801), (8, 1));
        // nvme: major 259, minor 3 (above 255 majors/minors use the high bits).
        let dev = (259u64 & 0xfff) << 8 | (3 & 0xff);
        assert_eq!(dev_major_minor(dev), (259, 3));
        let big = ((300u64 & 0xfff) << 8) | (0x12345u64 & 0xff) | ((0x12345u64 & !0xff) << 12);
        assert_eq!(dev_major_minor(big), (300, 0x12345));
    }

    #[test]
    fn scheduler_ok_for_virtual_disk_on_mq_deadline() {
        let path = Path::new("/sys/block/vda/queue/scheduler");
        assert_eq!(
            evaluate_scheduler("vda", path, "none [mq-deadline] kyber bfq"),
            Ok(None)
        );
    }

    #[test]
    fn scheduler_change_for_nvme() {
        let path = Path::new("/sys/block/nvme0n1/queue/scheduler");
        let w = evaluate_scheduler("nvme0n1", path, "[mq-deadline] kyber none")
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((w.from.as_str(), w.to.as_str()), ("mq-deadline", "none"));
        assert_eq!(w.path, path);
        assert_eq!(
            evaluate_scheduler("nvme0n1", path, "[none] mq-deadline"),
            Ok(None)
        );
    }

    #[test]
    fn scheduler_change_for_sata() {
        let path = Path::new("/sys/block/sda/queue/scheduler");
        let w = evaluate_scheduler("sda", path, "mq-deadline kyber [bfq] none")
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(w.to, "mq-deadline");
        // Legacy single-queue kernel.
        let w = evaluate_scheduler("sda", path, "noop deadline [cfq]")
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(w.to, "deadline");
    }

    #[test]
    fn scheduler_missing_module_is_manual() {
        let path = Path::new("/sys/block/sda/queue/scheduler");
        let how = evaluate_scheduler("sda", path, "[none]")
            .unwrap()
            .unwrap()
            .unwrap_err();
        assert!(how.contains("modprobe mq-deadline"), "{how}");
    }

    #[test]
    fn scheduler_garbage_is_an_error() {
        let path = Path::new("/x");
        assert!(evaluate_scheduler("sda", path, "").is_err());
        assert!(evaluate_scheduler("sda", path, "a b").is_err());
    }

    #[test]
    fn mountinfo_lines() {
        let m = parse_mountinfo_line(
            "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard,resv_strict",
        )
        .unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/"));
        assert_eq!((m.fstype.as_str(), m.source.as_str()), ("ext4", "/dev/vda"));
        let m = parse_mountinfo_line(
            "40 27 0:35 /@data /var/lib/my\\040data rw,relatime shared:1 master:2 - btrfs /dev/nvme0n1p2 rw",
        )
        .unwrap();
        assert_eq!(m.mount_point, PathBuf::from("/var/lib/my data"));
        assert_eq!(m.source, "/dev/nvme0n1p2");
        assert_eq!(parse_mountinfo_line("garbage"), None);
        assert_eq!(parse_mountinfo_line("1 2 3 4 5 6 -"), None);
    }

    #[test]
    fn unescapes_odd_sequences_without_panicking() {
        assert_eq!(unescape_octal("a\\040b"), "a b");
        assert_eq!(unescape_octal("trailing\\"), "trailing\\");
        assert_eq!(unescape_octal("\\9zz"), "\\9zz");
        assert_eq!(unescape_octal("\\04"), "\\04");
    }

    #[test]
    fn longest_mount_wins() {
        let mount = |p: &str, t: &str| Mount {
            mount_point: PathBuf::from(p),
            fstype: t.to_string(),
            source: "x".to_string(),
        };
        let mounts = [
            mount("/", "ext4"),
            mount("/var", "xfs"),
            mount("/var/lib2", "tmpfs"),
        ];
        assert_eq!(
            mount_for(Path::new("/var/lib/corelog"), &mounts).map(|m| m.fstype.as_str()),
            Some("xfs")
        );
        assert_eq!(
            mount_for(Path::new("/home"), &mounts).map(|m| m.fstype.as_str()),
            Some("ext4")
        );
    }

    #[test]
    fn nonexistent_data_dir_uses_its_parent() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("a/b/c");
        assert_eq!(existing_ancestor(&missing).unwrap(), dir.path());
    }
}
