//! Cluster metadata: records, image, placement, controller.
