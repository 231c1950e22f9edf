//! stord's shared state: where its files live, the registry, the back-ends, per-VM locks, and
//! the conversion of stored rows into wire types.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use banger_proto::store::{BackendKind, VolumeSet};
use banger_proto::{ApiError, VmId};
use tokio::sync::OwnedMutexGuard;

use crate::backend::dm::BlockDevices;
use crate::backend::{Backends, RootSpec, SelectError};
use crate::config::StordConfig;
use crate::db::{Db, DbError, ImageRow, VolumeRow};
use crate::template::Templates;

/// Why stord could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A state directory could not be made or resolved.
    #[error("{step} {path}")]
    Dir {
        /// What was being done.
        step: &'static str,
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The registry could not be opened.
    #[error(transparent)]
    Db(#[from] DbError),
    /// No usable back-end.
    #[error(transparent)]
    Backend(#[from] SelectError),
    /// Start-up work panicked.
    #[error("start-up failed unexpectedly: {0}")]
    Panicked(String),
}

/// Files of one stord: `<state_dir>/stord/`.
#[derive(Debug, Clone)]
pub struct Dirs {
    /// The service's state directory (canonical).
    pub root: PathBuf,
    /// `volumes/<vm id>/`: each VM's root (or exception store) and work disk.
    pub volumes: PathBuf,
    /// `scratch/`: temporary files and mount points; emptied at start-up.
    pub scratch: PathBuf,
    /// `templates/`: pre-formatted work disks that new work disks are cloned from.
    pub templates: PathBuf,
    /// The registry.
    pub db: PathBuf,
}

impl Dirs {
    /// The layout under `root` (which must be canonical).
    pub fn new(root: PathBuf) -> Self {
        Self {
            volumes: root.join("volumes"),
            scratch: root.join("scratch"),
            templates: root.join("templates"),
            db: root.join("stord.db"),
            root,
        }
    }

    /// One VM's volume directory.
    pub fn vm_dir(&self, vm: &VmId) -> PathBuf {
        self.volumes.join(vm.as_str())
    }

    /// The short tag that names this stord's devices: a hash of its state directory.
    pub fn state_tag(&self) -> String {
        format!(
            "{:08x}",
            crate::sys::files::fnv1a32(self.root.as_os_str().as_encoded_bytes())
        )
    }
}

/// One lock per VM: operations on the same VM run one at a time, different VMs in parallel.
#[derive(Debug, Default)]
pub struct VmLocks {
    locks: Mutex<HashMap<VmId, Arc<tokio::sync::Mutex<()>>>>,
}

impl VmLocks {
    /// Waits for `vm`'s lock.
    pub async fn lock(&self, vm: &VmId) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
            // Forget locks nobody holds or waits for, so the map does not grow forever.
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(vm.clone()).or_default().clone()
        };
        lock.lock_owned().await
    }
}

/// Everything the operations share.
#[derive(Debug)]
pub struct Stord {
    /// Files.
    pub dirs: Dirs,
    /// Registry.
    pub db: Db,
    /// Root back-ends.
    pub backends: Backends,
    /// Loop and dm access (for reconciliation).
    pub devices: Arc<dyn BlockDevices>,
    /// `[stord]` settings.
    pub config: StordConfig,
    /// Per-VM locks.
    pub locks: VmLocks,
    /// Device name tag of this state directory.
    pub state_tag: String,
    /// Work-disk templates.
    pub templates: Templates,
}

/// Creates `path` (and its parents) readable by root only, if it does not exist.
fn make_private_dir(path: &Path) -> Result<(), StartError> {
    banger_bus::private::create_dir_all(path).map_err(|source| StartError::Dir {
        step: "creating",
        path: path.to_owned(),
        source,
    })
}

impl Stord {
    /// Opens stord's state under `root` (created if needed): canonicalises it, empties the
    /// scratch directory, opens the registry and chooses the back-end with `devices` as the
    /// kernel boundary. Blocks.
    pub fn open(
        root: PathBuf,
        config: StordConfig,
        devices: Arc<dyn BlockDevices>,
    ) -> Result<Self, StartError> {
        make_private_dir(&root)?;
        // Canonical, so "is this path inside the state dir" is a plain prefix test.
        let root = std::fs::canonicalize(&root).map_err(|source| StartError::Dir {
            step: "resolving",
            path: root.clone(),
            source,
        })?;
        let dirs = Dirs::new(root);
        make_private_dir(&dirs.volumes)?;
        // Scratch holds only temporary files and mount points of private namespaces; whatever
        // is there is debris of an earlier run.
        match std::fs::remove_dir_all(&dirs.scratch) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(StartError::Dir {
                    step: "emptying",
                    path: dirs.scratch.clone(),
                    source,
                });
            }
        }
        make_private_dir(&dirs.scratch)?;
        make_private_dir(&dirs.templates)?;
        let db = crate::db::open(&dirs.db)?;
        let state_tag = dirs.state_tag();
        let backends =
            crate::backend::select(config.backend, &dirs.volumes, &state_tag, devices.clone())?;
        let templates = Templates::new(dirs.templates.clone(), dirs.scratch.clone());
        Ok(Self {
            dirs,
            templates,
            db,
            backends,
            devices,
            config,
            locks: VmLocks::default(),
            state_tag,
        })
    }

    /// The root spec of `vm` for an image rootfs.
    pub fn spec<'a>(&'a self, vm: &'a VmId, rootfs: &'a Path, dir: &'a Path) -> RootSpec<'a> {
        RootSpec {
            vm,
            image_rootfs: rootfs,
            dir,
        }
    }

    /// The loop tag used while `vm`'s work disk is mounted for repair.
    pub fn work_tag(&self, vm: &VmId) -> String {
        format!(
            "{}-work",
            crate::backend::dm::DeviceNames::new(&self.state_tag, vm).dm
        )
    }
}

/// The wire view of a volume and its image.
pub fn volume_set(v: &VolumeRow, image: &ImageRow) -> VolumeSet {
    VolumeSet {
        vm_id: v.vm_id.clone(),
        image: v.image.clone(),
        root_path: v.root_path.clone(),
        work_disk_path: v.work_disk_path.clone(),
        disk_mib: v.disk_mib,
        kernel: image.info.kernel.clone(),
        initrd: image.info.initrd.clone(),
        kernel_args: image.info.kernel_args.clone(),
        backend: v.backend.clone(),
    }
}

/// The back-end kind a volume record names.
pub fn backend_of(v: &VolumeRow) -> Result<BackendKind, crate::db::DbError> {
    v.backend
        .parse()
        .map_err(|e: banger_proto::store::UnknownBackend| {
            crate::db::DbError::Corrupt(e.to_string())
        })
}

/// Runs blocking `f` on the blocking pool; a panic becomes an `internal` error.
pub async fn blocking<T, F>(op: &'static str, f: F) -> Result<T, ApiError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
{
    // The request's span goes along, so the spans of the work nest under it in a trace.
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || span.in_scope(f))
        .await
        .map_err(|e| ApiError::internal(format!("{op} failed unexpectedly: {e}")))?
}

/// The whole cause chain of an error, as one message.
pub fn chain(e: &dyn std::error::Error) -> String {
    banger_bus::runtime::chain(e)
}
