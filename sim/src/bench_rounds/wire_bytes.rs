//! Bytes on the wire between the benchmark's sidecars and the coordinator, counted by the
//! kernel: every TCP socket of this process whose peer is the coordinator's port is asked
//! for `TCP_INFO`, whose `tcpi_bytes_acked` / `tcpi_bytes_received` are the TCP payload
//! bytes sent (and acknowledged) and received on that connection, i.e. everything gRPC
//! puts on the wire (HTTP/2 frames, headers, protobuf framing, heartbeats) but not the
//! TCP/IP headers. The loopback interface's counters (`/proc/net/dev`) are read as well,
//! as a cross-check that includes TCP/IP headers and ACKs (and any other loopback traffic
//! on the machine at the time).
//!
//! Why not a counting wrapper around the sidecars' streams: the sidecar builds its own
//! tonic channel, and counting in the kernel needs no change to the code under test and
//! adds no copy to the hot path. A connection that closes between two samples takes its
//! counters with it, so sidecars must keep their session (the benchmark checks that).

/// Totals over the connections to the coordinator at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireSample {
    /// Client → coordinator payload bytes (acknowledged).
    pub up: u64,
    /// Coordinator → client payload bytes.
    pub down: u64,
    /// Connections counted.
    pub connections: usize,
    /// Loopback interface bytes (rx; on `lo` rx equals tx), TCP/IP headers included.
    pub loopback: u64,
}

impl WireSample {
    pub fn total(&self) -> u64 {
        self.up + self.down
    }
}

// Offsets in Linux's `struct tcp_info` (stable ABI; these fields exist since 4.1).
const BYTES_ACKED: usize = 120;
const BYTES_RECEIVED: usize = 128;

/// Sums `TCP_INFO` byte counters over this process's TCP sockets connected to
/// `127.0.0.1:port`, and reads the loopback interface counters.
pub fn sample(port: u16) -> WireSample {
    let mut s = WireSample { loopback: loopback_bytes(), ..WireSample::default() };
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else { return s };
    for entry in dir.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        let is_socket = std::fs::read_link(entry.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"));
        if !is_socket || peer_port(fd) != Some(port) {
            continue;
        }
        if let Some((up, down)) = tcp_bytes(fd) {
            s.up += up;
            s.down += down;
            s.connections += 1;
        }
    }
    s
}

fn peer_port(fd: i32) -> Option<u16> {
    // SAFETY: getpeername writes at most `len` bytes into `addr`, which is large enough for
    // any socket address; a closed or non-socket fd makes it fail, which we handle.
    unsafe {
        let mut addr: libc::sockaddr_storage = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
        if libc::getpeername(fd, (&raw mut addr).cast(), &mut len) != 0 {
            return None;
        }
        match i32::from(addr.ss_family) {
            libc::AF_INET => {
                let a = &*(&raw const addr).cast::<libc::sockaddr_in>();
                (u32::from_be(a.sin_addr.s_addr) == 0x7F00_0001).then(|| u16::from_be(a.sin_port))
            }
            _ => None,
        }
    }
}

fn tcp_bytes(fd: i32) -> Option<(u64, u64)> {
    let mut buf = [0u8; 512];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `buf`.
    let rc = unsafe { libc::getsockopt(fd, libc::IPPROTO_TCP, libc::TCP_INFO, buf.as_mut_ptr().cast(), &mut len) };
    if rc != 0 || (len as usize) < BYTES_RECEIVED + 8 {
        return None;
    }
    let read = |at: usize| u64::from_ne_bytes(buf[at..at + 8].try_into().expect("8 bytes"));
    Some((read(BYTES_ACKED), read(BYTES_RECEIVED)))
}

/// Bytes received on `lo` since boot (0 if unreadable).
pub fn loopback_bytes() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/dev") else { return 0 };
    text.lines()
        .find_map(|l| l.trim_start().strip_prefix("lo:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn counts_payload_bytes_of_connections_to_the_port() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        let before = sample(port);
        client.write_all(&[7u8; 100_000]).unwrap();
        let mut got = vec![0u8; 100_000];
        server.read_exact(&mut got).unwrap();
        server.write_all(&[1u8; 5_000]).unwrap();
        let mut back = vec![0u8; 5_000];
        client.read_exact(&mut back).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let after = sample(port);
        // The accepted side's peer port is ephemeral, so only the client socket counts.
        assert_eq!(after.connections, 1);
        assert_eq!(after.up - before.up, 100_000);
        assert_eq!(after.down - before.down, 5_000);
    }
}
