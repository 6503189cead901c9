//! Cluster metadata: records, image, placement, controller.
//!
//! The active controller ([`Controller`]) turns requests and ticks into [`MetadataRecord`]s;
//! the quorum commits them as entries ([`encode`]); every node applies them to its
//! [`MetadataState`], whose [`ClusterImage`] is what brokers serve from.

mod controller;
mod image;
mod placement;
mod records;
#[cfg(test)]
mod sim;

pub use controller::{
    Controller, ControllerError, ControllerRequest, ControllerResponse, ControllerSettings,
    CreatedTopic, Decision, HeartbeatReply, NewTopic,
};
pub use image::{BrokerRegistration, ClusterImage, MetadataState, PartitionState, TopicImage};
pub use placement::assign_replicas;
pub use records::{
    decode, encode, Assignment, BrokerId, Endpoint, MetadataRecord, NewPartition, NO_LEADER,
};
