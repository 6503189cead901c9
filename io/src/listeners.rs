//! Which live process already listens on an address.
//!
//! Every shard binds the client port with SO_REUSEPORT, so binding never fails when
//! another broker already listens there: the kernel would split new connections between
//! the two. A listening socket can also outlive its process for a while (io_uring
//! releases a killed process's files asynchronously), and a plain test bind would refuse
//! a restart for it. So the check reads the kernel's socket tables and looks for a live
//! process holding a conflicting listener.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// TCP state LISTEN in /proc/net/tcp*.
const LISTEN_STATE: &str = "0A";

/// The pid of a live process (not this one) with a TCP listener that conflicts with
/// binding `address`: same port, and the same address or either one unspecified.
pub fn live_listener_on(address: SocketAddr) -> io::Result<Option<u32>> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            // No IPv6 in this kernel: no IPv6 listeners either.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        inodes.extend(
            text.lines()
                .skip(1)
                .filter_map(parse_listener)
                .filter(|(local, _)| conflicts(*local, address))
                .map(|(_, inode)| inode),
        );
    }
    if inodes.is_empty() {
        return Ok(None);
    }
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        // Processes that exit meanwhile, or that are not ours to inspect, are skipped.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let holds = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
                .is_some_and(|inode| inodes.contains(&inode));
            if holds {
                return Ok(Some(pid));
            }
        }
    }
    Ok(None)
}

fn conflicts(listener: SocketAddr, wanted: SocketAddr) -> bool {
    listener.port() == wanted.port()
        && (listener.ip() == wanted.ip()
            || listener.ip().is_unspecified()
            || wanted.ip().is_unspecified())
}

/// A LISTEN line of /proc/net/tcp or tcp6: its local address and socket inode.
fn parse_listener(line: &str) -> Option<(SocketAddr, u64)> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    if fields.get(3) != Some(&LISTEN_STATE) {
        return None;
    }
    let (ip, port) = fields.get(1)?.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let inode = fields.get(9)?.parse().ok()?;
    Some((SocketAddr::new(parse_ip(ip)?, port), inode))
}

/// The kernel prints addresses as 32-bit words in host byte order, each as hex.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let text = hex.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(text, 16).ok()?.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_live_listener_and_not_a_free_port() {
        let (tx, rx) = std::sync::mpsc::channel();
        let mut child = std::process::Command::new("python3")
            .args([
                "-c",
                "import socket,sys,time\ns=socket.socket()\ns.bind(('127.0.0.1',0))\ns.listen()\nprint(s.getsockname()[1],flush=True)\ntime.sleep(30)",
            ])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            let mut line = String::new();
            std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).unwrap();
            tx.send(line.trim().parse::<u16>().unwrap()).unwrap();
        });
        let port = rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        let taken = SocketAddr::from(([127, 0, 0, 1], port));
        let everywhere = SocketAddr::from(([0, 0, 0, 0], port));
        assert_eq!(live_listener_on(taken).unwrap(), Some(child.id()));
        assert_eq!(live_listener_on(everywhere).unwrap(), Some(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(live_listener_on(taken).unwrap(), None);
    }

    #[test]
    fn parses_kernel_address_words() {
        let line = "   1: 0100007F:4A85 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0";
        assert_eq!(
            parse_listener(line),
            Some(("127.0.0.1:19077".parse().unwrap(), 12345))
        );
        let established = line.replace(" 0A ", " 01 ");
        assert_eq!(parse_listener(&established), None);
        assert_eq!(
            parse_ip("00000000000000000000000001000000"),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
    }
}
