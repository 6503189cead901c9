//! Workloads: what to send (scenario), how (open-loop producers, tailing consumers) and the
//! driver that runs them and gathers per-second figures.
pub mod consumer;
pub mod keys;
pub mod producer;
pub mod runner;
pub mod scenario;
pub mod stats;
