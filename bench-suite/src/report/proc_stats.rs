//! Broker CPU time and peak memory from /proc, for `--broker-pid`.

use anyhow::{Context, Result};

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_secs(pid: i32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    parse_cpu_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_sec())
}

/// The process's peak resident set (VmHWM), in bytes.
pub fn peak_rss_bytes(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status_kb(&status, "VmHWM:").context("no VmHWM in /proc/PID/status")
}

/// The process's resident set now (VmRSS), in bytes.
pub fn rss_bytes(pid: i32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    status_kb(&status, "VmRSS:").context("no VmRSS in /proc/PID/status")
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// utime + stime (fields 14 and 15) in clock ticks. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from the last `)`.
fn parse_cpu_ticks(stat: &str) -> Result<u64> {
    let rest = &stat[stat.rfind(')').context("malformed stat")? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so field n is fields[n - 3].
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// A `kB` field of /proc/PID/status, in bytes.
fn status_kb(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_and_status() {
        let stat = "1234 (core log) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat).unwrap(), 300);
        assert_eq!(
            status_kb("Name:\tx\nVmHWM:\t  2048 kB\n", "VmHWM:"),
            Some(2048 * 1024)
        );
        let me = std::process::id() as i32;
        assert!(cpu_secs(me).unwrap() >= 0.0);
        assert!(peak_rss_bytes(me).unwrap() > 0);
        assert!(rss_bytes(me).unwrap() > 0);
    }
}
