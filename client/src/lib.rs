//! corelog-client: a small blocking Kafka client for corelog's command line, on the
//! kafka-protocol crate.
//!
//! - [`Connection`]: one broker; framing, correlation ids, API version negotiation.
//! - [`Client`]: a cluster; bootstrap, metadata, a connection per broker node id, and
//!   typed calls for topics and configs ([`admin`]), records ([`records`]) and consumer
//!   groups ([`groups`]).
//! - [`partitioner`]: Kafka's default key partitioner.

pub mod admin;
mod client;
mod connection;
pub mod error;
pub mod groups;
pub mod partitioner;
pub mod records;
mod versions;

pub use client::{BrokerInfo, Client, Metadata, PartitionInfo, TopicInfo, Topics};
pub use connection::{encode_frame, Connection, Options, Wanted};
pub use error::{Error, Result};
pub use kafka_protocol;
pub use versions::ApiVersions;
