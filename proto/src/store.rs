//! stord's requests and replies: images, volumes, capabilities.
//!
//! | subject (`<p>.host.<host>.store.`...) | request | reply |
//! | --- | --- | --- |
//! | `image.list` | [`ImageListRequest`] | [`ImageListReply`] |
//! | `image.show` | [`ImageRefRequest`] | [`ImageInfo`] |
//! | `image.register` | [`RegisterImageRequest`] | [`ImageInfo`] |
//! | `image.remove` | [`ImageRefRequest`] | [`ImageRemoveReply`] (`conflict` while a VM uses it) |
//! | `volume.create` | [`VolumeCreateRequest`] | [`VolumeSet`] (the existing set when it exists) |
//! | `volume.delete` | [`VolumeDeleteRequest`] | [`VolumeDeleteReply`] (idempotent) |
//! | `volume.list` | [`VolumeListRequest`] | [`VolumeListReply`] |
//! | `volume.resize` | [`VolumeResizeRequest`] | [`VolumeSet`] (grow only) |
//! | `capabilities` | [`CapabilitiesRequest`] | [`Capabilities`] |

use std::fmt;
use std::str::FromStr;

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

/// `store.image.remove` reply. Removing an image forgets the registration; the registered files
/// are the operator's and are never deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRemoveReply {
    /// The image that was removed.
    pub name: ImageName,
}

/// How a VM's writable root is made: the values of [`VolumeSet::backend`] and
/// [`Capabilities::backend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// A device-mapper persistent snapshot over loop devices: O(1) create; the root is a block
    /// device (`/dev/dm-N`).
    DmSnapshot,
    /// A reflink clone (FICLONE) of the image file on btrfs or xfs: O(1) create.
    Reflink,
    /// A sparse copy of the image file (holes preserved): works everywhere, costs a copy.
    SparseCopy,
}

impl BackendKind {
    /// Every back-end, in order of preference.
    pub const ALL: &'static [BackendKind] = &[Self::DmSnapshot, Self::Reflink, Self::SparseCopy];

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::DmSnapshot => "dm-snapshot",
            Self::Reflink => "reflink",
            Self::SparseCopy => "sparse-copy",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown back-end name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown storage back-end {0:?}: expected dm-snapshot, reflink or sparse-copy")]
pub struct UnknownBackend(pub String);

impl FromStr for BackendKind {
    type Err = UnknownBackend;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownBackend(s.to_owned()))
    }
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
    /// Back-end that made the root: a [`BackendKind`] wire name.
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
pub struct VolumeListRequest {
    /// Only this VM's volumes; every VM's when omitted.
    #[serde(default)]
    pub vm_id: Option<VmId>,
}

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
    /// The copy-on-write back-end new roots use: a [`BackendKind`] wire name.
    pub backend: String,
    /// Back-ends this host supports.
    pub supported: Vec<String>,
    /// Why each unsupported back-end is not available: `(back-end, reason)` pairs.
    #[serde(default)]
    pub unsupported: Vec<(String, String)>,
    /// State directory.
    pub state_dir: String,
    /// Free bytes in the state directory.
    pub free_bytes: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_names_round_trip() {
        for k in BackendKind::ALL {
            assert_eq!(k.as_str().parse::<BackendKind>().unwrap(), *k);
            assert_eq!(serde_json::to_string(k).unwrap(), format!("\"{k}\""));
        }
        assert!("zfs".parse::<BackendKind>().is_err());
    }

    #[test]
    fn requests_reject_unknown_fields_and_bad_names() {
        let ok: VolumeListRequest = serde_json::from_str("{}").unwrap();
        assert_eq!(ok.vm_id, None);
        assert!(serde_json::from_str::<VolumeListRequest>(r#"{"vm":"x"}"#).is_err());
        let bad = r#"{"name":"../etc","kernel":"/k","rootfs":"/r"}"#;
        assert!(serde_json::from_str::<RegisterImageRequest>(bad).is_err());
        let neg = r#"{"vm_id":"0123456789abcdef0123456789abcdef","disk_mib":0}"#;
        assert!(serde_json::from_str::<VolumeResizeRequest>(neg).is_err());
    }
}
