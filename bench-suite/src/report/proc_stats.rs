//! Broker CPU time and peak memory from /proc, for `--broker-pid`, and the CPU time the
//! hypervisor stole from this machine.

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

/// CPU seconds the hypervisor has stolen from this VM so far, over all CPUs: time a vCPU
/// was ready to run and the host ran something else. Zero on bare metal.
pub fn steal_secs() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    parse_steal_ticks(&stat).map(|ticks| ticks as f64 / clock_ticks_per_sec())
}

/// The steal column (the 8th number) of the aggregate `cpu` line of /proc/stat.
fn parse_steal_ticks(stat: &str) -> Result<u64> {
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let steal = line.split_whitespace().nth(8).context("no steal column")?;
    Ok(steal.parse()?)
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

    #[test]
    fn parses_steal() {
        let stat =
            "cpu  4705 150 1120 16250 520 0 30 77 0 0\ncpu0 2000 75 500 8000 260 0 15 40 0 0\n";
        assert_eq!(parse_steal_ticks(stat).unwrap(), 77);
        assert!(parse_steal_ticks("cpu0 1 2 3\n").is_err());
        assert!(parse_steal_ticks("cpu  1 2 3 4 5 6 7\n").is_err());
        assert!(steal_secs().unwrap() >= 0.0);
    }
}
