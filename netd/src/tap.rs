//! Tap devices through the tun driver's ioctls on `/dev/net/tun`.
//!
//! `TUNSETIFF` with `IFF_TAP | IFF_NO_PI` creates (or attaches to) a tap; `TUNSETPERSIST` keeps
//! the device after the file descriptor is closed, so the hypervisor can open it by name later
//! (Firecracker does exactly that). Link state, bridge membership and MTU are set over netlink
//! ([`crate::link`]), not here. These calls block briefly: run them on the blocking pool.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::config::MAX_IFNAME;

/// The tun/tap control device.
const TUN_DEVICE: &str = "/dev/net/tun";

nix::ioctl_write_ptr_bad!(
    tun_set_iff,
    nix::request_code_write!(b'T', 202, std::mem::size_of::<libc::c_int>()),
    libc::ifreq
);
nix::ioctl_write_int!(tun_set_persist, b'T', 203);

/// `IFF_TAP | IFF_NO_PI`: an Ethernet device without the packet-information header.
#[allow(
    clippy::cast_possible_truncation,
    reason = "0x1002 fits the 16-bit flags field of ifreq"
)]
const TAP_FLAGS: libc::c_short = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;

/// Why a tap could not be created or opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// The name is empty or too long.
    #[error("tap name {0:?} must be 1 to 15 bytes")]
    Name(String),
    /// `/dev/net/tun` could not be opened.
    #[error("opening {TUN_DEVICE} (is the tun module loaded, are we root?)")]
    Open(#[source] std::io::Error),
    /// `TUNSETIFF` failed.
    #[error("TUNSETIFF for tap {name}")]
    SetIff {
        /// The tap.
        name: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// `TUNSETPERSIST` failed.
    #[error("TUNSETPERSIST for tap {name}")]
    Persist {
        /// The tap.
        name: String,
        /// The cause.
        #[source]
        source: nix::Error,
    },
    /// The blocking task that made the calls died.
    #[error("creating tap {0}: the blocking task failed")]
    Task(String),
}

/// Opens tap `name` (creating it when it does not exist) and returns its queue file descriptor.
/// Frames written to the descriptor come out of the interface and vice versa.
pub fn open(name: &str) -> Result<OwnedFd, TapError> {
    if name.is_empty() || name.len() > MAX_IFNAME {
        return Err(TapError::Name(name.to_owned()));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(TUN_DEVICE)
        .map_err(TapError::Open)?;
    // SAFETY: `ifreq` is a plain C struct of integers and byte arrays, for which all-zeroes is a
    // valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = libc::c_char::from_ne_bytes([src]);
    }
    req.ifr_ifru.ifru_flags = TAP_FLAGS;
    // SAFETY: the descriptor is an open tun control device and `req` is a valid, initialised
    // `ifreq` that outlives the call; TUNSETIFF only reads and writes inside it.
    unsafe { tun_set_iff(file.as_raw_fd(), &req) }.map_err(|source| TapError::SetIff {
        name: name.to_owned(),
        source,
    })?;
    Ok(OwnedFd::from(file))
}

/// Creates the persistent tap `name` (or keeps it when it already exists and is not busy).
pub fn create_persistent(name: &str) -> Result<(), TapError> {
    let fd = open(name)?;
    // SAFETY: `fd` is a tun descriptor attached to a device by `open`; TUNSETPERSIST takes its
    // argument by value.
    unsafe { tun_set_persist(fd.as_raw_fd(), 1) }.map_err(|source| TapError::Persist {
        name: name.to_owned(),
        source,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_cannot_be_interfaces_are_refused_before_any_syscall() {
        assert!(matches!(open(""), Err(TapError::Name(_))));
        assert!(matches!(open("bgr0123456789abcd"), Err(TapError::Name(_))));
    }
}
