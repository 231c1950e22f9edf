//! `store.image.list`: every registered image, by name.

use std::sync::Arc;

use banger_proto::ApiError;
use banger_proto::store::{ImageListReply, ImageListRequest};

use crate::state::{Stord, blocking, chain};

/// Handles one request.
pub async fn handle(st: Arc<Stord>, _req: ImageListRequest) -> Result<ImageListReply, ApiError> {
    blocking("listing images", move || {
        let images = st
            .db
            .images()
            .map_err(|e| ApiError::internal(chain(&e)))?
            .into_iter()
            .map(|row| row.info)
            .collect();
        Ok(ImageListReply { images })
    })
    .await
}
