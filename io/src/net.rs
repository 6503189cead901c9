//! Outbound connections between brokers.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use glommio::net::TcpStream;

/// Connects to `address`, from `source` when given (a broker's inter-broker bind address:
/// peers, and fault-injecting proxies in tests, tell brokers apart by it). glommio cannot
/// bind before connecting, so the connect runs on the blocking pool and the socket is
/// handed to the executor afterwards.
pub async fn connect_from(
    address: SocketAddr,
    source: Option<IpAddr>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let fd = crate::spawn_blocking(move || -> io::Result<_> {
        let domain = socket2::Domain::for_address(address);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        if let Some(ip) = source {
            socket.bind(&SocketAddr::new(ip, 0).into())?;
        }
        socket.connect_timeout(&address.into(), timeout)?;
        socket.set_nodelay(true)?;
        Ok(socket.into_raw_fd())
    })
    .await?;
    // SAFETY: `fd` is a connected TCP socket whose ownership was released above.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}
