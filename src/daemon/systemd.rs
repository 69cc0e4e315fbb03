//! systemd integration: `sd_notify` readiness, status, watchdog and stopping messages.
//!
//! The protocol is one datagram per message to the Unix socket named by `$NOTIFY_SOCKET`
//! (a path, or an abstract name starting with '@'). Without that variable (not under systemd)
//! every call is a no-op. The watchdog is fed only by the executor's main loop, and only
//! while that loop is making progress, so a stuck loop gets the daemon restarted.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: Option<(UnixDatagram, String)>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET`; `None`-backed (no-op) when unset or unusable.
    pub fn from_env() -> Notifier {
        let path = std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|p| !p.is_empty());
        let socket = path.and_then(|p| UnixDatagram::unbound().ok().map(|s| (s, p)));
        Notifier { socket }
    }

    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    fn send(&self, msg: &str) {
        let Some((sock, path)) = &self.socket else {
            return;
        };
        let res = if let Some(name) = path.strip_prefix('@') {
            send_abstract(sock, name, msg)
        } else {
            sock.send_to(msg.as_bytes(), path).map(|_| ())
        };
        if let Err(e) = res {
            tracing::debug!("sd_notify to {path} failed: {e}");
        }
    }

    pub fn ready(&self) {
        self.send(&format!("READY=1\nMAINPID={}", std::process::id()));
    }

    pub fn status(&self, text: &str) {
        // One line only: systemd shows STATUS= verbatim.
        let line = text.replace('\n', " ");
        self.send(&format!("STATUS={line}"));
    }

    pub fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }

    pub fn reloading(&self) {
        self.send("RELOADING=1");
    }
}

#[cfg(target_os = "linux")]
fn send_abstract(sock: &UnixDatagram, name: &str, msg: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    sock.send_to_addr(msg.as_bytes(), &addr).map(|_| ())
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_sock: &UnixDatagram, _name: &str, _msg: &str) -> std::io::Result<()> {
    Err(std::io::Error::other("abstract sockets are Linux-only"))
}

/// The watchdog interval systemd asked for (`$WATCHDOG_USEC`, for this PID), halved as
/// sd_watchdog_enabled(3) recommends.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    if usec == 0 {
        return None;
    }
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifier_sends_datagrams_to_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier {
            socket: Some((UnixDatagram::unbound().unwrap(), path.display().to_string())),
        };
        n.ready();
        n.status("role=primary\nepoch=3");
        n.watchdog();
        n.stopping();
        let mut buf = [0u8; 256];
        let mut got = Vec::new();
        for _ in 0..4 {
            let len = server.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..len]).to_string());
        }
        assert!(got[0].starts_with("READY=1"));
        assert_eq!(got[1], "STATUS=role=primary epoch=3");
        assert_eq!(got[2], "WATCHDOG=1");
        assert_eq!(got[3], "STOPPING=1");
    }

    #[test]
    fn without_notify_socket_everything_is_a_no_op() {
        let n = Notifier { socket: None };
        assert!(!n.enabled());
        n.ready();
        n.watchdog();
    }
}
