//! Binding the heartbeat UDP socket.
//!
//! socket2 gives control over the options std hides: SO_REUSEADDR stays off so that a second
//! quorate on the same address fails loudly instead of silently sharing (and stealing) the
//! heartbeats, and the receive buffer is enlarged so a burst of datagrams after a pause of the
//! process is queued rather than dropped.

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

/// Receive buffer we ask the kernel for. Best effort: the kernel caps it at
/// `net.core.rmem_max`, which is fine, heartbeats are small.
pub const RECV_BUFFER_BYTES: usize = 256 * 1024;

/// Why the heartbeat socket could not be set up. Every message names the address.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    #[error(
        "address in use: another quorate or program listens on {addr}; \
         stop it or change listen.heartbeat"
    )]
    AddrInUse { addr: SocketAddr },
    #[error(
        "cannot bind {addr}: no network interface of this host has that address; \
         set listen.heartbeat to one of this host's addresses (or 0.0.0.0)"
    )]
    AddrNotAvailable { addr: SocketAddr },
    #[error(
        "permission denied binding {addr}: ports below 1024 need root or \
         CAP_NET_BIND_SERVICE; use a higher port in listen.heartbeat"
    )]
    PermissionDenied { addr: SocketAddr },
    #[error("cannot {what} for the heartbeat socket {addr}: {source}; check listen.heartbeat and the host's network setup")]
    Io {
        addr: SocketAddr,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot register the heartbeat socket {addr} with the async runtime: {source}; \
         the heartbeat service must be started inside a tokio runtime with IO enabled"
    )]
    Runtime {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

fn io_err(addr: SocketAddr, what: &'static str) -> impl FnOnce(io::Error) -> SocketError {
    move |source| SocketError::Io { addr, what, source }
}

/// Bind a nonblocking UDP socket on `addr` (std type, usable before a runtime exists).
pub fn bind_std(addr: SocketAddr) -> Result<std::net::UdpSocket, SocketError> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))
        .map_err(io_err(addr, "create a UDP socket"))?;
    socket
        .set_reuse_address(false)
        .map_err(io_err(addr, "clear SO_REUSEADDR"))?;
    if addr.is_ipv6() {
        // Accept IPv4 peers on [::] too where the system allows it; an explicit IPv6 address
        // is unaffected. Best effort: some systems force v6-only.
        let _ = socket.set_only_v6(false);
    }
    if let Err(e) = socket.set_recv_buffer_size(RECV_BUFFER_BYTES) {
        tracing::debug!(%addr, error = %e, "could not enlarge the heartbeat receive buffer; using the default");
    }
    socket
        .set_nonblocking(true)
        .map_err(io_err(addr, "make nonblocking"))?;
    socket.bind(&addr.into()).map_err(|e| match e.kind() {
        io::ErrorKind::AddrInUse => SocketError::AddrInUse { addr },
        io::ErrorKind::AddrNotAvailable => SocketError::AddrNotAvailable { addr },
        io::ErrorKind::PermissionDenied => SocketError::PermissionDenied { addr },
        _ => SocketError::Io {
            addr,
            what: "bind",
            source: e,
        },
    })?;
    Ok(socket.into())
}

/// Hand a bound std socket to tokio (made nonblocking first, as tokio requires).
pub fn into_tokio(socket: std::net::UdpSocket) -> Result<tokio::net::UdpSocket, SocketError> {
    let addr = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    socket
        .set_nonblocking(true)
        .map_err(io_err(addr, "make nonblocking"))?;
    tokio::net::UdpSocket::from_std(socket).map_err(|source| SocketError::Runtime { addr, source })
}

/// Bind the heartbeat socket on `addr` and register it with the current tokio runtime.
pub fn bind(addr: SocketAddr) -> Result<tokio::net::UdpSocket, SocketError> {
    into_tokio(bind_std(addr)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_ephemeral_port_nonblocking() {
        let s = bind_std("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = s.local_addr().unwrap();
        assert_ne!(addr.port(), 0);
        // Nonblocking: an empty receive returns WouldBlock at once instead of hanging the test.
        let mut buf = [0u8; 16];
        let err = s.recv_from(&mut buf).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn second_bind_on_same_address_is_refused_with_a_helpful_message() {
        let first = bind_std("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind_std(addr).unwrap_err();
        assert!(matches!(err, SocketError::AddrInUse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&addr.to_string()), "{msg}");
        assert!(msg.contains("listen.heartbeat"), "{msg}");
    }

    #[test]
    fn foreign_address_is_not_available() {
        // TEST-NET-1 (RFC 5737) is never assigned to a local interface.
        let addr: SocketAddr = "192.0.2.1:0".parse().unwrap();
        let err = bind_std(addr).unwrap_err();
        assert!(
            matches!(err, SocketError::AddrNotAvailable { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("192.0.2.1"));
    }

    #[tokio::test]
    async fn bind_registers_with_tokio() {
        let s = bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = s.local_addr().unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.send_to(b"ping", addr).unwrap();
        let mut buf = [0u8; 16];
        let (n, from) =
            tokio::time::timeout(std::time::Duration::from_secs(5), s.recv_from(&mut buf))
                .await
                .unwrap()
                .unwrap();
        assert_eq!(&buf[..n], b"ping");
        assert_eq!(from, peer.local_addr().unwrap());
    }
}
