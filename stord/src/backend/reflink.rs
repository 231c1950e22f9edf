//! The reflink back-end: the VM's root shares the image's extents (FICLONE) and the file system
//! copies a block only when the VM writes it. O(1) on btrfs and xfs (with reflink=1).
//!
//! A clone needs the image on the same file system as the state directory. When it is not
//! (`EXDEV`), or the file system refuses, this back-end makes a sparse copy instead and says so
//! in the volume's `backend`, so the operator sees what each root really cost.

use std::fs::File;
use std::io;
use std::path::Path;

use banger_proto::store::BackendKind;

use super::sparse::{copy_image, write_atomically};
use super::{
    BackendError, ROOT_FILE, Root, RootBackend, RootSpec, remove_file_retrying, staging_path,
};
use crate::retry::Backoff;
use crate::sys::files;

/// Clones the image with FICLONE.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reflink;

/// Whether the file system holding `dir` can clone: clones a small scratch file there.
pub fn probe(dir: &Path) -> Result<(), String> {
    use std::io::Write as _;
    let mut src = tempfile::Builder::new()
        .prefix(".reflink-probe-")
        .tempfile_in(dir)
        .map_err(|e| format!("creating a probe file in {}: {e}", dir.display()))?;
    src.write_all(&[0x5a; 4096])
        .and_then(|()| src.as_file().sync_all())
        .map_err(|e| format!("writing a probe file in {}: {e}", dir.display()))?;
    let dst = tempfile::Builder::new()
        .prefix(".reflink-probe-")
        .tempfile_in(dir)
        .map_err(|e| format!("creating a probe file in {}: {e}", dir.display()))?;
    files::reflink(src.as_file(), dst.as_file()).map_err(|e| {
        format!(
            "the file system of {} cannot clone files (FICLONE: {e}); use btrfs or xfs for the \
             state directory",
            dir.display()
        )
    })
}

/// Whether a FICLONE failure means "cannot clone here" (fall back) rather than a real error.
fn clone_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EXDEV | libc::EOPNOTSUPP | libc::EINVAL | libc::ENOTTY)
    )
}

impl RootBackend for Reflink {
    fn kind(&self) -> BackendKind {
        BackendKind::Reflink
    }

    fn create(&self, spec: &RootSpec<'_>) -> Result<Root, BackendError> {
        let path = spec.dir.join(ROOT_FILE);
        if path.exists() {
            return Ok(Root {
                path,
                backend: BackendKind::Reflink,
            });
        }
        let src = File::open(spec.image_rootfs)
            .map_err(|e| BackendError::io("opening the image", spec.image_rootfs, e))?;
        let mut unsupported = None;
        write_atomically(&path, |dst| match files::reflink(&src, dst) {
            Ok(()) => Ok(()),
            Err(e) if clone_unsupported(&e) => {
                unsupported = Some(e);
                // Fail this attempt so the staging file is removed; the copy follows.
                Err(BackendError::io(
                    "cloning the image to",
                    &path,
                    io::Error::other("fallback"),
                ))
            }
            Err(e) => Err(BackendError::io("cloning the image to", &path, e)),
        })
        .or_else(|err| match &unsupported {
            Some(why) => {
                tracing::info!(
                    vm.id = %spec.vm,
                    image = %spec.image_rootfs.display(),
                    reason = %why,
                    "the image cannot be cloned here; making a sparse copy"
                );
                Ok(())
            }
            None => Err(err),
        })?;
        if unsupported.is_some() {
            copy_image(spec.image_rootfs, &path)?;
            return Ok(Root {
                path,
                backend: BackendKind::SparseCopy,
            });
        }
        Ok(Root {
            path,
            backend: BackendKind::Reflink,
        })
    }

    fn remove(&self, spec: &RootSpec<'_>, policy: Backoff) -> Result<u32, BackendError> {
        let _ = std::fs::remove_file(staging_path(&spec.dir.join(ROOT_FILE)));
        remove_file_retrying(&spec.dir.join(ROOT_FILE), policy)
    }
}
