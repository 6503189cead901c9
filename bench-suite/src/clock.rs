//! Time sources. Latencies are measured on CLOCK_MONOTONIC in nanoseconds: it is one clock for
//! every process on the host, so a send stamp written into a record by the producer can be read
//! by a consumer in another process (librdkafka mode) and still be compared.

/// Nanoseconds on CLOCK_MONOTONIC (a vDSO call, no syscall).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Wall-clock milliseconds, for the Kafka record timestamps (brokers index them).
pub fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
