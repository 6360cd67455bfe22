//! systemd's service notifications (`Type=notify`): ready once the daemon watches its
//! policies, watchdog pings from the loop that starts runs, stopping on SIGTERM.
//!
//! The protocol is one datagram per message to `$NOTIFY_SOCKET` (sd_notify(3)); without that
//! variable (not under systemd) nothing is sent. The watchdog is pinged from the main loop's
//! tick, so a loop that hangs stops the pings and systemd restarts the daemon.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

/// The notification socket, if systemd gave one.
pub(super) struct Notifier {
    socket: Option<(UnixDatagram, std::os::unix::net::SocketAddr)>,
    /// Half the watchdog's interval, and when it was last pinged.
    watchdog: Option<(Duration, Instant)>,
}

impl Notifier {
    /// From `NOTIFY_SOCKET` and `WATCHDOG_USEC` (and `WATCHDOG_PID`, which must be ours).
    pub(super) fn from_env() -> Notifier {
        let socket = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            use std::os::unix::ffi::OsStrExt;
            let bytes = path.as_bytes();
            let addr = match bytes.strip_prefix(b"@") {
                Some(name) => {
                    use std::os::linux::net::SocketAddrExt;
                    std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
                }
                None => std::os::unix::net::SocketAddr::from_pathname(&path).ok()?,
            };
            Some((UnixDatagram::unbound().ok()?, addr))
        });
        let ours = std::env::var("WATCHDOG_PID")
            .ok()
            .is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && ours && socket.is_some())
            .map(|u| (Duration::from_micros(u / 2), Instant::now()));
        Notifier { socket, watchdog }
    }

    fn send(&self, msg: &str) {
        if let Some((s, addr)) = &self.socket
            && let Err(e) = s.send_to_addr(msg.as_bytes(), addr)
        {
            tracing::warn!("cannot notify systemd ({msg}): {e}");
        }
    }

    /// The daemon watches its policies.
    pub(super) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={status}\n"));
    }

    /// A tick of the main loop: pings the watchdog when half its interval passed.
    pub(super) fn tick(&mut self) {
        if let Some((half, last)) = &mut self.watchdog
            && last.elapsed() >= *half
        {
            *last = Instant::now();
            self.send("WATCHDOG=1\n");
        }
    }

    /// The daemon is stopping (its runs finish their steps and cleanups first).
    pub(super) fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={status}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_the_socket_and_the_watchdog_is_pinged_at_half_its_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        listener
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut n = Notifier {
            socket: Some((
                UnixDatagram::unbound().unwrap(),
                std::os::unix::net::SocketAddr::from_pathname(&path).unwrap(),
            )),
            watchdog: Some((Duration::ZERO, Instant::now())),
        };
        let mut buf = [0u8; 256];
        let mut recv = || {
            let k = listener.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..k]).into_owned()
        };
        n.ready("watching 3 jobs");
        assert_eq!(recv(), "READY=1\nSTATUS=watching 3 jobs\n");
        n.tick();
        assert_eq!(recv(), "WATCHDOG=1\n");
        n.stopping("SIGTERM");
        assert_eq!(recv(), "STOPPING=1\nSTATUS=SIGTERM\n");
        // Not under systemd: nothing to send, nothing fails.
        let mut none = Notifier {
            socket: None,
            watchdog: None,
        };
        none.ready("x");
        none.tick();
    }
}
