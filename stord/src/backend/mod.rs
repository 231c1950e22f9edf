//! Per-VM writable roots: one trait, three back-ends.
//!
//! A VM's root is a copy-on-write view of its image's root filesystem that the VM may change
//! without touching the image or another VM. Which back-end makes it is chosen once at start-up
//! ([`select`]), by capability or by the `[stord] backend` setting:
//!
//! | back-end | root is | create cost | needs |
//! | --- | --- | --- | --- |
//! | [`dm::DmSnapshot`] | `/dev/dm-N`: a persistent dm snapshot over two loop devices | O(1) | device-mapper, loop devices |
//! | [`reflink::Reflink`] | a file sharing the image's extents (FICLONE) | O(1) | btrfs/xfs state dir, image on the same file system |
//! | [`sparse::SparseCopy`] | a file copy of the image, holes preserved | O(data) | nothing |
//!
//! Each volume remembers the back-end that made it, so a volume made before a configuration
//! change is still removed by the right one.

pub mod dm;
pub mod reflink;
pub mod sparse;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_proto::VmId;
use banger_proto::store::BackendKind;

use crate::retry::{Attempted, Backoff};

/// The file name of a file-backed root inside a VM's volume directory.
pub const ROOT_FILE: &str = "root.ext4";
/// Suffix of files being written; a file with it is never in use and may be removed.
pub const STAGING_SUFFIX: &str = ".staging";

/// What a back-end needs to know about one VM's root.
#[derive(Debug, Clone, Copy)]
pub struct RootSpec<'a> {
    /// The VM.
    pub vm: &'a VmId,
    /// The image's root filesystem (never written).
    pub image_rootfs: &'a Path,
    /// The VM's volume directory (created by the caller).
    pub dir: &'a Path,
}

/// A root that exists and can be booted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    /// What the guest boots as its root drive.
    pub path: PathBuf,
    /// Which back-end made it (a reflink back-end falls back to a sparse copy when the image
    /// lives on another file system).
    pub backend: BackendKind,
}

/// Why a root could not be made or removed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A file operation failed.
    #[error("{step} {path}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A loop or dm operation failed.
    #[error(transparent)]
    Device(#[from] dm::DevError),
    /// Removal kept failing with a transient error.
    #[error("gave up after {attempts} attempts")]
    GaveUp {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        #[source]
        last: Box<BackendError>,
    },
    /// The back-end cannot be used on this host.
    #[error("the {0} back-end is not available on this host")]
    Unavailable(BackendKind),
}

impl BackendError {
    /// Whether retrying may help (the kernel said busy).
    pub fn is_busy(&self) -> bool {
        match self {
            Self::Io { source, .. } => source.raw_os_error() == Some(libc::EBUSY),
            Self::Device(d) => d.is_busy(),
            Self::GaveUp { .. } | Self::Unavailable(_) => false,
        }
    }

    pub(crate) fn io(step: &'static str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            step,
            path: path.to_owned(),
            source,
        }
    }
}

/// Makes and removes VM roots.
pub trait RootBackend: Send + Sync + std::fmt::Debug {
    /// Which back-end this is.
    fn kind(&self) -> BackendKind;

    /// Makes the VM's root, or returns (re-activating it if needed) the one that exists.
    /// Idempotent; a failure leaves nothing behind.
    fn create(&self, spec: &RootSpec<'_>) -> Result<Root, BackendError>;

    /// Removes the VM's root and every device behind it, retrying busy errors per `policy`.
    /// Idempotent. Returns the attempts it took.
    fn remove(&self, spec: &RootSpec<'_>, policy: Backoff) -> Result<u32, BackendError>;
}

/// Removes `path` if it exists, retrying busy errors per `policy`.
pub fn remove_file_retrying(path: &Path, policy: Backoff) -> Result<u32, BackendError> {
    let Attempted { result, attempts } = crate::retry::retry(
        policy,
        |e: &io::Error| e.raw_os_error() == Some(libc::EBUSY),
        || match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        },
    );
    match result {
        Ok(()) => Ok(attempts),
        Err(e) if attempts > 1 => Err(BackendError::GaveUp {
            attempts,
            last: Box::new(BackendError::io("removing", path, e)),
        }),
        Err(e) => Err(BackendError::io("removing", path, e)),
    }
}

/// The staging name of `path` (`root.ext4` -> `root.ext4.staging`).
pub fn staging_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(STAGING_SUFFIX);
    PathBuf::from(s)
}

/// The back-ends of this host: the one new roots use, and every one that can remove an old
/// root.
#[derive(Debug, Clone)]
pub struct Backends {
    active: Arc<dyn RootBackend>,
    sparse: Arc<sparse::SparseCopy>,
    reflink: Arc<reflink::Reflink>,
    dm: Option<Arc<dm::DmSnapshot>>,
    /// Why each unavailable back-end is unavailable.
    pub unsupported: Vec<(BackendKind, String)>,
}

impl Backends {
    /// The back-end new roots use.
    pub fn active(&self) -> &Arc<dyn RootBackend> {
        &self.active
    }

    /// The back-end that made a root of kind `kind`, to remove it.
    pub fn for_kind(&self, kind: BackendKind) -> Result<Arc<dyn RootBackend>, BackendError> {
        match kind {
            BackendKind::SparseCopy => Ok(self.sparse.clone()),
            BackendKind::Reflink => Ok(self.reflink.clone()),
            BackendKind::DmSnapshot => match &self.dm {
                Some(d) => Ok(d.clone()),
                None => Err(BackendError::Unavailable(kind)),
            },
        }
    }

    /// The dm back-end, when this host has device-mapper.
    pub fn dm(&self) -> Option<&Arc<dm::DmSnapshot>> {
        self.dm.as_ref()
    }

    /// Every supported back-end, in order of preference.
    pub fn supported(&self) -> Vec<BackendKind> {
        BackendKind::ALL
            .iter()
            .copied()
            .filter(|k| !self.unsupported.iter().any(|(u, _)| u == k))
            .collect()
    }
}

/// Why no back-end could be chosen.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// The configured back-end cannot work here.
    #[error("the configured storage back-end {kind} cannot be used here: {reason}")]
    NotSupported {
        /// The back-end.
        kind: BackendKind,
        /// Why.
        reason: String,
    },
}

/// What `[stord] backend` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The best this host supports: dm-snapshot, then reflink, then sparse-copy.
    #[default]
    Auto,
    /// Exactly this one (start-up fails when it cannot work).
    Fixed(BackendKind),
}

/// Probes the host and picks the back-end. `volumes` is the directory roots are made in (the
/// reflink probe clones a file there); `devices` is the kernel boundary, whose
/// [`dm::BlockDevices::dm_unavailable`] says whether device-mapper can be used.
pub fn select(
    choice: BackendChoice,
    volumes: &Path,
    state_tag: &str,
    devices: Arc<dyn dm::BlockDevices>,
) -> Result<Backends, SelectError> {
    let mut unsupported = Vec::new();
    let sparse = Arc::new(sparse::SparseCopy);
    let reflink = Arc::new(reflink::Reflink);
    let dm = match devices.dm_unavailable() {
        None => Some(Arc::new(dm::DmSnapshot::new(devices, state_tag.to_owned()))),
        Some(why) => {
            unsupported.push((BackendKind::DmSnapshot, why));
            None
        }
    };
    let reflink_ok = match reflink::probe(volumes) {
        Ok(()) => true,
        Err(why) => {
            unsupported.push((BackendKind::Reflink, why));
            false
        }
    };
    let active: Arc<dyn RootBackend> = match choice {
        BackendChoice::Auto => match &dm {
            Some(d) => d.clone(),
            None if reflink_ok => reflink.clone(),
            None => sparse.clone(),
        },
        BackendChoice::Fixed(kind) => {
            if let Some((_, reason)) = unsupported.iter().find(|(k, _)| *k == kind) {
                return Err(SelectError::NotSupported {
                    kind,
                    reason: reason.clone(),
                });
            }
            match kind {
                BackendKind::DmSnapshot => match &dm {
                    Some(d) => d.clone(),
                    None => {
                        return Err(SelectError::NotSupported {
                            kind,
                            reason: "device-mapper is not available".into(),
                        });
                    }
                },
                BackendKind::Reflink => reflink.clone(),
                BackendKind::SparseCopy => sparse.clone(),
            }
        }
    };
    Ok(Backends {
        active,
        sparse,
        reflink,
        dm,
        unsupported,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_dm(why: &str) -> Arc<dyn dm::BlockDevices> {
        let fake = dm::fake::FakeDevices::default();
        fake.state().dm_unavailable = Some(why.to_owned());
        Arc::new(fake)
    }

    #[test]
    fn auto_prefers_dm_when_the_kernel_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let b = select(
            BackendChoice::Auto,
            dir.path(),
            "t",
            Arc::new(dm::fake::FakeDevices::default()),
        )
        .unwrap();
        assert_eq!(b.active().kind(), BackendKind::DmSnapshot);
        assert!(b.for_kind(BackendKind::DmSnapshot).is_ok());
    }

    #[test]
    fn auto_falls_back_to_sparse_copy_without_dm_or_reflink() {
        let dir = tempfile::tempdir().unwrap();
        let b = select(BackendChoice::Auto, dir.path(), "t", no_dm("no dm here")).unwrap();
        // The test's temp dir may or may not support reflinks; dm is never chosen.
        assert_ne!(b.active().kind(), BackendKind::DmSnapshot);
        assert!(
            b.unsupported
                .iter()
                .any(|(k, why)| *k == BackendKind::DmSnapshot && why == "no dm here")
        );
        assert!(b.supported().contains(&BackendKind::SparseCopy));
        assert!(b.for_kind(BackendKind::DmSnapshot).is_err());
    }

    #[test]
    fn a_configured_backend_that_cannot_work_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let err = select(
            BackendChoice::Fixed(BackendKind::DmSnapshot),
            dir.path(),
            "t",
            no_dm("/dev/mapper/control is missing"),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("/dev/mapper/control is missing"),
            "{err}"
        );
        let b = select(
            BackendChoice::Fixed(BackendKind::SparseCopy),
            dir.path(),
            "t",
            no_dm("no dm"),
        )
        .unwrap();
        assert_eq!(b.active().kind(), BackendKind::SparseCopy);
    }

    /// A real EBUSY (unlinking a file something is mounted on) is transient: removal retries,
    /// and succeeds once the holder lets go.
    #[test]
    fn a_real_busy_unlink_is_retried_until_the_holder_lets_go() {
        if !banger_testkit::require_root() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let (target, src) = (dir.path().join("root.ext4"), dir.path().join("src"));
        std::fs::write(&target, b"root").unwrap();
        std::fs::write(&src, b"holder").unwrap();
        let mount = |args: &[&std::ffi::OsStr]| {
            assert!(
                std::process::Command::new(args[0])
                    .args(&args[1..])
                    .status()
                    .unwrap()
                    .success()
            );
        };
        mount(&[
            "mount".as_ref(),
            "--bind".as_ref(),
            src.as_os_str(),
            target.as_os_str(),
        ]);
        let policy = Backoff {
            attempts: 10,
            initial: std::time::Duration::from_millis(1),
            max: std::time::Duration::from_millis(5),
        };
        let mut seen = Vec::new();
        let out = crate::retry::retry(
            policy,
            |e: &io::Error| e.raw_os_error() == Some(libc::EBUSY),
            || {
                if seen.len() == 3 {
                    mount(&["umount".as_ref(), target.as_os_str()]);
                }
                let r = std::fs::remove_file(&target);
                seen.push(r.as_ref().err().and_then(io::Error::raw_os_error));
                r
            },
        );
        if out.result.is_err() {
            let _ = std::process::Command::new("umount").arg(&target).status();
        }
        assert!(out.result.is_ok(), "{:?}", out.result);
        assert_eq!(out.attempts, 4);
        assert_eq!(
            seen,
            vec![Some(libc::EBUSY); 3]
                .into_iter()
                .chain([None])
                .collect::<Vec<_>>()
        );
        assert!(!target.exists());
    }

    #[test]
    fn staging_names_get_a_suffix() {
        assert_eq!(
            staging_path(Path::new("/v/root.ext4")),
            PathBuf::from("/v/root.ext4.staging")
        );
    }
}
