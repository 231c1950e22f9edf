//! `store.volume.list`: every VM's volumes (or one VM's), by VM id.

use std::collections::HashMap;
use std::sync::Arc;

use banger_proto::ApiError;
use banger_proto::store::{VolumeListReply, VolumeListRequest};

use crate::state::{Stord, blocking, chain, volume_set};

/// Handles one request.
pub async fn handle(st: Arc<Stord>, req: VolumeListRequest) -> Result<VolumeListReply, ApiError> {
    blocking("listing volumes", move || {
        let internal = |e: crate::db::DbError| ApiError::internal(chain(&e));
        let images: HashMap<_, _> = st
            .db
            .images()
            .map_err(internal)?
            .into_iter()
            .map(|i| (i.info.name.clone(), i))
            .collect();
        let volumes = st
            .db
            .volumes()
            .map_err(internal)?
            .into_iter()
            .filter(|v| req.vm_id.as_ref().is_none_or(|id| *id == v.vm_id))
            // The foreign key guarantees the image exists.
            .filter_map(|v| images.get(&v.image).map(|i| volume_set(&v, i)))
            .collect();
        Ok(VolumeListReply { volumes })
    })
    .await
}
