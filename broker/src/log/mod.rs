//! Storage layer: Kafka's on-disk log format for one partition.
//!
//! * [`batch`]: v2 record batch header view and produce-payload validation.
//! * [`checkpoint`]: a shard's recovery points and high watermarks, one file per shard.
//! * [`index`]: sparse `.index` / `.timeindex` files.
//! * [`segment`]: one `.log` segment with its indexes: append, find, recovery.
//! * [`leader_epoch`]: the leader epoch cache and its `leader-epoch-checkpoint` file.
//! * [`partition_log`]: the segments of a partition: append with offset
//!   assignment and rolling, follower appends and truncation, reads, timestamp
//!   lookups, flush, retention.
//!
//! Batches are stored byte-for-byte as received except `baseOffset` and
//! `partitionLeaderEpoch`, which are replaced during the vectored write.
//!
//! Everything here is synchronous std file IO and owned by a single thread
//! (shard); the only things meant to cross threads are [`ReadSlice`] and
//! [`FlushJob`], which carry `Arc<File>`s.

pub mod batch;
pub mod checkpoint;
#[cfg(test)]
mod fd_tests;
mod fileio;
pub use fileio::syncfs;
pub mod index;
pub mod leader_epoch;
pub mod partition_log;
pub mod segment;

pub use batch::{error_code, validate_batches, BatchError, BatchesSummary, RecordBatchHeader};
pub use partition_log::{
    AppendError, AppendInfo, FlushError, FlushJob, LogConfig, PartitionLog, ReadError, ReadSlice,
    RecoveryStart, RecoveryStats,
};
