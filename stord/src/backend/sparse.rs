//! The fallback back-end: a sparse copy of the image file.
//!
//! Works on any file system. Only the image's data ranges are copied (SEEK_DATA/SEEK_HOLE), in
//! the kernel where it can (copy_file_range), so a 1 GiB image holding 300 MiB of data costs
//! 300 MiB of reads and writes and 300 MiB of disk. The copy is written under a staging name,
//! synced, then renamed into place, so a crash never leaves a half-copied root that looks done.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use banger_proto::store::BackendKind;

use super::{
    BackendError, ROOT_FILE, Root, RootBackend, RootSpec, remove_file_retrying, staging_path,
};
use crate::retry::Backoff;

/// Copies the image (holes preserved).
#[derive(Debug, Clone, Copy, Default)]
pub struct SparseCopy;

/// Permissions of a VM root file: only root (the VMM runs as root) may read or write it.
pub const ROOT_MODE: u32 = 0o600;

/// Writes `dst` by `fill`ing a staging file, syncing and renaming it; the staging file is
/// removed on failure.
pub(crate) fn write_atomically(
    dst: &Path,
    fill: impl FnOnce(&File) -> Result<(), BackendError>,
) -> Result<(), BackendError> {
    let staging = staging_path(dst);
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(ROOT_MODE)
            .open(&staging)
            .map_err(|e| BackendError::io("creating", &staging, e))?;
        fill(&file)?;
        file.sync_all()
            .map_err(|e| BackendError::io("syncing", &staging, e))?;
        std::fs::rename(&staging, dst).map_err(|e| BackendError::io("renaming into place", dst, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    result
}

/// The sparse copy itself, shared with the reflink back-end's fallback.
pub(crate) fn copy_image(image: &Path, dst: &Path) -> Result<(), BackendError> {
    let src = File::open(image).map_err(|e| BackendError::io("opening the image", image, e))?;
    write_atomically(dst, |out| {
        crate::sys::files::sparse_copy(&src, out)
            .map(|_| ())
            .map_err(|e| BackendError::io("copying the image to", dst, e))
    })
}

impl RootBackend for SparseCopy {
    fn kind(&self) -> BackendKind {
        BackendKind::SparseCopy
    }

    fn create(&self, spec: &RootSpec<'_>) -> Result<Root, BackendError> {
        let path = spec.dir.join(ROOT_FILE);
        if !path.exists() {
            copy_image(spec.image_rootfs, &path)?;
        }
        Ok(Root {
            path,
            backend: BackendKind::SparseCopy,
        })
    }

    fn remove(&self, spec: &RootSpec<'_>, policy: Backoff) -> Result<u32, BackendError> {
        let _ = std::fs::remove_file(staging_path(&spec.dir.join(ROOT_FILE)));
        remove_file_retrying(&spec.dir.join(ROOT_FILE), policy)
    }
}
