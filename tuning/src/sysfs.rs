//! Reading /proc and /sys. Every reader returns the reason as a `String` instead of failing,
//! because a missing file (container, VM, old kernel) is a finding, not an error.
//!
//! Nothing here writes; see [`crate::apply::Writer`] for the only write path.

use std::path::Path;

/// The file's content without surrounding whitespace.
pub fn read(path: impl AsRef<Path>) -> Result<String, String> {
    let path = path.as_ref();
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .map_err(|e| format!("cannot read {}: {}", path.display(), describe(&e)))
}

/// A file holding one unsigned number, such as most sysctls.
pub fn read_u64(path: impl AsRef<Path>) -> Result<u64, String> {
    let path = path.as_ref();
    let text = read(path)?;
    text.parse::<u64>()
        .map_err(|_| format!("{} holds {text:?}, not a number", path.display()))
}

/// io errors without the "(os error N)" noise, which means nothing to an operator.
pub fn describe(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "not present".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => {
            let s = e.to_string();
            s.split(" (os error").next().unwrap_or_default().to_string()
        }
    }
}

/// The kernel's "choice" format, used by the block scheduler, transparent hugepages and
/// others: every option separated by spaces, the active one in brackets, as in
/// `none [mq-deadline] kyber bfq`. Returns (active, all options without brackets).
pub fn parse_choice(s: &str) -> (Option<String>, Vec<String>) {
    let mut active = None;
    let mut options = Vec::new();
    for word in s.split_whitespace() {
        match word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            Some(inner) => {
                active = Some(inner.to_string());
                options.push(inner.to_string());
            }
            None => options.push(word.to_string()),
        }
    }
    // A file offering a single option sometimes prints it without brackets ("none").
    if active.is_none() && options.len() == 1 {
        active = options.first().cloned();
    }
    (active, options)
}

/// Bytes for humans: whole KiB/MiB/GiB when exact, the plain number otherwise.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_with_active_option() {
        let (active, options) = parse_choice("none [mq-deadline] kyber bfq\n");
        assert_eq!(active.as_deref(), Some("mq-deadline"));
        assert_eq!(options, ["none", "mq-deadline", "kyber", "bfq"]);
    }

    #[test]
    fn choice_first_and_last() {
        assert_eq!(
            parse_choice("[none] mq-deadline").0.as_deref(),
            Some("none")
        );
        assert_eq!(
            parse_choice("always madvise [never]").0.as_deref(),
            Some("never")
        );
        // Legacy single-queue schedulers.
        assert_eq!(
            parse_choice("noop deadline [cfq]").0.as_deref(),
            Some("cfq")
        );
    }

    #[test]
    fn choice_single_option_without_brackets() {
        assert_eq!(parse_choice("none").0.as_deref(), Some("none"));
    }

    #[test]
    fn choice_odd_input() {
        assert_eq!(parse_choice(""), (None, vec![]));
        assert_eq!(parse_choice("a b").0, None);
        // A lone bracket is not a selection and must not panic.
        assert_eq!(parse_choice("[ ]").0, None);
        assert_eq!(parse_choice("[]").0.as_deref(), Some(""));
    }

    #[test]
    fn human_sizes() {
        assert_eq!(human_bytes(8 << 20), "8 MiB");
        assert_eq!(human_bytes(512 << 20), "512 MiB");
        assert_eq!(human_bytes(65536), "64 KiB");
        assert_eq!(human_bytes(1000), "1000");
        assert_eq!(human_bytes(0), "0");
    }

    #[test]
    fn read_missing_file_is_an_error_not_a_panic() {
        let err = read("/proc/sys/no/such/setting").unwrap_err();
        assert!(err.contains("not present"), "{err}");
    }
}
