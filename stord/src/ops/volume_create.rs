//! `store.volume.create`: make a VM's root and work disk, or return the ones it has.
//!
//! The controller calls this on every start. For a new VM: the root is made by the active
//! back-end, then the work disk (seeded with the image's `/root`), then the record is written;
//! a failure at any step undoes the earlier ones. For a VM that already has volumes the same
//! set is returned after making sure it can boot: a dm root is re-activated (after a reboot),
//! a missing work disk is recreated (with a warning), and a stale nested `/root/root` layout on
//! the work disk is repaired.

use std::path::Path;
use std::sync::Arc;

use banger_proto::store::{VolumeCreateRequest, VolumeSet};
use banger_proto::{ApiError, ErrorCode, ImageName, VmId};

use crate::backend::{BackendError, RootBackend};
use crate::db::{DbError, ImageRow, VolumeRow};
use crate::retry::Backoff;
use crate::state::{Stord, backend_of, blocking, chain, volume_set};
use crate::workdisk::{self, WORK_FILE, WorkDiskError};

/// Why a VM's volumes could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// No such image.
    #[error("no image named {0} is registered on this host (see `banger image list`)")]
    NoImage(ImageName),
    /// The VM has volumes of another image.
    #[error("VM {vm} already has volumes made from image {existing}, not {requested}")]
    OtherImage {
        /// The VM.
        vm: VmId,
        /// Its image.
        existing: ImageName,
        /// The image asked for.
        requested: ImageName,
    },
    /// The image's rootfs changed or vanished since it was registered.
    #[error(
        "the rootfs of image {image} ({path}) changed or disappeared since it was registered; \
         register it again under a new name"
    )]
    ImageChanged {
        /// The image.
        image: ImageName,
        /// Its rootfs.
        path: String,
    },
    /// Not enough space for a copy.
    #[error("{needed} bytes are needed for the root copy but only {free} are free in {dir}")]
    NoSpace {
        /// Bytes needed.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// Where.
        dir: String,
    },
    /// The image was removed while the volumes were being made.
    #[error("image {0} was removed while the volumes were being made")]
    ImageRemoved(ImageName),
    /// A file operation on the VM directory failed.
    #[error("{step} {path}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// On what.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The root could not be made.
    #[error("making the root of VM {vm}")]
    Root {
        /// The VM.
        vm: VmId,
        /// Why.
        #[source]
        source: BackendError,
    },
    /// The work disk could not be made or repaired.
    #[error("preparing the work disk of VM {vm}")]
    WorkDisk {
        /// The VM.
        vm: VmId,
        /// Why.
        #[source]
        source: WorkDiskError,
    },
    /// The registry failed.
    #[error("recording the volumes")]
    Db(#[source] DbError),
}

impl From<CreateError> for ApiError {
    fn from(e: CreateError) -> Self {
        let code = match &e {
            CreateError::NoImage(_) | CreateError::ImageRemoved(_) => ErrorCode::NotFound,
            CreateError::OtherImage { .. } | CreateError::ImageChanged { .. } => {
                ErrorCode::Conflict
            }
            CreateError::NoSpace { .. } => ErrorCode::Exhausted,
            CreateError::Io { .. }
            | CreateError::Root { .. }
            | CreateError::WorkDisk { .. }
            | CreateError::Db(_) => ErrorCode::Internal,
        };
        ApiError::new(code, chain(&e))
    }
}

/// Makes (or returns) `req.vm_id`'s volumes. The caller holds the VM's lock.
pub fn apply(st: &Stord, req: &VolumeCreateRequest) -> Result<VolumeSet, CreateError> {
    let image = st
        .db
        .image(&req.image)
        .map_err(CreateError::Db)?
        .ok_or_else(|| CreateError::NoImage(req.image.clone()))?;
    if let Some(existing) = st.db.volume(&req.vm_id).map_err(CreateError::Db)? {
        if existing.image != req.image {
            return Err(CreateError::OtherImage {
                vm: req.vm_id.clone(),
                existing: existing.image,
                requested: req.image.clone(),
            });
        }
        return prepare_existing(st, existing, &image);
    }
    check_image_unchanged(&image)?;
    let backend = st.backends.active().clone();
    let vm = &req.vm_id;
    let rootfs = Path::new(&image.info.rootfs);
    if backend.kind() == banger_proto::store::BackendKind::SparseCopy {
        check_space_for_copy(st, rootfs)?;
    }
    let disk_mib = req.disk_mib.unwrap_or(image.info.default_disk_mib);
    let dir = st.dirs.vm_dir(vm);
    // A directory without a record is debris of a crash: nothing uses it.
    if dir.exists() {
        tracing::warn!(vm.id = %vm, dir = %dir.display(), "removing leftovers of an earlier attempt");
        remove_leftovers(st, backend.as_ref(), vm, rootfs, &dir);
    }
    std::fs::create_dir_all(&dir).map_err(|source| CreateError::Io {
        step: "creating",
        path: dir.display().to_string(),
        source,
    })?;
    let spec = st.spec(vm, rootfs, &dir);
    let undo = |root_made: bool| {
        if root_made && let Err(e) = backend.remove(&spec, Backoff::REMOVAL) {
            tracing::error!(vm.id = %vm, error = %chain(&e), "undoing a root after a failed create");
        }
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::error!(vm.id = %vm, error = %e, "removing the volume directory after a failed create");
        }
    };
    let root = match tracing::info_span!("volume.root").in_scope(|| backend.create(&spec)) {
        Ok(r) => r,
        Err(source) => {
            undo(false);
            return Err(CreateError::Root {
                vm: vm.clone(),
                source,
            });
        }
    };
    let work = dir.join(WORK_FILE);
    if let Err(source) = tracing::info_span!("volume.work_disk").in_scope(|| {
        st.templates
            .create_work_disk(&work, u64::from(disk_mib.get()), Some(rootfs))
    }) {
        undo(true);
        return Err(CreateError::WorkDisk {
            vm: vm.clone(),
            source,
        });
    }
    let row = VolumeRow {
        vm_id: vm.clone(),
        image: req.image.clone(),
        backend: root.backend.to_string(),
        root_path: root.path.display().to_string(),
        work_disk_path: work.display().to_string(),
        disk_mib,
        created_at_ms: banger_bus::now_ms(),
    };
    if let Err(e) = tracing::info_span!("volume.record").in_scope(|| st.db.insert_volume(&row)) {
        undo(true);
        return Err(match e {
            DbError::Constraint(_) => CreateError::ImageRemoved(req.image.clone()),
            e => CreateError::Db(e),
        });
    }
    tracing::info!(
        vm.id = %vm,
        image = %req.image,
        backend = %row.backend,
        root = %row.root_path,
        disk_mib = disk_mib.get(),
        "volumes created"
    );
    Ok(volume_set(&row, &image))
}

/// Makes sure an existing volume set can boot, and returns it.
fn prepare_existing(
    st: &Stord,
    mut v: VolumeRow,
    image: &ImageRow,
) -> Result<VolumeSet, CreateError> {
    let vm = v.vm_id.clone();
    let rootfs = Path::new(&image.info.rootfs);
    let dir = st.dirs.vm_dir(&vm);
    let kind = backend_of(&v).map_err(CreateError::Db)?;
    let backend = st
        .backends
        .for_kind(kind)
        .map_err(|source| CreateError::Root {
            vm: vm.clone(),
            source,
        })?;
    if kind == banger_proto::store::BackendKind::DmSnapshot {
        // The snapshot reads the image on every boot: it must be the same image.
        check_image_unchanged(image)?;
    }
    std::fs::create_dir_all(&dir).map_err(|source| CreateError::Io {
        step: "creating",
        path: dir.display().to_string(),
        source,
    })?;
    let root = backend
        .create(&st.spec(&vm, rootfs, &dir))
        .map_err(|source| CreateError::Root {
            vm: vm.clone(),
            source,
        })?;
    let root_path = root.path.display().to_string();
    if root_path != v.root_path {
        st.db
            .set_root_path(&vm, &root_path)
            .map_err(CreateError::Db)?;
        v.root_path = root_path;
    }
    let work = Path::new(&v.work_disk_path).to_owned();
    if work.exists() {
        let report = workdisk::repair_nested_home(&work, &st.dirs.scratch, &st.work_tag(&vm))
            .map_err(|source| CreateError::WorkDisk {
                vm: vm.clone(),
                source,
            })?;
        if report.found {
            tracing::info!(
                vm.id = %vm,
                moved = report.moved.len(),
                conflicts = report.conflicts.len(),
                leftovers = ?report.leftovers,
                "repaired a nested /root/root layout on the work disk"
            );
        }
    } else {
        tracing::warn!(vm.id = %vm, path = %work.display(), "the work disk is missing; making a new, empty one");
        st.templates
            .create_work_disk(&work, u64::from(v.disk_mib.get()), Some(rootfs))
            .map_err(|source| CreateError::WorkDisk {
                vm: vm.clone(),
                source,
            })?;
    }
    Ok(volume_set(&v, image))
}

fn check_image_unchanged(image: &ImageRow) -> Result<(), CreateError> {
    let changed = || CreateError::ImageChanged {
        image: image.info.name.clone(),
        path: image.info.rootfs.clone(),
    };
    let (len, mtime) =
        crate::image::mtime_ns(Path::new(&image.info.rootfs)).map_err(|_| changed())?;
    if len != image.info.rootfs_bytes || mtime != image.rootfs_mtime_ns {
        return Err(changed());
    }
    Ok(())
}

fn check_space_for_copy(st: &Stord, rootfs: &Path) -> Result<(), CreateError> {
    let needed = crate::sys::files::allocated_bytes(rootfs).unwrap_or(0);
    let free = crate::sys::files::free_bytes(&st.dirs.volumes).unwrap_or(u64::MAX);
    if needed > free {
        return Err(CreateError::NoSpace {
            needed,
            free,
            dir: st.dirs.volumes.display().to_string(),
        });
    }
    Ok(())
}

fn remove_leftovers(st: &Stord, backend: &dyn RootBackend, vm: &VmId, rootfs: &Path, dir: &Path) {
    if let Err(e) = backend.remove(&st.spec(vm, rootfs, dir), Backoff::REMOVAL) {
        tracing::warn!(vm.id = %vm, error = %chain(&e), "removing a leftover root");
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(vm.id = %vm, error = %e, "removing a leftover volume directory");
    }
}

/// Handles one request.
pub async fn handle(st: Arc<Stord>, req: VolumeCreateRequest) -> Result<VolumeSet, ApiError> {
    let guard = st.locks.lock(&req.vm_id).await;
    blocking("creating volumes", move || {
        let _guard = guard;
        Ok(apply(&st, &req)?)
    })
    .await
}
