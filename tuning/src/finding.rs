//! What a check reports: one [`Finding`] per setting, and the [`Fix`] that `apply` may carry out.

use std::path::PathBuf;

use serde::Serialize;

/// How a setting compares with what a latency-sensitive thread-per-core broker wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Already as recommended.
    Ok,
    /// Readable, and not as recommended.
    Warn,
    /// Could not be read here (container, VM without the interface, old kernel); `current`
    /// says why. Never a reason to fail.
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Unknown => "unknown",
        }
    }
}

/// One kernel file write that brings a setting to its recommended value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Write {
    /// What this write is about within the setting ("cpu3", "IRQ 41 (eth0)", "nvme0n1");
    /// empty when the setting is a single file.
    pub what: String,
    /// Always under /proc/sys, /sys or /proc/irq; the writer refuses anything else.
    pub path: PathBuf,
    /// The value as read, for "changed X: from -> to".
    pub from: String,
    pub to: String,
}

/// How to bring a setting to its recommended value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fix {
    /// Kernel file writes that `corelog-tune apply` makes, in order.
    Write(Vec<Write>),
    /// Not something to change by writing a kernel file from here (limits of other processes,
    /// boot parameters, security policy): what an administrator should do instead.
    Manual(String),
}

/// The state of one setting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable identifier; one of [`crate::SETTINGS`]. Sysctls use their sysctl name.
    pub name: &'static str,
    pub current: String,
    pub recommended: String,
    pub status: Status,
    /// Why the setting matters for the broker.
    pub why: &'static str,
    /// Present only when `status` is [`Status::Warn`].
    pub fix: Option<Fix>,
}

impl Finding {
    pub fn ok(name: &'static str, why: &'static str, current: String, recommended: String) -> Self {
        Finding {
            name,
            current,
            recommended,
            status: Status::Ok,
            why,
            fix: None,
        }
    }

    pub fn warn(
        name: &'static str,
        why: &'static str,
        current: String,
        recommended: String,
        fix: Fix,
    ) -> Self {
        Finding {
            name,
            current,
            recommended,
            status: Status::Warn,
            why,
            fix: Some(fix),
        }
    }

    /// `reason` becomes the current value, so the report says why nothing could be read.
    pub fn unknown(
        name: &'static str,
        why: &'static str,
        reason: String,
        recommended: String,
    ) -> Self {
        Finding {
            name,
            current: format!("unknown: {reason}"),
            recommended,
            status: Status::Unknown,
            why,
            fix: None,
        }
    }
}
