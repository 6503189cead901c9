//! Replicated log on raft-rs: storage, transport, node.
