//! `store.capabilities`: which back-end new roots use, which others this host supports and why
//! the rest are not, and the free space of the state directory.

use std::sync::Arc;

use banger_proto::ApiError;
use banger_proto::store::{Capabilities, CapabilitiesRequest};

use crate::state::{Stord, blocking};

/// Handles one request.
pub async fn handle(st: Arc<Stord>, _req: CapabilitiesRequest) -> Result<Capabilities, ApiError> {
    blocking("reporting capabilities", move || {
        let free_bytes = crate::sys::files::free_bytes(&st.dirs.volumes).map_err(|e| {
            ApiError::internal(format!(
                "reading the free space of {}: {e}",
                st.dirs.volumes.display()
            ))
        })?;
        Ok(Capabilities {
            backend: st.backends.active().kind().to_string(),
            supported: st
                .backends
                .supported()
                .iter()
                .map(ToString::to_string)
                .collect(),
            unsupported: st
                .backends
                .unsupported
                .iter()
                .map(|(k, why)| (k.to_string(), why.clone()))
                .collect(),
            state_dir: st.dirs.root.display().to_string(),
            free_bytes,
        })
    })
    .await
}
