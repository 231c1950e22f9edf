//! `store.image.register`: check an image's files and record them under a name.
//!
//! Nothing is written unless every check passes; the registered files are referenced in place
//! (never copied, moved or changed).

use std::sync::Arc;

use banger_proto::store::{ImageInfo, RegisterImageRequest};
use banger_proto::{ApiError, ErrorCode};

use crate::config::check_kernel_args;
use crate::db::{DbError, ImageRow};
use crate::image::{FileError, check_file};
use crate::state::{Stord, blocking, chain};

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    /// A file failed its checks.
    #[error(transparent)]
    File(#[from] FileError),
    /// The kernel arguments are unusable.
    #[error("{0}")]
    KernelArgs(String),
    /// The name is taken.
    #[error("an image named {0} is already registered; remove it first or pick another name")]
    Duplicate(String),
    /// The registry failed.
    #[error("recording the image")]
    Db(#[source] DbError),
}

impl From<RegisterError> for ApiError {
    fn from(e: RegisterError) -> Self {
        let code = match &e {
            RegisterError::File(FileError::Missing { .. }) => ErrorCode::NotFound,
            RegisterError::File(_) | RegisterError::KernelArgs(_) => ErrorCode::InvalidArgument,
            RegisterError::Duplicate(_) => ErrorCode::Conflict,
            RegisterError::Db(_) => ErrorCode::Internal,
        };
        ApiError::new(code, chain(&e))
    }
}

/// Checks and records `req`.
pub fn apply(st: &Stord, req: RegisterImageRequest) -> Result<ImageInfo, RegisterError> {
    let state = &st.dirs.root;
    let kernel = check_file("kernel", &req.kernel, state, false)?;
    let initrd = req
        .initrd
        .as_deref()
        .map(|p| check_file("initrd", p, state, false))
        .transpose()?;
    let rootfs = check_file("rootfs", &req.rootfs, state, true)?;
    let kernel_args = req
        .kernel_args
        .unwrap_or_else(|| st.config.default_kernel_args.clone());
    check_kernel_args(&kernel_args).map_err(RegisterError::KernelArgs)?;
    let row = ImageRow {
        info: ImageInfo {
            name: req.name,
            kernel: kernel.path.to_string_lossy().into_owned(),
            initrd: initrd.map(|i| i.path.to_string_lossy().into_owned()),
            rootfs: rootfs.path.to_string_lossy().into_owned(),
            kernel_args,
            default_disk_mib: req.default_disk_mib.unwrap_or(st.config.default_disk_mib),
            rootfs_bytes: rootfs.bytes,
            created_at_ms: banger_bus::now_ms(),
        },
        rootfs_mtime_ns: rootfs.mtime_ns,
    };
    match st.db.insert_image(&row) {
        Ok(()) => {}
        Err(DbError::Duplicate(_)) => {
            return Err(RegisterError::Duplicate(row.info.name.to_string()));
        }
        Err(e) => return Err(RegisterError::Db(e)),
    }
    tracing::info!(image = %row.info.name, rootfs = %row.info.rootfs, "image registered");
    Ok(row.info)
}

/// Handles one request.
pub async fn handle(st: Arc<Stord>, req: RegisterImageRequest) -> Result<ImageInfo, ApiError> {
    blocking("registering an image", move || Ok(apply(&st, req)?)).await
}
