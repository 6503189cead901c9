//! Leader-side follower tracking: high watermark and ISR shrink/expand decisions.
