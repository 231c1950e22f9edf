//! Making a guest's mounts with `mount(2)`: no `mount` program, no fstab, no scan of the host's
//! loop devices. An image file (`loop`) is attached to an autoclear loop device
//! ([`banger_loopdev`]) that is let go of once mounted, so the kernel detaches it when the last
//! mount of it goes (at the latest with the guest's mount namespace).

use std::ffi::OsStr;
use std::io;
use std::os::unix::fs::DirBuilderExt as _;
use std::path::Path;

use nix::mount::MsFlags;

use crate::plan::Mount;

/// The tag the loop devices of guest images carry (see [`banger_loopdev`]).
const LOOP_TAG: &str = "banger-fcsim-guest";

/// The mode of a mount point made for `mkdir`, as util-linux's `X-mount.mkdir`.
const MOUNT_POINT_MODE: u32 = 0o755;

/// A mount that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Its mount point could not be made.
    #[error("making the mount point {}", target.display())]
    MountPoint {
        /// Where.
        target: std::path::PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Its image could not be attached to a loop device.
    #[error("attaching {} to a loop device", source_path.display())]
    Loop {
        /// The image.
        source_path: std::path::PathBuf,
        /// Why.
        #[source]
        source: banger_loopdev::LoopError,
    },
    /// `mount(2)` failed.
    #[error("mounting {} at {} ({fstype})", source_path.display(), target.display())]
    Mount {
        /// What.
        source_path: std::path::PathBuf,
        /// Where.
        target: std::path::PathBuf,
        /// The type.
        fstype: String,
        /// Why.
        #[source]
        source: nix::Error,
    },
}

/// The `mount(2)` flags and data of a mount's options.
fn flags_and_data(m: &Mount) -> (MsFlags, Option<String>) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "bind" => flags |= MsFlags::MS_BIND,
            "rbind" => flags |= MsFlags::MS_BIND | MsFlags::MS_REC,
            "ro" => flags |= MsFlags::MS_RDONLY,
            // Handled by `make`, not by the kernel.
            "loop" | "mkdir" => {}
            other => data.push(other),
        }
    }
    let data = (!data.is_empty()).then(|| data.join(","));
    (flags, data)
}

/// Makes mount `m`.
///
/// # Errors
/// When its mount point cannot be made, its image attached, or the mount made.
pub fn make(m: &Mount) -> Result<(), MountError> {
    if m.has("mkdir") && std::fs::symlink_metadata(&m.target).is_err() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(MOUNT_POINT_MODE)
            .create(&m.target)
            .map_err(|source| MountError::MountPoint {
                target: m.target.clone(),
                source,
            })?;
    }
    let (flags, data) = flags_and_data(m);
    let fstype = (m.fstype != "none").then_some(m.fstype.as_str());
    let mount = |source: &OsStr| {
        nix::mount::mount(Some(source), &m.target, fstype, flags, data.as_deref()).map_err(
            |source| MountError::Mount {
                source_path: m.source.clone().into(),
                target: m.target.clone(),
                fstype: m.fstype.clone(),
                source,
            },
        )
    };
    if !m.has("loop") {
        return mount(&m.source);
    }
    let image = Path::new(&m.source);
    let dev = banger_loopdev::attach(image, m.has("ro"), LOOP_TAG).map_err(|source| {
        MountError::Loop {
            source_path: image.to_owned(),
            source,
        }
    })?;
    mount(dev.path.as_os_str())
    // `dev` is dropped here: the mount holds the device, and autoclear detaches it with the
    // last mount (or now, if the mount failed).
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_become_flags_and_the_rest_is_file_system_data() {
        let (flags, data) = flags_and_data(&Mount::new("/dev", "/m/dev", "none", "rbind,mkdir"));
        assert_eq!(flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert_eq!(data, None);
        let (flags, data) =
            flags_and_data(&Mount::new("tmpfs", "/m/run", "tmpfs", "mode=0755,mkdir"));
        assert_eq!(flags, MsFlags::empty());
        assert_eq!(data.as_deref(), Some("mode=0755"));
        let (flags, data) =
            flags_and_data(&Mount::new("/i", "/m", "ext4", "loop,ro,errors=remount-ro"));
        assert_eq!(flags, MsFlags::MS_RDONLY);
        assert_eq!(data.as_deref(), Some("errors=remount-ro"));
    }
}
