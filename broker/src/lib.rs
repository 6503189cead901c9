//! corelog broker: a Kafka-compatible, thread-per-core event streaming broker.
//!
//! Where things are:
//! - [`server`]: accepting connections and the per-connection request pipeline;
//! - [`protocol`]: framing and header decoding; [`handlers`]: one module per Kafka API
//!   (e.g. `handlers::produce`, `handlers::fetch`);
//! - [`shard`]: partition ownership, cross-shard routing, topic changes;
//! - [`log`]: the on-disk partition log (record batches, segments, indexes, recovery);
//! - [`metadata`]: topics and their persistence; [`config`]: broker settings.

pub mod admin_http;
pub mod cluster;
pub mod config;
pub mod fetch_session;
pub mod group;
pub mod handlers;
pub mod log;
pub mod metadata;
pub mod metrics;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod shutdown;

pub mod errors {
    //! Kafka error codes, as the kafka-protocol crate defines them.
    pub use kafka_protocol::error::ResponseError as ErrorCode;
}

pub mod broker;
