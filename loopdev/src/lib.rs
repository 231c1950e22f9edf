//! Loop devices through the kernel's loop ioctls (no `losetup` in the hot path).
//!
//! A device is configured atomically with `LOOP_CONFIGURE` (Linux 5.8+: backing file, flags and
//! name in one call) after `LOOP_CTL_GET_FREE` picked a free number; another process can take
//! the same number in between, so a busy answer picks again (bounded).
//!
//! Every device attached here carries a *tag* in the kernel's `lo_file_name` field (64 bytes,
//! returned by `LOOP_GET_STATUS64`). stord's are `banger-<state tag>-<vm id>-<role>`: its
//! reconciliation finds its devices by that tag, never by guessing from backing paths, so it
//! cannot touch a loop device that someone else made. The simulator's guest init
//! (`banger-fcsim-init`) tags the images it mounts `banger-fcsim-<role>`.
//!
//! Devices are attached with `LO_FLAGS_AUTOCLEAR`: the kernel detaches one when its last user
//! closes it. The caller keeps the returned [`Attached`] (an open handle) until the real user (a
//! dm table, a mount) holds the device, then drops it; if the caller dies in between, the
//! kernel still cleans up. A device is never leaked.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `/dev/loop-control`.
const LOOP_CONTROL: &str = "/dev/loop-control";
/// Loop ioctl numbers from `<linux/loop.h>` (not `_IO`-encoded, hence raw values).
const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LOOP_CLR_FD: libc::Ioctl = 0x4C01;
const LOOP_GET_STATUS64: libc::Ioctl = 0x4C05;
/// `LO_FLAGS_READ_ONLY`.
const LO_FLAGS_READ_ONLY: u32 = 1;
/// `LO_FLAGS_AUTOCLEAR`.
const LO_FLAGS_AUTOCLEAR: u32 = 4;
/// `LO_NAME_SIZE`: the tag field's size, including the terminating NUL.
pub const TAG_CAPACITY: usize = 64;
/// How many times a free number is picked again when another process took it first.
const CONFIGURE_ATTEMPTS: u32 = 16;
/// The block major of loop devices.
pub const LOOP_MAJOR: u32 = 7;

/// `struct loop_info64`.
#[repr(C)]
#[derive(Clone, Copy)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; TAG_CAPACITY],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

impl LoopInfo64 {
    const fn zeroed() -> Self {
        Self {
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: 0,
            lo_file_name: [0; TAG_CAPACITY],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
        }
    }
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// An attached loop device, held open: the kernel detaches it (autoclear) once this handle and
/// every other user are gone.
#[derive(Debug)]
pub struct Attached {
    /// The device number (`/dev/loop<number>`).
    pub number: u32,
    /// The device node.
    pub path: PathBuf,
    handle: File,
}

impl Attached {
    /// `major:minor`, the form a dm table names a device by (no `/dev` node needed).
    pub fn dev_t(&self) -> String {
        format!("{LOOP_MAJOR}:{}", self.number)
    }

    /// The open handle (for ioctls on the device).
    pub fn file(&self) -> &File {
        &self.handle
    }
}

/// A bound loop device found on the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoopEntry {
    /// Device number.
    pub number: u32,
    /// The tag it was attached with (empty for devices attached without one).
    pub tag: String,
    /// Its backing file, as sysfs reports it.
    pub backing_file: PathBuf,
}

/// Why a loop operation failed.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The tag does not fit the kernel's name field.
    #[error("loop tag {0:?} is longer than {max} bytes", max = TAG_CAPACITY - 1)]
    TagTooLong(String),
    /// Opening the loop control device failed.
    #[error("opening {LOOP_CONTROL}")]
    Control(#[source] io::Error),
    /// Asking for a free device failed.
    #[error("asking the kernel for a free loop device")]
    GetFree(#[source] io::Error),
    /// Opening the backing file failed.
    #[error("opening {path} as a loop backing file")]
    Backing {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Opening a loop device node failed.
    #[error("opening /dev/loop{number}")]
    Open {
        /// Device number.
        number: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Configuring the device failed.
    #[error("attaching {path} to /dev/loop{number}")]
    Configure {
        /// The backing file.
        path: PathBuf,
        /// Device number.
        number: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Every free device was taken by someone else before we could use it.
    #[error("no loop device stayed free for {path} after {CONFIGURE_ATTEMPTS} attempts")]
    Contended {
        /// The backing file.
        path: PathBuf,
    },
    /// Detaching failed.
    #[error("detaching /dev/loop{number}")]
    Detach {
        /// Device number.
        number: u32,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Listing devices failed.
    #[error("listing loop devices in /sys/block")]
    List(#[source] io::Error),
}

impl LoopError {
    /// The OS error behind this failure, if any (callers retry on `EBUSY`).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Self::Control(e)
            | Self::GetFree(e)
            | Self::Backing { source: e, .. }
            | Self::Open { source: e, .. }
            | Self::Configure { source: e, .. }
            | Self::Detach { source: e, .. }
            | Self::List(e) => e.raw_os_error(),
            Self::TagTooLong(_) | Self::Contended { .. } => None,
        }
    }
}

/// Copies `tag` into a NUL-terminated kernel name field.
fn tag_field(tag: &str) -> Result<[u8; TAG_CAPACITY], LoopError> {
    let bytes = tag.as_bytes();
    if bytes.len() >= TAG_CAPACITY {
        return Err(LoopError::TagTooLong(tag.to_owned()));
    }
    let mut field = [0u8; TAG_CAPACITY];
    field[..bytes.len()].copy_from_slice(bytes);
    Ok(field)
}

/// Reads a NUL-terminated kernel name field.
fn field_tag(field: &[u8; TAG_CAPACITY]) -> String {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The node of loop device `number`.
pub fn node(number: u32) -> PathBuf {
    PathBuf::from(format!("/dev/loop{number}"))
}

/// Attaches `file` to a free loop device with `tag`, read-only when asked, with autoclear.
pub fn attach(file: &Path, read_only: bool, tag: &str) -> Result<Attached, LoopError> {
    let name = tag_field(tag)?;
    let backing = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .open(file)
        .map_err(|source| LoopError::Backing {
            path: file.to_owned(),
            source,
        })?;
    let control = File::open(LOOP_CONTROL).map_err(LoopError::Control)?;
    for _ in 0..CONFIGURE_ATTEMPTS {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number or -1; the
        // descriptor is a valid open loop-control file for the duration of the call.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        let number =
            u32::try_from(n).map_err(|_| LoopError::GetFree(io::Error::last_os_error()))?;
        let dev = match OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(node(number))
        {
            Ok(d) => d,
            // The node appears asynchronously under devtmpfs on some kernels; a number that
            // vanished or is not there yet is simply picked again.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(LoopError::Open { number, source }),
        };
        let mut info = LoopInfo64::zeroed();
        info.lo_flags = LO_FLAGS_AUTOCLEAR | if read_only { LO_FLAGS_READ_ONLY } else { 0 };
        info.lo_file_name = name;
        let fd = u32::try_from(backing.as_raw_fd()).map_err(|_| LoopError::Configure {
            path: file.to_owned(),
            number,
            source: io::Error::from_raw_os_error(libc::EBADF),
        })?;
        let config = LoopConfig {
            fd,
            block_size: 0,
            info,
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `LoopConfig` mirrors
        // (repr(C), same field order and sizes); the pointer is valid for the whole call and the
        // kernel does not keep it.
        let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CONFIGURE, &raw const config) };
        if rc == 0 {
            return Ok(Attached {
                number,
                path: node(number),
                handle: dev,
            });
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EBUSY) {
            // Someone else configured this number after GET_FREE handed it to us.
            continue;
        }
        return Err(LoopError::Configure {
            path: file.to_owned(),
            number,
            source: err,
        });
    }
    Err(LoopError::Contended {
        path: file.to_owned(),
    })
}

/// Detaches loop device `number`. With autoclear set and the device still in use, the kernel
/// detaches it when its last user closes it. A device that is already gone is not an error.
pub fn detach(number: u32) -> Result<(), LoopError> {
    let dev = match File::open(node(number)) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(LoopError::Open { number, source }),
    };
    // SAFETY: LOOP_CLR_FD takes no argument; the descriptor is valid for the call.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_CLR_FD, 0) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    // ENXIO: not bound (already detached).
    if err.raw_os_error() == Some(libc::ENXIO) {
        return Ok(());
    }
    Err(LoopError::Detach {
        number,
        source: err,
    })
}

/// The tag of a bound device, or `None` when it is not bound.
fn tag_of(number: u32) -> Result<Option<String>, LoopError> {
    let dev = match File::open(node(number)) {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(LoopError::Open { number, source }),
    };
    let mut info = LoopInfo64::zeroed();
    // SAFETY: LOOP_GET_STATUS64 writes a `struct loop_info64`, which `LoopInfo64` mirrors; the
    // pointer is valid and exclusively borrowed for the call.
    let rc = unsafe { libc::ioctl(dev.as_raw_fd(), LOOP_GET_STATUS64, &raw mut info) };
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(LoopError::Open {
            number,
            source: err,
        });
    }
    Ok(Some(field_tag(&info.lo_file_name)))
}

/// Every bound loop device with its tag and backing file.
pub fn list() -> Result<Vec<LoopEntry>, LoopError> {
    let mut out = Vec::new();
    let dir = match std::fs::read_dir("/sys/block") {
        Ok(d) => d,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LoopError::List(e)),
    };
    for entry in dir {
        let entry = entry.map_err(LoopError::List)?;
        let name = entry.file_name();
        let Some(number) = name
            .to_str()
            .and_then(|n| n.strip_prefix("loop"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // `loop/backing_file` exists only while the device is bound.
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        if let Some(tag) = tag_of(number)? {
            out.push(LoopEntry {
                number,
                tag,
                backing_file: PathBuf::from(backing.trim_end()),
            });
        }
    }
    out.sort_by_key(|e| e.number);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_structs_have_the_abi_sizes() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }

    #[test]
    fn tags_fit_the_kernel_field_or_are_refused() {
        let f = tag_field("banger-0123abcd-0123456789abcdef0123456789abcdef-origin").unwrap();
        assert_eq!(
            field_tag(&f),
            "banger-0123abcd-0123456789abcdef0123456789abcdef-origin"
        );
        assert!(matches!(
            tag_field(&"x".repeat(64)),
            Err(LoopError::TagTooLong(_))
        ));
        assert_eq!(field_tag(&tag_field("").unwrap()), "");
    }

    #[test]
    fn dev_t_names_the_loop_major() {
        assert_eq!(node(3), PathBuf::from("/dev/loop3"));
    }
}
