//! `store.image.show`: one image.

use std::sync::Arc;

use banger_proto::ApiError;
use banger_proto::store::{ImageInfo, ImageRefRequest};

use crate::state::{Stord, blocking, chain};

/// Handles one request.
pub async fn handle(st: Arc<Stord>, req: ImageRefRequest) -> Result<ImageInfo, ApiError> {
    blocking("showing an image", move || {
        st.db
            .image(&req.name)
            .map_err(|e| ApiError::internal(chain(&e)))?
            .map(|row| row.info)
            .ok_or_else(|| not_registered(&req.name))
    })
    .await
}

/// The error for an image name nobody registered.
pub fn not_registered(name: &banger_proto::ImageName) -> ApiError {
    ApiError::not_found(format!(
        "no image named {name} is registered on this host (see `banger image list`)"
    ))
}
