//! Whether io_uring, which every shard's I/O goes through, can be used here.

use crate::finding::{Finding, Fix};
use crate::sysfs;

const DISABLED_SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

/// struct io_uring_params: seven u32 fields, three reserved u32, then the SQ and CQ ring
/// offset structs (40 bytes each, ending in a u64). 120 bytes, 8-byte aligned; the kernel
/// wants it zeroed apart from the fields we set, and fills in the rest.
#[repr(C, align(8))]
struct Params {
    words: [u32; 30],
}

/// `features` word of io_uring_params, filled in by the kernel.
const FEATURES_WORD: usize = 5;

/// Sets up a one-entry ring and closes it again. Ok(feature bits) or Err(errno).
pub fn probe() -> Result<u32, i32> {
    let mut params = Params { words: [0; 30] };
    // SAFETY: io_uring_setup reads and writes only the 120-byte params struct we own; the
    // fd it returns is ours and closed right away. Rings of one entry need a page or two of
    // memory, so the probe works under the tightest memlock limit.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_io_uring_setup,
            1 as libc::c_uint,
            &mut params as *mut Params,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
    }
    // SAFETY: fd is a descriptor this function just received and nobody else holds.
    unsafe {
        libc::close(fd as libc::c_int);
    }
    Ok(params.words.get(FEATURES_WORD).copied().unwrap_or(0))
}

const WHY: &str = "corelog's shards do all disk and network I/O through io_uring \
(glommio). Without it the broker cannot start; restricted to a group, it starts only as a \
member of that group.";

pub const NAME: &str = "io_uring";

pub fn check_io_uring() -> Finding {
    // Older kernels (before 6.6) have no switch: io_uring is simply there or not.
    let disabled = sysfs::read_u64(DISABLED_SYSCTL).ok();
    evaluate(disabled, probe())
}

/// The judgement behind [`check_io_uring`], apart from the syscall so it can be tested.
pub fn evaluate(disabled: Option<u64>, probe: Result<u32, i32>) -> Finding {
    let recommended = "available (kernel.io_uring_disabled = 0)".to_string();
    let sysctl = disabled.map_or(String::new(), |d| format!(", io_uring_disabled={d}"));
    // Turning io_uring back on is left to an administrator on purpose: hosts disable it to
    // shrink the kernel's attack surface, a policy a tuning tool should not override.
    let enable = "if the host's security policy allows it: sysctl -w kernel.io_uring_disabled=0 \
         (persist in /etc/sysctl.d/), or add the broker's user to the group in \
         kernel.io_uring_group; containers also need a seccomp profile allowing \
         io_uring_setup/enter/register"
        .to_string();
    match probe {
        Ok(features) if disabled.unwrap_or(0) == 0 => Finding::ok(
            NAME,
            WHY,
            format!("available (features {features:#x}){sysctl}"),
            recommended,
        ),
        Ok(features) => Finding::warn(
            NAME,
            WHY,
            format!(
                "restricted: works for this process (features {features:#x}) but only for \
                 root and kernel.io_uring_group members{sysctl}"
            ),
            recommended,
            Fix::Manual(enable),
        ),
        Err(errno) => {
            let reason = match errno {
                libc::ENOSYS => "kernel built without io_uring (or a seccomp filter hides it)",
                libc::EPERM | libc::EACCES => {
                    "denied (kernel.io_uring_disabled, or a container's seccomp policy)"
                }
                libc::ENOMEM => "out of locked memory (raise the memlock limit)",
                _ => "io_uring_setup failed",
            };
            let err = std::io::Error::from_raw_os_error(errno);
            Finding::warn(
                NAME,
                WHY,
                format!("unavailable: {reason}: {}{sysctl}", sysfs::describe(&err)),
                recommended,
                Fix::Manual(enable),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::Status;

    #[test]
    fn params_match_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<Params>(), 120);
        assert_eq!(std::mem::align_of::<Params>(), 8);
    }

    #[test]
    fn verdicts() {
        assert_eq!(evaluate(Some(0), Ok(0x3fff)).status, Status::Ok);
        assert_eq!(evaluate(None, Ok(1)).status, Status::Ok);
        assert_eq!(evaluate(Some(1), Ok(1)).status, Status::Warn);
        let f = evaluate(Some(2), Err(libc::EPERM));
        assert_eq!(f.status, Status::Warn);
        assert!(f.current.contains("denied"), "{}", f.current);
        assert!(f.current.contains("io_uring_disabled=2"), "{}", f.current);
        assert!(matches!(f.fix, Some(Fix::Manual(_))));
        assert!(evaluate(None, Err(libc::ENOSYS))
            .current
            .contains("without io_uring"));
    }

    #[test]
    fn probe_does_not_crash() {
        // Either answer is fine; the host decides.
        let _ = probe();
    }
}
