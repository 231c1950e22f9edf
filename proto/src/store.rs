//! stord's requests and replies: images, volumes, capabilities.

use serde::{Deserialize, Serialize};

use crate::names::{ImageName, MemMib, VmId};

/// A registered image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Name.
    pub name: ImageName,
    /// Kernel (uncompressed vmlinux) path.
    pub kernel: String,
    /// Optional initrd path.
    pub initrd: Option<String>,
    /// Root filesystem (ext4 image) path.
    pub rootfs: String,
    /// Default kernel command line.
    pub kernel_args: String,
    /// Default work disk size in MiB.
    pub default_disk_mib: MemMib,
    /// Size of the root filesystem image, bytes.
    pub rootfs_bytes: u64,
    /// Registration time, milliseconds since the Unix epoch.
    pub created_at_ms: u64,
}

/// `store.image.register`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterImageRequest {
    /// Name.
    pub name: ImageName,
    /// Kernel path on the stord host.
    pub kernel: String,
    /// Optional initrd path.
    #[serde(default)]
    pub initrd: Option<String>,
    /// Root filesystem path.
    pub rootfs: String,
    /// Kernel command line; stord's default when omitted.
    #[serde(default)]
    pub kernel_args: Option<String>,
    /// Default work disk size in MiB.
    #[serde(default)]
    pub default_disk_mib: Option<MemMib>,
}

/// A request naming one image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageRefRequest {
    /// The image.
    pub name: ImageName,
}

/// `store.image.list` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageListRequest {}

/// `store.image.list` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageListReply {
    /// The images.
    pub images: Vec<ImageInfo>,
}

/// `store.volume.create`: create (or return the existing) root and work disk of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeCreateRequest {
    /// The VM.
    pub vm_id: VmId,
    /// The image its root is a copy-on-write of.
    pub image: ImageName,
    /// Work disk size; the image's default when omitted.
    #[serde(default)]
    pub disk_mib: Option<MemMib>,
}

/// The volumes of one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSet {
    /// The VM.
    pub vm_id: VmId,
    /// The image.
    pub image: ImageName,
    /// Block device or file the guest boots as its root drive.
    pub root_path: String,
    /// Work disk image (mounted at `/root` in the guest).
    pub work_disk_path: String,
    /// Work disk size in MiB.
    pub disk_mib: MemMib,
    /// Kernel path.
    pub kernel: String,
    /// Initrd path.
    pub initrd: Option<String>,
    /// Kernel command line of the image.
    pub kernel_args: String,
    /// Back-end that made the root.
    pub backend: String,
}

/// `store.volume.delete`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeDeleteRequest {
    /// The VM.
    pub vm_id: VmId,
}

/// `store.volume.delete` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeDeleteReply {
    /// Whether anything was removed.
    pub removed: bool,
    /// How many attempts removal took (busy retries).
    pub attempts: u32,
}

/// `store.volume.resize`: grow a VM's work disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeResizeRequest {
    /// The VM.
    pub vm_id: VmId,
    /// New size in MiB (must not shrink).
    pub disk_mib: MemMib,
}

/// `store.volume.list` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeListRequest {}

/// `store.volume.list` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeListReply {
    /// Every VM's volumes.
    pub volumes: Vec<VolumeSet>,
}

/// `store.capabilities` request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapabilitiesRequest {}

/// `store.capabilities` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// The copy-on-write back-end in use: `dm-snapshot`, `reflink` or `sparse-copy`.
    pub backend: String,
    /// Back-ends this host supports.
    pub supported: Vec<String>,
    /// Why each unsupported back-end is not available.
    #[serde(default)]
    pub unsupported: Vec<(String, String)>,
    /// State directory.
    pub state_dir: String,
    /// Free bytes in the state directory.
    pub free_bytes: u64,
}
