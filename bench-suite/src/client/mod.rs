//! A Kafka client built for load generation, on the kafka-protocol crate.
//!
//! The hot paths (Produce requests and the record batches inside them) are written by hand
//! into reused buffers, so producing a message costs no allocation; everything else (Fetch,
//! Metadata, ListOffsets, responses) goes through kafka-protocol's message types, which
//! allocate per request or response, never per message.
pub mod admin;
pub mod batch;
pub mod conn;
pub mod group;
pub mod produce;
pub mod records;
pub mod varint;
pub mod wire;
