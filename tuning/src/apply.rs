//! Carrying out fixes. Every change this crate makes to the system goes through
//! [`Writer::write`]; a dry-run writer checks and reports but never opens a file for writing.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use crate::finding::{Finding, Fix, Status};
use crate::sysfs;

/// The only trees `apply` may write to: kernel tunables, device attributes, IRQ affinities.
pub const WRITABLE_ROOTS: [&str; 3] = ["/proc/sys", "/sys", "/proc/irq"];

/// What [`Writer::write`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Written,
    /// Dry run: the path passed every check, nothing was opened.
    WouldWrite,
}

/// The single gate for writes. `dry_run` turns every write off.
#[derive(Debug)]
pub struct Writer {
    dry_run: bool,
    roots: Vec<PathBuf>,
    written: usize,
}

impl Writer {
    pub fn new(dry_run: bool) -> Self {
        Writer {
            dry_run,
            roots: WRITABLE_ROOTS.iter().map(PathBuf::from).collect(),
            written: 0,
        }
    }

    /// A writer confined to other roots, so tests can watch real writes in a temp dir.
    #[cfg(test)]
    fn with_roots(dry_run: bool, roots: Vec<PathBuf>) -> Self {
        Writer {
            dry_run,
            roots,
            written: 0,
        }
    }

    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// How many files this writer has actually written.
    pub fn written(&self) -> usize {
        self.written
    }

    /// Writes `value` to the existing kernel file `path`. This is the only function in the
    /// crate that modifies anything; in dry-run mode it validates `path` and returns
    /// [`Outcome::WouldWrite`] without opening it.
    pub fn write(&mut self, path: &Path, value: &str) -> Result<Outcome, String> {
        let target = self.check_path(path)?;
        if self.dry_run {
            return Ok(Outcome::WouldWrite);
        }
        // Never create: kernel files exist already, and anything that does not is not ours
        // to make. O_TRUNC as in `echo value > file` (kernel files ignore it), and the value
        // in one write() call, as sysfs and procfs expect.
        let result = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&target)
            .and_then(|mut f| f.write_all(value.as_bytes()));
        match result {
            Ok(()) => {
                self.written += 1;
                Ok(Outcome::Written)
            }
            Err(e) => Err(sysfs::describe(&e)),
        }
    }

    /// `path`, resolved, if it is inside one of the roots both as written and after
    /// following symlinks (/sys/block/x links into /sys/devices, which is fine; a link out
    /// of /sys would not be).
    fn check_path(&self, path: &Path) -> Result<PathBuf, String> {
        let outside = || {
            format!(
                "refusing to write {}: outside /proc/sys, /sys and /proc/irq",
                path.display()
            )
        };
        let plain = path.is_absolute()
            && path
                .components()
                .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !plain || !self.inside_roots(path) {
            return Err(outside());
        }
        let resolved = std::fs::canonicalize(path)
            .map_err(|e| format!("cannot write {}: {}", path.display(), sysfs::describe(&e)))?;
        if !self.inside_roots(&resolved) {
            return Err(outside());
        }
        Ok(resolved)
    }

    fn inside_roots(&self, path: &Path) -> bool {
        self.roots.iter().any(|root| {
            let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.clone());
            path.starts_with(&root) && path != root
        })
    }
}

/// What an `apply` run did, line by line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    pub lines: Vec<String>,
    pub changed: usize,
    pub failed: usize,
    pub skipped: usize,
}

/// Carries out the fixes of `findings` through `writer`. Refuses to run unless `is_root` or
/// dry-run, without touching anything: as non-root every write would fail half-way.
pub fn apply(
    findings: &[Finding],
    writer: &mut Writer,
    is_root: bool,
) -> Result<ApplyReport, String> {
    if !is_root && !writer.is_dry_run() {
        return Err("corelog-tune apply must run as root; nothing was changed \
                    (try --dry-run to see what it would do)"
            .to_string());
    }
    let mut report = ApplyReport::default();
    if !is_root {
        report
            .lines
            .push("note: not root; a real run would need root".to_string());
    }
    for f in findings {
        match (&f.status, &f.fix) {
            (Status::Ok, _) => report.lines.push(format!("ok {}: {}", f.name, f.current)),
            (Status::Unknown, _) => {
                let reason = f.current.strip_prefix("unknown: ").unwrap_or(&f.current);
                report.skipped += 1;
                report.lines.push(format!(
                    "skipped {}: cannot be read here ({reason})",
                    f.name
                ));
            }
            (Status::Warn, Some(Fix::Manual(how))) => {
                report.skipped += 1;
                report.lines.push(format!(
                    "skipped {}: is {}, wants {}; {how}",
                    f.name, f.current, f.recommended
                ));
            }
            (Status::Warn, None) => {
                report.skipped += 1;
                report
                    .lines
                    .push(format!("skipped {}: no automatic fix", f.name));
            }
            (Status::Warn, Some(Fix::Write(writes))) => {
                for w in writes {
                    let label = if w.what.is_empty() {
                        f.name.to_string()
                    } else {
                        format!("{} {}", f.name, w.what)
                    };
                    let line = match writer.write(&w.path, &w.to) {
                        Ok(Outcome::Written) => {
                            report.changed += 1;
                            format!("changed {label}: {} -> {}", w.from, w.to)
                        }
                        Ok(Outcome::WouldWrite) => {
                            report.changed += 1;
                            format!(
                                "would change {label}: {} -> {} (write {:?} to {})",
                                w.from,
                                w.to,
                                w.to,
                                w.path.display()
                            )
                        }
                        Err(e) => {
                            report.failed += 1;
                            let hint = if w.path.starts_with("/proc/irq")
                                && e.contains("Input/output error")
                            {
                                " (the kernel manages this interrupt's affinity itself)"
                            } else {
                                ""
                            };
                            format!("failed {label}: {} -> {}: {e}{hint}", w.from, w.to)
                        }
                    };
                    report.lines.push(line);
                }
            }
        }
    }
    let verb = if writer.is_dry_run() {
        "would change"
    } else {
        "changed"
    };
    report.lines.push(format!(
        "{} {verb}, {} failed, {} skipped",
        report.changed, report.failed, report.skipped
    ));
    if report.changed > 0 {
        report.lines.push(
            "note: these changes last until reboot; persist sysctls in /etc/sysctl.d/ and run \
             `corelog-tune apply` from a boot-time unit for the rest"
                .to_string(),
        );
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Write;

    fn temp_root() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("knob");
        std::fs::write(&file, "60").unwrap();
        (dir, file)
    }

    #[test]
    fn dry_run_writes_nothing() {
        let (dir, file) = temp_root();
        let mut w = Writer::with_roots(true, vec![dir.path().to_path_buf()]);
        assert_eq!(w.write(&file, "1"), Ok(Outcome::WouldWrite));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "60");
        assert_eq!(w.written(), 0);
    }

    #[test]
    fn real_run_writes_through_the_same_function() {
        let (dir, file) = temp_root();
        let mut w = Writer::with_roots(false, vec![dir.path().to_path_buf()]);
        assert_eq!(w.write(&file, "1"), Ok(Outcome::Written));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1");
        assert_eq!(w.written(), 1);
    }

    #[test]
    fn refuses_paths_outside_the_roots() {
        let (dir, file) = temp_root();
        let other = tempfile::tempdir().unwrap();
        let outside = other.path().join("x");
        std::fs::write(&outside, "a").unwrap();
        for dry_run in [true, false] {
            let mut w = Writer::with_roots(dry_run, vec![dir.path().to_path_buf()]);
            assert!(w.write(&outside, "b").is_err());
            assert!(w.write(Path::new("relative/knob"), "b").is_err());
            let sneaky = dir
                .path()
                .join("..")
                .join(other.path().file_name().unwrap())
                .join("x");
            assert!(w.write(&sneaky, "b").is_err());
            // Does not create files, even inside the roots.
            assert!(w.write(&dir.path().join("new"), "b").is_err());
            assert!(!dir.path().join("new").exists());
            assert_eq!(w.written(), 0);
        }
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "a");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "60");
    }

    #[test]
    fn refuses_symlinks_out_of_the_roots() {
        let (dir, _) = temp_root();
        let other = tempfile::tempdir().unwrap();
        let target = other.path().join("x");
        std::fs::write(&target, "a").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let mut w = Writer::with_roots(false, vec![dir.path().to_path_buf()]);
        assert!(w.write(&link, "b").is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "a");
    }

    #[test]
    fn system_roots_refuse_etc() {
        let mut w = Writer::new(true);
        assert!(w.write(Path::new("/etc/hostname"), "x").is_err());
        assert!(w.write(Path::new("/proc/self/comm"), "x").is_err());
        assert!(w.write(Path::new("/proc/sys/../self/comm"), "x").is_err());
        assert!(w.write(Path::new("/sys"), "x").is_err());
    }

    fn finding(status: Status, fix: Option<Fix>) -> Finding {
        Finding {
            name: "vm.swappiness",
            current: "60".to_string(),
            recommended: "<= 1".to_string(),
            status,
            why: "",
            fix,
        }
    }

    fn plan(path: &Path) -> Vec<Finding> {
        vec![finding(
            Status::Warn,
            Some(Fix::Write(vec![Write {
                what: String::new(),
                path: path.to_path_buf(),
                from: "60".to_string(),
                to: "1".to_string(),
            }])),
        )]
    }

    #[test]
    fn not_root_changes_nothing() {
        let (dir, file) = temp_root();
        let mut w = Writer::with_roots(false, vec![dir.path().to_path_buf()]);
        let err = apply(&plan(&file), &mut w, false).unwrap_err();
        assert!(err.contains("root"), "{err}");
        assert_eq!(w.written(), 0);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "60");
    }

    #[test]
    fn apply_reports_each_change() {
        let (dir, file) = temp_root();
        let mut w = Writer::with_roots(true, vec![dir.path().to_path_buf()]);
        let report = apply(&plan(&file), &mut w, true).unwrap();
        assert!(report.lines[0].starts_with("would change vm.swappiness: 60 -> 1"));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "60");

        let mut w = Writer::with_roots(false, vec![dir.path().to_path_buf()]);
        let report = apply(&plan(&file), &mut w, true).unwrap();
        assert_eq!(report.lines[0], "changed vm.swappiness: 60 -> 1");
        assert_eq!(report.changed, 1);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "1");
    }

    #[test]
    fn apply_skips_manual_and_unknown() {
        let findings = [
            finding(Status::Warn, Some(Fix::Manual("edit limits.conf".into()))),
            finding(Status::Unknown, None),
            finding(Status::Ok, None),
        ];
        let mut w = Writer::new(true);
        let report = apply(&findings, &mut w, true).unwrap();
        assert_eq!(report.skipped, 2);
        assert!(report.lines[0].starts_with("skipped vm.swappiness:"));
        assert!(report.lines[0].ends_with("edit limits.conf"));
        assert!(report.lines[2].starts_with("ok vm.swappiness"));
    }

    /// The dry-run guarantee rests on Writer::write being the only write path; keep it so.
    #[test]
    fn no_other_module_writes_files() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let forbidden = [
            "fs::write",
            "write(true)",
            "append(true)",
            "File::create",
            "create(true)",
            "OpenOptions",
            "libc::write",
            "libc::open",
            "set_permissions",
            "remove_file",
        ];
        for entry in std::fs::read_dir(&src).unwrap() {
            let path = entry.unwrap().path();
            if path.file_name().unwrap() == "apply.rs" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Test code may write to its own temp dirs.
            let code = text.split("#[cfg(test)]").next().unwrap();
            for f in forbidden {
                assert!(
                    !code.contains(f),
                    "{} uses {f}; route writes through apply::Writer::write",
                    path.display()
                );
            }
        }
    }
}
