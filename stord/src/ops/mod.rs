//! One file per bus operation, each the same shape: validate (the request types already hold
//! validated names), act on a blocking thread under the VM's lock where one is involved, reply.
//! [`register`] serves each as its operation of [`banger_proto::op::store`], subject
//! `<p>.host.<host>.store.<op>`.

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
use banger_proto::op::store;

use crate::state::Stord;

/// Serves every operation of [`banger_proto::op::store`] on `host`.
pub async fn register(
    host: &mut ServiceHost,
    st: &Arc<Stord>,
    id: &HostId,
) -> Result<(), BusError> {
    host.serve(store::ImageList, id, st.clone(), image_list::handle)
        .await?;
    host.serve(store::ImageShow, id, st.clone(), image_show::handle)
        .await?;
    host.serve(store::ImageRegister, id, st.clone(), image_register::handle)
        .await?;
    host.serve(store::ImageRemove, id, st.clone(), image_remove::handle)
        .await?;
    host.serve(store::VolumeCreate, id, st.clone(), volume_create::handle)
        .await?;
    host.serve(store::VolumeDelete, id, st.clone(), volume_delete::handle)
        .await?;
    host.serve(store::VolumeList, id, st.clone(), volume_list::handle)
        .await?;
    host.serve(store::VolumeResize, id, st.clone(), volume_resize::handle)
        .await?;
    host.serve(store::Capabilities, id, st.clone(), capabilities::handle)
        .await?;
    host.check_serves(store::ALL)
}
