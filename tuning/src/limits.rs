//! Resource limits. These are per process and inherited: this tool can only read its own, and
//! cannot change another process's, so the fix is always the configuration that starts the
//! broker (systemd unit or limits.conf). Run at broker start, the check reads the broker's
//! own limits, which is what counts.

use crate::finding::{Finding, Fix};
use crate::sysfs::human_bytes;

/// A limit; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Memlock,
    Nofile,
}

/// This process's limit.
pub fn get(resource: Resource) -> Result<Limit, String> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // The constants' type differs between C libraries, hence the match at the call.
    // SAFETY: getrlimit only writes the struct we pass.
    let rc = unsafe {
        match resource {
            Resource::Memlock => libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut rl),
            Resource::Nofile => libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl),
        }
    };
    if rc != 0 {
        return Err(format!(
            "getrlimit failed: {}",
            crate::sysfs::describe(&std::io::Error::last_os_error())
        ));
    }
    // rlim_t is 32 bits on some 32-bit targets, hence the conversion.
    #[allow(clippy::useless_conversion)]
    let value = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(u64::from(v));
    Ok(Limit {
        soft: value(rl.rlim_cur),
        hard: value(rl.rlim_max),
    })
}

fn show(v: Option<u64>, fmt: fn(u64) -> String) -> String {
    v.map_or_else(|| "unlimited".to_string(), fmt)
}

/// 512 MiB of locked memory: io_uring's registered (fixed) buffers are pinned and charged to
/// RLIMIT_MEMLOCK, and so are the rings themselves on kernels before 5.12. A shard registers
/// its I/O buffer pool up front, so a few shards with tens of MiB each plus headroom.
pub const MEMLOCK_MIN: u64 = 512 << 20;

const MEMLOCK_WHY: &str = "io_uring pins the memory of its rings (before Linux 5.12) and of \
registered buffers, charged to RLIMIT_MEMLOCK. The common 8 MiB default makes ring setup or \
buffer registration fail with ENOMEM, forcing slower unregistered I/O or a failed start.";

pub fn check_memlock() -> Finding {
    evaluate_memlock(get(Resource::Memlock))
}

pub fn evaluate_memlock(limit: Result<Limit, String>) -> Finding {
    const NAME: &str = "memlock_limit";
    let recommended = format!("unlimited or >= {}", human_bytes(MEMLOCK_MIN));
    let limit = match limit {
        Ok(l) => l,
        Err(e) => return Finding::unknown(NAME, MEMLOCK_WHY, e, recommended),
    };
    let current = format!(
        "soft {}, hard {}",
        show(limit.soft, human_bytes),
        show(limit.hard, human_bytes)
    );
    if limit.soft.is_none_or(|s| s >= MEMLOCK_MIN) {
        return Finding::ok(NAME, MEMLOCK_WHY, current, recommended);
    }
    let fix = Fix::Manual(
        "limits of other processes cannot be changed from here; in the broker's systemd \
         unit set LimitMEMLOCK=infinity, or in /etc/security/limits.conf add \
         '<broker user> - memlock unlimited' (takes effect at next login/start)"
            .to_string(),
    );
    Finding::warn(NAME, MEMLOCK_WHY, current, recommended, fix)
}

/// 262144 open files: every client connection is a socket, and every partition keeps its
/// active segment's log, offset index and time index open (older segments too while read).
/// 100k connections plus 50k partitions x 3 files fits with room to spare, and it stays
/// well under the kernel's per-process ceiling fs.nr_open (1048576 by default), so the hard
/// limit can always be raised this far. Far larger values only hide descriptor leaks.
pub const NOFILE_MIN: u64 = 262_144;

const NOFILE_WHY: &str = "Each client connection and each open segment/index file is a file \
descriptor. When the broker runs out it cannot accept connections or roll segments (EMFILE), \
which clients see as an outage, not as slowness.";

pub fn check_nofile() -> Finding {
    evaluate_nofile(get(Resource::Nofile))
}

pub fn evaluate_nofile(limit: Result<Limit, String>) -> Finding {
    const NAME: &str = "nofile_limit";
    let recommended = format!(">= {NOFILE_MIN}");
    let limit = match limit {
        Ok(l) => l,
        Err(e) => return Finding::unknown(NAME, NOFILE_WHY, e, recommended),
    };
    let current = format!(
        "soft {}, hard {}",
        show(limit.soft, |v| v.to_string()),
        show(limit.hard, |v| v.to_string())
    );
    if limit.soft.is_none_or(|s| s >= NOFILE_MIN) {
        return Finding::ok(NAME, NOFILE_WHY, current, recommended);
    }
    let mut how = format!(
        "limits of other processes cannot be changed from here; in the broker's systemd \
         unit set LimitNOFILE={NOFILE_MIN}, or in /etc/security/limits.conf add \
         '<broker user> - nofile {NOFILE_MIN}'"
    );
    if limit.hard.is_none_or(|h| h >= NOFILE_MIN) {
        how.push_str(
            "; the hard limit already allows it, so the process may also raise its own soft \
             limit (setrlimit, `ulimit -n`)",
        );
    }
    Finding::warn(NAME, NOFILE_WHY, current, recommended, Fix::Manual(how))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Status;

    #[test]
    fn memlock_default_warns() {
        let f = evaluate_memlock(Ok(Limit {
            soft: Some(8 << 20),
            hard: Some(8 << 20),
        }));
        assert_eq!(f.status, Status::Warn);
        assert_eq!(f.current, "soft 8 MiB, hard 8 MiB");
        assert!(matches!(f.fix, Some(Fix::Manual(ref s)) if s.contains("LimitMEMLOCK")));
    }

    #[test]
    fn memlock_unlimited_is_ok() {
        let f = evaluate_memlock(Ok(Limit {
            soft: None,
            hard: None,
        }));
        assert_eq!(f.status, Status::Ok);
        assert_eq!(f.current, "soft unlimited, hard unlimited");
    }

    #[test]
    fn nofile_thresholds() {
        let at = |soft, hard| evaluate_nofile(Ok(Limit { soft, hard }));
        assert_eq!(at(Some(1024), Some(4096)).status, Status::Warn);
        assert_eq!(at(Some(NOFILE_MIN), Some(NOFILE_MIN)).status, Status::Ok);
        let f = at(Some(1024), Some(1 << 20));
        assert!(matches!(f.fix, Some(Fix::Manual(ref s)) if s.contains("raise its own soft")));
    }

    #[test]
    fn unreadable_is_unknown() {
        let f = evaluate_nofile(Err("getrlimit failed".into()));
        assert_eq!(f.status, Status::Unknown);
    }

    #[test]
    fn reads_this_process() {
        assert!(get(Resource::Nofile).is_ok());
    }
}
