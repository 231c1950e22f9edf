//! `store.image.remove`: forget an image, refused (`conflict`) while a VM volume uses it. The
//! image's files are the operator's and are left alone.

use std::sync::Arc;

use banger_proto::store::{ImageRefRequest, ImageRemoveReply};
use banger_proto::{ApiError, ErrorCode, ImageName, VmId};

use crate::db::DbError;
use crate::state::{Stord, blocking, chain};

/// Why a removal was refused.
#[derive(Debug, thiserror::Error)]
pub enum RemoveError {
    /// No such image.
    #[error("no image named {0} is registered on this host")]
    NotFound(ImageName),
    /// VMs use it.
    #[error("image {image} is used by {} VM volume(s) ({}); delete those VMs first", .vms.len(), short_ids(.vms))]
    InUse {
        /// The image.
        image: ImageName,
        /// The VMs.
        vms: Vec<VmId>,
    },
    /// The registry failed.
    #[error("removing the image")]
    Db(#[source] DbError),
}

fn short_ids(vms: &[VmId]) -> String {
    vms.iter().map(VmId::short).collect::<Vec<_>>().join(", ")
}

impl From<RemoveError> for ApiError {
    fn from(e: RemoveError) -> Self {
        let code = match &e {
            RemoveError::NotFound(_) => ErrorCode::NotFound,
            RemoveError::InUse { .. } => ErrorCode::Conflict,
            RemoveError::Db(_) => ErrorCode::Internal,
        };
        ApiError::new(code, chain(&e))
    }
}

/// Removes the registration of `name`.
pub fn apply(st: &Stord, name: ImageName) -> Result<ImageRemoveReply, RemoveError> {
    let vms = st.db.volumes_using(&name).map_err(RemoveError::Db)?;
    if !vms.is_empty() {
        return Err(RemoveError::InUse { image: name, vms });
    }
    match st.db.delete_image(&name) {
        Ok(true) => {
            tracing::info!(image = %name, "image removed");
            Ok(ImageRemoveReply { name })
        }
        Ok(false) => Err(RemoveError::NotFound(name)),
        // A volume was created between the check and the delete: the foreign key held.
        Err(DbError::Constraint(_)) => {
            let vms = st.db.volumes_using(&name).map_err(RemoveError::Db)?;
            Err(RemoveError::InUse { image: name, vms })
        }
        Err(e) => Err(RemoveError::Db(e)),
    }
}

/// Handles one request.
pub async fn handle(st: Arc<Stord>, req: ImageRefRequest) -> Result<ImageRemoveReply, ApiError> {
    blocking("removing an image", move || Ok(apply(&st, req.name)?)).await
}
