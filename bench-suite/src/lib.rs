//! corelog-bench: a Kafka load generator built for honest numbers.
//!
//! - `client`: a minimal Kafka client for load (record batches encoded straight into reused
//!   buffers, pipelined requests on non-blocking sockets) plus a blocking admin client.
//! - `workload`: scenario files, open-loop producers and tailing consumers, the run driver.
//! - `report`: HdrHistogram percentiles, tables, JSON, SVG plots, broker CPU/RSS.
//! - `null_broker`: a broker that only keeps recent records in memory and serves them back,
//!   to measure the generator's own ceiling (producing and consuming).
//! - `compare`: one scenario against several targets, side by side.
//! - `disk_probe`: the disk's own write + fdatasync latency, the floor of acks=all.
pub mod client;
pub mod clock;
pub mod compare;
pub mod disk_probe;
pub mod null_broker;
#[cfg(feature = "rdkafka")]
pub mod rdkafka_driver;
pub mod report;
pub mod workload;
