//! stord's operations, one stord per host.

use crate::names::HostId;
use crate::service::STORD;
use crate::store::{
    CapabilitiesRequest, ImageInfo, ImageListReply, ImageListRequest, ImageRefRequest,
    ImageRemoveReply, RegisterImageRequest, VolumeCreateRequest, VolumeDeleteReply,
    VolumeDeleteRequest, VolumeListReply, VolumeListRequest, VolumeResizeRequest, VolumeSet,
};

super::operations! {
    service: STORD;
    module: "store";
    /// List images.
    ImageList { at: HostId, subject: "store.image.list", endpoint: "image.list",
        delivery: Queue, request: ImageListRequest, reply: ImageListReply,
        errors: [InvalidArgument, Internal] }
    /// Show one image (`not_found` when there is none).
    ImageShow { at: HostId, subject: "store.image.show", endpoint: "image.show",
        delivery: Queue, request: ImageRefRequest, reply: ImageInfo,
        errors: [NotFound, InvalidArgument, Internal] }
    /// Register an image.
    ImageRegister { at: HostId, subject: "store.image.register", endpoint: "image.register",
        delivery: Queue, request: RegisterImageRequest, reply: ImageInfo,
        errors: [NotFound, InvalidArgument, Conflict, Internal] }
    /// Remove an image (`conflict` while a VM uses it).
    ImageRemove { at: HostId, subject: "store.image.remove", endpoint: "image.remove",
        delivery: Queue, request: ImageRefRequest, reply: ImageRemoveReply,
        errors: [NotFound, InvalidArgument, Conflict, Internal] }
    /// Create (or return the existing) root and work disk of a VM.
    VolumeCreate { at: HostId, subject: "store.volume.create", endpoint: "volume.create",
        delivery: Queue, request: VolumeCreateRequest, reply: VolumeSet,
        errors: [NotFound, InvalidArgument, Conflict, Exhausted, Internal] }
    /// Delete a VM's volumes (idempotent).
    VolumeDelete { at: HostId, subject: "store.volume.delete", endpoint: "volume.delete",
        delivery: Queue, request: VolumeDeleteRequest, reply: VolumeDeleteReply,
        errors: [InvalidArgument, Unavailable, Internal] }
    /// List volumes.
    VolumeList { at: HostId, subject: "store.volume.list", endpoint: "volume.list",
        delivery: Queue, request: VolumeListRequest, reply: VolumeListReply,
        errors: [InvalidArgument, Internal] }
    /// Grow a VM's work disk.
    VolumeResize { at: HostId, subject: "store.volume.resize", endpoint: "volume.resize",
        delivery: Queue, request: VolumeResizeRequest, reply: VolumeSet,
        errors: [NotFound, InvalidArgument, Internal] }
    /// Which copy-on-write back-end is in use, free space.
    Capabilities { at: HostId, subject: "store.capabilities", endpoint: "capabilities",
        delivery: Queue, request: CapabilitiesRequest, reply: crate::store::Capabilities,
        errors: [InvalidArgument, Internal] }
}
