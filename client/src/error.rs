//! What can go wrong in a call, each saying where, so a command line can print one line.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{StrBytes, VersionRange};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {cause}")]
    Connect { addr: String, cause: std::io::Error },
    #[error("{addr}: no answer within {timeout_ms} ms")]
    Timeout { addr: String, timeout_ms: u128 },
    #[error("{addr}: {cause}")]
    Io { addr: String, cause: std::io::Error },
    /// The broker sent something this client cannot make sense of (or the reverse).
    #[error("{addr}: {message}")]
    Protocol { addr: String, message: String },
    #[error("{addr} {}", unsupported_reason(*.api_key, .broker, .client))]
    Unsupported {
        addr: String,
        api_key: i16,
        /// What the broker serves, when it serves the API at all.
        broker: Option<VersionRange>,
        client: VersionRange,
    },
    /// The broker answered with a Kafka error code.
    #[error("{context}: {}{}", error_name(*.code), .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Kafka {
        context: String,
        code: ResponseError,
        message: Option<String>,
    },
    /// A request the client refuses to send, or an answer that lacks what was asked.
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    /// The Kafka error code, if the broker answered with one.
    pub fn kafka_code(&self) -> Option<ResponseError> {
        match self {
            Error::Kafka { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether the connection the error came from can no longer be used: its requests
    /// and answers may be out of step.
    pub fn breaks_connection(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. } | Error::Io { .. } | Error::Protocol { .. }
        )
    }
}

/// Turns a response's error code into a result; `context` names what was asked, for the
/// message (built only on error).
pub fn check(
    code: i16,
    message: Option<&StrBytes>,
    context: impl FnOnce() -> String,
) -> Result<()> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(code) => Err(Error::Kafka {
            context: context(),
            code,
            message: message.map(|m| m.to_string()).filter(|m| !m.is_empty()),
        }),
    }
}

/// Kafka's name for an error code (`UNKNOWN_TOPIC_OR_PARTITION`), the form its tools and
/// documentation use, from the crate's variant name.
pub fn error_name(code: ResponseError) -> String {
    if let ResponseError::Unknown(code) = code {
        return format!("UNKNOWN_ERROR_CODE_{code}");
    }
    let camel = code.to_string();
    let mut name = String::with_capacity(camel.len() + 8);
    for (i, c) in camel.char_indices() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

fn unsupported_reason(key: i16, broker: &Option<VersionRange>, client: &VersionRange) -> String {
    let api =
        ApiKey::try_from(key).map_or_else(|_| "an unknown API".into(), |api| format!("{api:?}"));
    match broker {
        None => format!("does not serve {api} (API key {key})"),
        Some(range) => {
            format!("serves {api} (API key {key}) in versions {range}, this client speaks {client}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(
            error_name(ResponseError::UnknownTopicOrPartition),
            "UNKNOWN_TOPIC_OR_PARTITION"
        );
        assert_eq!(
            error_name(ResponseError::TopicAlreadyExists),
            "TOPIC_ALREADY_EXISTS"
        );
        assert_eq!(
            error_name(ResponseError::Unknown(999)),
            "UNKNOWN_ERROR_CODE_999"
        );
    }

    #[test]
    fn check_carries_code_and_message() {
        assert!(check(0, None, || unreachable!()).is_ok());
        let message = StrBytes::from_static_str("no such topic");
        let error = check(3, Some(&message), || "describe topic t".into()).unwrap_err();
        assert_eq!(
            error.to_string(),
            "describe topic t: UNKNOWN_TOPIC_OR_PARTITION: no such topic"
        );
    }
}
