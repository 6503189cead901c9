//! corelog-replication: what a cluster of corelog brokers agrees on and how.
//!
//! - [`quorum`]: a replicated log of opaque entries on raft-rs (the controller quorum),
//!   with its own disk storage and TCP transport, run on a glommio executor.
//! - [`metadata`]: the cluster metadata kept in that log: records, the image every broker
//!   applies them to, replica placement and the active controller's decisions.
//! - [`isr`]: the partition leader's view of its followers: high watermark and ISR changes.

pub mod isr;
pub mod metadata;
pub mod quorum;
