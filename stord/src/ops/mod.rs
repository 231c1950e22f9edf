//! One file per bus operation, each the same shape: validate (the request types already hold
//! validated names), act on a blocking thread under the VM's lock where one is involved, reply.
//! [`register`] binds each to its subject `<p>.host.<host>.store.<op>`.

pub mod capabilities;
pub mod image_list;
pub mod image_register;
pub mod image_remove;
pub mod image_show;
pub mod volume_create;
pub mod volume_delete;
pub mod volume_list;
pub mod volume_resize;

use std::sync::Arc;

use banger_bus::BusError;
use banger_bus::service::ServiceHost;
use banger_proto::HostId;
use banger_proto::subject::StoreOp;

use crate::state::Stord;

/// Adds every store endpoint to `host`.
pub async fn register(
    host: &mut ServiceHost,
    st: &Arc<Stord>,
    id: &HostId,
) -> Result<(), BusError> {
    let subjects = host.bus().subjects().clone();
    let subject = |op: StoreOp| subjects.host_store(id, op);
    macro_rules! bind {
        ($op:expr, $module:ident) => {{
            let st = st.clone();
            host.endpoint($op.as_str(), subject($op), move |req| {
                $module::handle(st.clone(), req)
            })
            .await?;
        }};
    }
    bind!(StoreOp::ImageList, image_list);
    bind!(StoreOp::ImageShow, image_show);
    bind!(StoreOp::ImageRegister, image_register);
    bind!(StoreOp::ImageRemove, image_remove);
    bind!(StoreOp::VolumeCreate, volume_create);
    bind!(StoreOp::VolumeDelete, volume_delete);
    bind!(StoreOp::VolumeList, volume_list);
    bind!(StoreOp::VolumeResize, volume_resize);
    bind!(StoreOp::Capabilities, capabilities);
    Ok(())
}
