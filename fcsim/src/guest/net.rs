//! The guest's network interface: the host tap, opened as Firecracker opens it, the guest's own
//! tap `eth0` (opened inside the guest network namespace, see [`super::netns`]), and the
//! "virtio-net device" between them: two loops copying whole Ethernet frames host tap ⇄ eth0.
//!
//! Everything is real: frames the host sends (bridge, routes, NAT, `ping`, TCP) arrive on the
//! host tap's file descriptor, are written to eth0, and the guest namespace's kernel network
//! stack answers them (ARP, ICMP, TCP, UDP); its replies come back the same way. Only the
//! copying stands in for Firecracker's virtio-net emulation.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

use crate::log;

/// The largest frame read from a tap (a 64 KiB GSO frame cannot arrive without
/// IFF_VNET_HDR, so MTU-sized frames are what we get; this leaves room).
const FRAME_BUF: usize = 65_536;

/// Frame counters, for metrics.
#[derive(Debug, Default)]
pub(crate) struct NetCounters {
    /// Frames read from the host tap (host → guest).
    pub(crate) rx_frames: AtomicU64,
    /// Frames written to the host tap (guest → host).
    pub(crate) tx_frames: AtomicU64,
}

/// A MAC address, `aa:bb:cc:dd:ee:ff`.
pub(crate) fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub(crate) fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An open tap (`IFF_TAP | IFF_NO_PI`, non-blocking), closed on drop.
#[derive(Debug)]
pub(crate) struct Tap {
    file: File,
    name: String,
}

impl Tap {
    /// Attaches to the tap `name` with `TUNSETIFF`, as Firecracker does, in the calling
    /// thread's network namespace. An existing (persistent) tap is attached to; a missing one
    /// is created, non-persistent: it disappears when this fd closes. Fails when the name is
    /// too long, the tap may not be created, or it is busy.
    pub(crate) fn open(name: &str) -> io::Result<Self> {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("tap name {name:?} must be 1..{} bytes", libc::IFNAMSIZ),
            ));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")?;
        // SAFETY: ifreq is plain old data; all-zero is a valid value.
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
            *dst = libc::c_char::from_ne_bytes([*src]);
        }
        // IFF_TAP and IFF_NO_PI both fit a c_short (0x0002, 0x1000).
        req.ifr_ifru.ifru_flags = libc::c_short::try_from(libc::IFF_TAP | libc::IFF_NO_PI)
            .map_err(|_| io::Error::other("tap flags do not fit"))?;
        // SAFETY: TUNSETIFF reads and writes one ifreq, which `req` is and outlives the call;
        // the fd is open.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            file,
            name: name.to_owned(),
        })
    }

    /// Makes the tap persistent (`TUNSETPERSIST`): closing its fd then only detaches it,
    /// instead of unregistering the device, which waits for an RCU grace period (15–30 ms
    /// here) in the closing process — at exit, before its parent sees it gone. Only for a tap
    /// in a namespace of its own: the device goes when the namespace does.
    pub(crate) fn persist(&self) -> io::Result<()> {
        // SAFETY: TUNSETPERSIST takes an integer argument, not a pointer; the fd is open.
        let rc = unsafe { libc::ioctl(self.file.as_raw_fd(), libc::TUNSETPERSIST, 1) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// The tap's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }
}

/// A tap registered with the runtime, shared by the two copy loops.
struct Port {
    fd: AsyncFd<File>,
    name: String,
}

impl Port {
    fn new(tap: Tap) -> io::Result<Arc<Self>> {
        // SAFETY: the AsyncFd owns the File, so its fd stays open and the same until the
        // AsyncFd is dropped.
        let fd = unsafe { AsyncFd::register(tap.file) }?;
        Ok(Arc::new(Self { fd, name: tap.name }))
    }
}

/// Which way a copy loop runs, for the counters and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Host tap → guest eth0.
    ToGuest,
    /// Guest eth0 → host tap.
    ToHost,
}

/// Starts copying frames between the host tap and the guest's eth0, both ways, until the
/// returned tasks are aborted (which closes both fds once both tasks are gone). While `paused`
/// is set, frames are read and dropped: a paused VM neither receives nor sends.
pub(crate) fn connect(
    host: Tap,
    guest: Tap,
    paused: &Arc<AtomicBool>,
    counters: &Arc<NetCounters>,
) -> io::Result<[JoinHandle<()>; 2]> {
    let host = Port::new(host)?;
    let guest = Port::new(guest)?;
    Ok([
        tokio::spawn(copy_frames(
            Arc::clone(&host),
            Arc::clone(&guest),
            Direction::ToGuest,
            Arc::clone(paused),
            Arc::clone(counters),
        )),
        tokio::spawn(copy_frames(
            guest,
            host,
            Direction::ToHost,
            Arc::clone(paused),
            Arc::clone(counters),
        )),
    ])
}

async fn copy_frames(
    from: Arc<Port>,
    to: Arc<Port>,
    dir: Direction,
    paused: Arc<AtomicBool>,
    counters: Arc<NetCounters>,
) {
    let mut buf = vec![0u8; FRAME_BUF];
    loop {
        let mut guard = match from.fd.readable().await {
            Ok(g) => g,
            Err(e) => {
                log::error(&format!("tap {}: poll failed: {e}", from.name));
                return;
            }
        };
        let n = match guard.try_io(|f| f.get_ref().read(&mut buf)) {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                log::error(&format!("tap {}: read failed: {e}", from.name));
                return;
            }
            Err(_would_block) => continue,
        };
        if dir == Direction::ToGuest {
            counters.rx_frames.fetch_add(1, Ordering::Relaxed);
        }
        if paused.load(Ordering::Relaxed) {
            continue;
        }
        // A tap write is one whole frame or an error; a full queue drops the frame, as a NIC
        // would.
        match to.fd.get_ref().write(&buf[..n]) {
            Ok(w) if w == n => {
                if dir == Direction::ToHost {
                    counters.tx_frames.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(w) => log::debug(&format!("tap {}: short write {w}/{n}", to.name)),
            Err(e) => log::debug(&format!("tap {}: frame dropped: {e}", to.name)),
        }
    }
}

/// The guest's eth0 as the kernel's `ip=` argument and the interface's `guest_mac` set it up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GuestIface {
    pub(crate) mac: [u8; 6],
    pub(crate) ip: Ipv4Addr,
    pub(crate) prefix_len: u8,
    pub(crate) gateway: Option<Ipv4Addr>,
}

/// The prefix length of `netmask`; without one, the kernel's classful default for `ip`
/// (what `ip=` does when the netmask field is empty).
pub(crate) fn prefix_len(netmask: Option<Ipv4Addr>, ip: Ipv4Addr) -> u8 {
    match netmask {
        // At most 32 ones in a u32: always fits.
        Some(m) => u8::try_from(u32::from(m).count_ones()).unwrap_or(32),
        None => match ip.octets()[0] {
            0..=127 => 8,
            128..=191 => 16,
            _ => 24,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let mac = [6, 0, 0xac, 0x10, 0, 2];
        assert_eq!(parse_mac("06:00:ac:10:00:02"), Some(mac));
        assert_eq!(mac_string(mac), "06:00:ac:10:00:02");
        assert_eq!(parse_mac("06:00:ac:10:00"), None);
        assert_eq!(parse_mac("06:00:ac:10:00:02:03"), None);
        assert_eq!(parse_mac("06:00:ac:10:00:zz"), None);
    }

    #[test]
    fn prefix_lengths_come_from_the_netmask_or_the_address_class() {
        let ip = Ipv4Addr::new(172, 16, 0, 2);
        assert_eq!(prefix_len(Some(Ipv4Addr::new(255, 255, 255, 0)), ip), 24);
        assert_eq!(prefix_len(Some(Ipv4Addr::new(255, 255, 0, 0)), ip), 16);
        assert_eq!(prefix_len(None, ip), 16);
        assert_eq!(prefix_len(None, Ipv4Addr::new(10, 0, 0, 1)), 8);
        assert_eq!(prefix_len(None, Ipv4Addr::new(192, 168, 1, 1)), 24);
    }
}
