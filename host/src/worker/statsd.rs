//! The statsd client: Gunicorn's metric names with `wasmcorn.` for `gunicorn.`, in Gunicorn's line format
//! (`NAME:VALUE|c|@1.0`, `NAME:VALUE|ms`, `NAME:VALUE|g`, with `|#TAGS` appended for dogstatsd), sent over a
//! connected, non-blocking UDP socket. The lines of one event go in one datagram (statsd reads one line per
//! metric); a datagram the kernel cannot take at once is dropped, so a sender never waits.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use crate::settings::StatsdSettings;

/// A connected statsd socket with the server's naming.
pub(crate) struct Statsd {
    socket: UdpSocket,
    prefix: String,
    tags: String,
}

impl Statsd {
    /// Opens the socket (no packet is sent). `None` when the socket cannot be made: metrics are not worth a
    /// failed worker.
    pub(crate) fn connect(settings: &StatsdSettings) -> Option<Statsd> {
        let local: SocketAddr = if settings.address.is_ipv6() { "[::]:0" } else { "0.0.0.0:0" }.parse().ok()?;
        let socket = UdpSocket::bind(local).ok()?;
        socket.connect(settings.address).ok()?;
        socket.set_nonblocking(true).ok()?;
        Some(Statsd { socket, prefix: settings.prefix.clone(), tags: settings.tags.clone() })
    }

    /// One request was answered with `status` after `duration` (as Gunicorn's access hook sends).
    pub(crate) fn request(&self, status: u16, duration: Duration) {
        let milliseconds = duration.as_secs_f64() * 1000.0;
        let duration = self.line("wasmcorn.request.duration", &format!("{milliseconds:.3}"), "ms");
        let requests = self.line("wasmcorn.requests", "1", "c|@1.0");
        let status = self.line(&format!("wasmcorn.request.status.{status}"), "1", "c|@1.0");
        self.send(&[&duration, &requests, &status]);
    }

    /// A gauge: `NAME:VALUE|g`.
    pub(crate) fn gauge(&self, name: &str, value: u64) {
        self.send(&[&self.line(name, &value.to_string(), "g")]);
    }

    fn line(&self, name: &str, value: &str, kind: &str) -> String {
        let tags = if self.tags.is_empty() { String::new() } else { format!("|#{}", self.tags) };
        format!("{}{name}:{value}|{kind}{tags}", self.prefix)
    }

    /// Sends `lines` as one datagram; drops it if the socket would block or the peer is gone.
    fn send(&self, lines: &[&str]) {
        let datagram = lines.join("\n");
        let _ = self.socket.send(datagram.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_follow_gunicorns_format_with_prefix_and_tags() {
        let listener = UdpSocket::bind("127.0.0.1:0").unwrap();
        listener.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let settings = StatsdSettings {
            host: "test".to_string(),
            address: listener.local_addr().unwrap(),
            prefix: "svc.".to_string(),
            tags: "env:test".to_string(),
        };
        let statsd = Statsd::connect(&settings).unwrap();
        statsd.request(404, Duration::from_micros(2500));
        let mut buffer = [0u8; 1024];
        let length = listener.recv(&mut buffer).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&buffer[..length]),
            "svc.wasmcorn.request.duration:2.500|ms|#env:test\nsvc.wasmcorn.requests:1|c|@1.0|#env:test\n\
             svc.wasmcorn.request.status.404:1|c|@1.0|#env:test"
        );
        statsd.gauge("wasmcorn.workers", 3);
        let length = listener.recv(&mut buffer).unwrap();
        assert_eq!(String::from_utf8_lossy(&buffer[..length]), "svc.wasmcorn.workers:3|g|#env:test");
    }
}
