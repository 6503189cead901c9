//! Kernel tunables under /proc/sys, and transparent hugepages under /sys/kernel/mm.

use std::path::PathBuf;

use crate::finding::{Finding, Fix, Write};
use crate::sysfs::{self, parse_choice};

/// 16 MiB: enough socket buffer for one connection to fill a 10 Gbit/s link across a 10 ms
/// round trip (bandwidth x delay = 12.5 MB), which is what Kafka producers batching large
/// records and consumers fetching megabytes per request need.
pub const SOCKET_BUFFER_MAX: u64 = 16 << 20;

/// The /proc/sys file of a sysctl name ("net.core.somaxconn" -> /proc/sys/net/core/somaxconn).
pub fn sysctl_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/{}", name.replace('.', "/")))
}

/// A sysctl that should be at least `min`; the fix raises it to exactly `min`.
fn check_at_least(name: &'static str, min: u64, why: &'static str) -> Finding {
    let recommended = format!(">= {min}");
    let path = sysctl_path(name);
    match sysfs::read_u64(&path) {
        Err(e) => Finding::unknown(name, why, e, recommended),
        Ok(v) if v >= min => Finding::ok(name, why, v.to_string(), recommended),
        Ok(v) => Finding::warn(
            name,
            why,
            v.to_string(),
            recommended,
            Fix::Write(vec![Write {
                what: String::new(),
                path,
                from: v.to_string(),
                to: min.to_string(),
            }]),
        ),
    }
}

const SWAPPINESS_WHY: &str = "With a high swappiness the kernel swaps out idle anonymous \
memory (a quiet partition's index, connection buffers) to keep page cache; touching it again \
costs a disk read on the request path. 1 swaps only under real memory pressure.";

pub fn check_swappiness() -> Finding {
    const NAME: &str = "vm.swappiness";
    const MAX: u64 = 1;
    let recommended = format!("<= {MAX}");
    let path = sysctl_path(NAME);
    match sysfs::read_u64(&path) {
        Err(e) => Finding::unknown(NAME, SWAPPINESS_WHY, e, recommended),
        Ok(v) if v <= MAX => Finding::ok(NAME, SWAPPINESS_WHY, v.to_string(), recommended),
        Ok(v) => Finding::warn(
            NAME,
            SWAPPINESS_WHY,
            v.to_string(),
            recommended,
            Fix::Write(vec![Write {
                what: String::new(),
                path,
                from: v.to_string(),
                to: MAX.to_string(),
            }]),
        ),
    }
}

pub fn check_somaxconn() -> Finding {
    check_at_least(
        "net.core.somaxconn",
        4096,
        "Caps every listen backlog. When hundreds of clients reconnect at once (broker \
         restart, rebalance) a short backlog drops their SYNs and they retry after a second \
         or more.",
    )
}

pub fn check_rmem_max() -> Finding {
    check_at_least(
        "net.core.rmem_max",
        SOCKET_BUFFER_MAX,
        "Upper bound for receive buffers, including TCP autotuning's and SO_RCVBUF. Too \
         small and a producer's large batches stall on a full window instead of streaming \
         at link speed.",
    )
}

pub fn check_wmem_max() -> Finding {
    check_at_least(
        "net.core.wmem_max",
        SOCKET_BUFFER_MAX,
        "Upper bound for send buffers. Fetch responses are megabytes; a small send buffer \
         makes a shard come back to the socket many times per response and caps throughput \
         per consumer on long-RTT links.",
    )
}

/// tcp_rmem / tcp_wmem: "min default max"; only the max matters here (autotuning grows
/// buffers up to it), so the fix keeps the kernel's min and default.
fn check_tcp_mem(name: &'static str, why: &'static str) -> Finding {
    let recommended = format!("max >= {SOCKET_BUFFER_MAX}");
    let path = sysctl_path(name);
    let text = match sysfs::read(&path) {
        Ok(t) => t,
        Err(e) => return Finding::unknown(name, why, e, recommended),
    };
    let current = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some((min, default, max)) = parse_tcp_mem(&text) else {
        return Finding::unknown(
            name,
            why,
            format!("{} holds {current:?}, not three numbers", path.display()),
            recommended,
        );
    };
    if max >= SOCKET_BUFFER_MAX {
        return Finding::ok(name, why, current, recommended);
    }
    Finding::warn(
        name,
        why,
        current.clone(),
        recommended,
        Fix::Write(vec![Write {
            what: String::new(),
            path,
            from: current,
            to: format!("{min} {default} {SOCKET_BUFFER_MAX}"),
        }]),
    )
}

/// "4096\t131072\t6291456" -> (4096, 131072, 6291456).
pub fn parse_tcp_mem(s: &str) -> Option<(u64, u64, u64)> {
    let mut it = s.split_whitespace().map(str::parse::<u64>);
    let triple = (it.next()?.ok()?, it.next()?.ok()?, it.next()?.ok()?);
    it.next().is_none().then_some(triple)
}

pub fn check_tcp_rmem() -> Finding {
    check_tcp_mem(
        "net.ipv4.tcp_rmem",
        "The largest receive window TCP autotuning may grow to per connection; with the \
         usual 6 MiB a single producer cannot fill a fast link across data centres.",
    )
}

pub fn check_tcp_wmem() -> Finding {
    check_tcp_mem(
        "net.ipv4.tcp_wmem",
        "The largest send buffer TCP autotuning may grow to per connection; the usual 4 MiB \
         limits how fast one consumer can fetch over a long round trip.",
    )
}

pub fn check_aio_max_nr() -> Finding {
    check_at_least(
        "fs.aio-max-nr",
        1 << 20,
        "System-wide cap on in-flight Linux AIO (io_setup) requests. corelog's I/O goes \
         through io_uring, which does not count here, but storage software sharing the host \
         (and AIO fallbacks) fail with EAGAIN once the default 65536 is used up.",
    )
}

const THP_WHY: &str = "With 'always', page faults may stop to compact memory into 2 MiB \
pages and khugepaged rewrites mappings in the background: multi-millisecond stalls at \
random. 'madvise' keeps hugepages for programs that ask for them.";

pub const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

pub fn check_thp() -> Finding {
    const NAME: &str = "transparent_hugepages";
    let recommended = "madvise or never".to_string();
    let text = match sysfs::read(THP_ENABLED) {
        Ok(t) => t,
        Err(e) => return Finding::unknown(NAME, THP_WHY, e, recommended),
    };
    let (active, options) = parse_choice(&text);
    let Some(active) = active else {
        return Finding::unknown(
            NAME,
            THP_WHY,
            format!("{THP_ENABLED} holds {text:?}, with no active choice"),
            recommended,
        );
    };
    if active == "madvise" || active == "never" {
        return Finding::ok(NAME, THP_WHY, active, recommended);
    }
    let to = ["madvise", "never"]
        .into_iter()
        .find(|o| options.iter().any(|x| x == o));
    let fix = match to {
        Some(to) => Fix::Write(vec![Write {
            what: String::new(),
            path: PathBuf::from(THP_ENABLED),
            from: active.clone(),
            to: to.to_string(),
        }]),
        None => Fix::Manual(
            "the kernel offers neither madvise nor never; boot with \
             transparent_hugepage=madvise"
                .to_string(),
        ),
    };
    Finding::warn(NAME, THP_WHY, active, recommended, fix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysctl_names_map_to_proc_sys() {
        assert_eq!(
            sysctl_path("net.core.somaxconn"),
            PathBuf::from("/proc/sys/net/core/somaxconn")
        );
        assert_eq!(
            sysctl_path("fs.aio-max-nr"),
            PathBuf::from("/proc/sys/fs/aio-max-nr")
        );
    }

    #[test]
    fn tcp_mem_triples() {
        assert_eq!(
            parse_tcp_mem("4096\t131072\t6291456\n"),
            Some((4096, 131072, 6291456))
        );
        assert_eq!(
            parse_tcp_mem("4096 16384 4194304"),
            Some((4096, 16384, 4194304))
        );
        assert_eq!(parse_tcp_mem("4096 16384"), None);
        assert_eq!(parse_tcp_mem("1 2 3 4"), None);
        assert_eq!(parse_tcp_mem("a b c"), None);
        assert_eq!(parse_tcp_mem(""), None);
    }
}
