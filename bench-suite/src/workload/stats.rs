//! What workers tell the driver: once a second each worker sends the counts and the latency
//! histogram of the second that just ended, so the driver can print progress, build the time
//! series and merge exact totals without sharing a histogram between threads.

use std::sync::mpsc::Sender;

use hdrhistogram::Histogram;

/// Ticks are whole seconds since the run's start time.
pub const TICK_NS: u64 = 1_000_000_000;

/// Producer latency is send->ack; consumer latency is send->receipt (end to end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Producer,
    Consumer,
}

/// One worker's figures for one tick.
pub struct Interval {
    pub role: Role,
    pub tick: u64,
    /// Messages put on the wire (producers) in this tick.
    pub sent: u64,
    /// Messages acknowledged (producers) or received (consumers).
    pub msgs: u64,
    /// Value bytes of those messages.
    pub bytes: u64,
    pub errors: u64,
    /// Latencies in nanoseconds.
    pub latency: Histogram<u64>,
    /// The worker's last report.
    pub last: bool,
}

/// A latency histogram: 1 us to 60 s at 3 significant digits, in nanoseconds.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3).expect("valid histogram bounds")
}

/// A worker's side of the reporting: counters for the current tick and its histogram.
pub struct Reporter {
    tx: Sender<Interval>,
    role: Role,
    t0: u64,
    tick: u64,
    pub sent: u64,
    pub msgs: u64,
    pub bytes: u64,
    pub errors: u64,
    hist: Histogram<u64>,
}

impl Reporter {
    pub fn new(tx: Sender<Interval>, role: Role, t0: u64) -> Self {
        Reporter {
            tx,
            role,
            t0,
            tick: 0,
            sent: 0,
            msgs: 0,
            bytes: 0,
            errors: 0,
            hist: new_histogram(),
        }
    }

    /// Records one latency (clamped to the histogram's range).
    #[inline]
    pub fn record(&mut self, latency_ns: u64) {
        self.hist.saturating_record(latency_ns);
    }

    /// When the current tick ends.
    pub fn deadline(&self) -> u64 {
        self.t0 + (self.tick + 1) * TICK_NS
    }

    /// Sends the finished ticks, if `now` is past the current one.
    pub fn tick(&mut self, now: u64) {
        while now >= self.deadline() {
            self.send(false);
            self.tick += 1;
        }
    }

    /// Sends the last report (what happened since the last tick, e.g. during drain).
    pub fn finish(mut self) {
        self.send(true);
    }

    fn send(&mut self, last: bool) {
        // The histogram moves to the driver; a fresh one per second is the only allocation.
        let latency = std::mem::replace(&mut self.hist, new_histogram());
        let interval = Interval {
            role: self.role,
            tick: self.tick,
            sent: std::mem::take(&mut self.sent),
            msgs: std::mem::take(&mut self.msgs),
            bytes: std::mem::take(&mut self.bytes),
            errors: std::mem::take(&mut self.errors),
            latency,
            last,
        };
        // The driver outlives the workers; if it is gone, there is no one to report to.
        let _ = self.tx.send(interval);
    }
}
