//! Mounting a work-disk image for a moment, invisibly to the rest of the host.
//!
//! The work is done on a dedicated thread that first moves itself into a private mount
//! namespace (`unshare(CLONE_NEWNS)`, then `/` made recursively private), so the mount never
//! appears in the host's mount table and no other thread of stord (a tokio worker) changes
//! namespace. The image is attached to an autoclear loop device and mounted; when the closure
//! returns the file system is unmounted, and if anything goes wrong the namespace dies with the
//! thread, which unmounts it and lets the kernel detach the loop device.

use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

use crate::sys::loopdev::{self, LoopError};

/// Why a temporary mount failed.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// Making a private mount namespace failed.
    #[error("entering a private mount namespace")]
    Unshare(#[source] nix::Error),
    /// Making `/` private in it failed.
    #[error("making the private namespace's mounts private")]
    MakePrivate(#[source] nix::Error),
    /// Attaching the image failed.
    #[error("attaching {path} to a loop device")]
    Loop {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: LoopError,
    },
    /// Creating the mount point failed.
    #[error("creating a mount point under {dir}")]
    MountPoint {
        /// Where.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Mounting failed.
    #[error("mounting {path} (ext4)")]
    Mount {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// Unmounting failed.
    #[error("unmounting {path}")]
    Unmount {
        /// The image.
        path: PathBuf,
        /// Why.
        #[source]
        source: nix::Error,
    },
    /// The worker thread could not be started or panicked.
    #[error("the mount worker thread failed: {0}")]
    Thread(String),
}

/// Mounts the ext4 image `image` read-write in a private mount namespace, runs `work` with the
/// mount point, and unmounts. `scratch` is a directory of stord's own for the mount point;
/// `tag` names the loop device (see [`loopdev`]).
pub fn with_mounted_ext4<R, F>(
    image: &Path,
    scratch: &Path,
    tag: &str,
    work: F,
) -> Result<R, MountError>
where
    R: Send + 'static,
    F: FnOnce(&Path) -> R + Send + 'static,
{
    let image = image.to_owned();
    let scratch = scratch.to_owned();
    let tag = tag.to_owned();
    let worker = std::thread::Builder::new()
        .name("stord-mount".into())
        .spawn(move || mount_in_private_namespace(&image, &scratch, &tag, work))
        .map_err(|e| MountError::Thread(e.to_string()))?;
    worker
        .join()
        .map_err(|_| MountError::Thread("it panicked".into()))?
}

fn mount_in_private_namespace<R, F>(
    image: &Path,
    scratch: &Path,
    tag: &str,
    work: F,
) -> Result<R, MountError>
where
    F: FnOnce(&Path) -> R,
{
    // This thread only: CLONE_NEWNS implies CLONE_FS, so the thread gets its own root, cwd and
    // mount namespace while the rest of the process keeps the host's.
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(MountError::Unshare)?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(MountError::MakePrivate)?;
    let dev = loopdev::attach(image, false, tag).map_err(|source| MountError::Loop {
        path: image.to_owned(),
        source,
    })?;
    let point = tempfile::Builder::new()
        .prefix("mnt-")
        .tempdir_in(scratch)
        .map_err(|source| MountError::MountPoint {
            dir: scratch.to_owned(),
            source,
        })?;
    nix::mount::mount(
        Some(dev.path.as_path()),
        point.path(),
        Some("ext4"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )
    .map_err(|source| MountError::Mount {
        path: image.to_owned(),
        source,
    })?;
    // The mount holds the device now; dropping our handle lets autoclear detach it at unmount.
    drop(dev);
    let result = work(point.path());
    nix::mount::umount2(point.path(), MntFlags::empty()).map_err(|source| MountError::Unmount {
        path: image.to_owned(),
        source,
    })?;
    Ok(result)
}
