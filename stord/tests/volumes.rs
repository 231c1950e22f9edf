//! VM roots and work disks over the bus, per back-end this machine supports: sparse copy on the
//! local file system, reflink on a loop-mounted xfs made by the test, device-mapper where the
//! kernel has it (skipped with the reason otherwise). A file written into one VM's root appears
//! neither in the image nor in another VM's root.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::path::Path;

use banger_proto::op::store;
use banger_proto::store::{
    Capabilities, CapabilitiesRequest, ImageInfo, RegisterImageRequest, VolumeCreateRequest,
    VolumeDeleteReply, VolumeDeleteRequest, VolumeListReply, VolumeListRequest, VolumeSet,
};
use banger_proto::{ErrorCode, ImageName, MemMib, VmId};
use common::{LoopMount, Stack, allocated, make_image, read_ext4, vm_id, write_ext4};

async fn register(s: &Stack, name: &str, files: &common::ImageFiles) -> ImageInfo {
    s.req::<store::ImageRegister>(&RegisterImageRequest {
        name: ImageName::new(name).unwrap(),
        kernel: files.kernel.display().to_string(),
        initrd: None,
        rootfs: files.rootfs.display().to_string(),
        kernel_args: None,
        default_disk_mib: Some(MemMib::new(32).unwrap()),
    })
    .await
    .unwrap()
}

async fn create(s: &Stack, vm: &VmId, image: &str) -> VolumeSet {
    s.req::<store::VolumeCreate>(&VolumeCreateRequest {
        vm_id: vm.clone(),
        image: ImageName::new(image).unwrap(),
        disk_mib: None,
    })
    .await
    .unwrap()
}

async fn delete(s: &Stack, vm: &VmId) -> VolumeDeleteReply {
    s.req::<store::VolumeDelete>(&VolumeDeleteRequest { vm_id: vm.clone() })
        .await
        .unwrap()
}

async fn capabilities(s: &Stack) -> Capabilities {
    s.req::<store::Capabilities>(&CapabilitiesRequest {})
        .await
        .unwrap()
}

/// Two VMs from one image: each root boots the image's files, writes stay private, the work
/// disk is seeded with the image's `/root`, and delete removes everything (idempotently).
async fn roots_are_private_copies(
    s: &Stack,
    image: &Path,
    backend: &str,
) -> (VolumeSet, VolumeSet) {
    let a_id = vm_id();
    let b_id = vm_id();
    let a = create(s, &a_id, "base").await;
    let b = create(s, &b_id, "base").await;
    assert_eq!(a.backend, backend);
    assert_eq!(b.backend, backend);
    assert_eq!(a.disk_mib.get(), 32, "the image's default disk size");
    assert_ne!(a.root_path, b.root_path);
    let (ra, rb) = (Path::new(&a.root_path), Path::new(&b.root_path));
    assert_eq!(read_ext4(ra, "/etc/hostname").as_deref(), Some("image\n"));

    write_ext4(ra, "/etc/marker", "written by VM a");
    assert_eq!(
        read_ext4(ra, "/etc/marker").as_deref(),
        Some("written by VM a")
    );
    assert_eq!(
        read_ext4(image, "/etc/marker"),
        None,
        "the image is untouched"
    );
    assert_eq!(
        read_ext4(rb, "/etc/marker"),
        None,
        "VM b does not see VM a's write"
    );

    let work = Path::new(&a.work_disk_path);
    assert_eq!(
        read_ext4(work, "/.profile").as_deref(),
        Some("export FROM_IMAGE=1\n"),
        "the work disk carries the image's /root at its top"
    );
    assert_eq!(std::fs::metadata(work).unwrap().len(), 32 << 20);
    assert!(allocated(work) < 32 << 20, "the work disk is sparse");

    // Creating again returns the same set and keeps the VM's changes.
    let again = create(s, &a_id, "base").await;
    assert_eq!(again, a);
    assert_eq!(
        read_ext4(ra, "/etc/marker").as_deref(),
        Some("written by VM a")
    );

    let listed: VolumeListReply = s
        .req::<store::VolumeList>(&VolumeListRequest { vm_id: None })
        .await
        .unwrap();
    assert_eq!(listed.volumes.len(), 2);
    let only_b: VolumeListReply = s
        .req::<store::VolumeList>(&VolumeListRequest {
            vm_id: Some(b_id.clone()),
        })
        .await
        .unwrap();
    assert_eq!(only_b.volumes, vec![b.clone()]);
    (a, b)
}

async fn delete_removes_everything(s: &Stack, set: &VolumeSet) {
    let d = delete(s, &set.vm_id).await;
    assert!(d.removed);
    assert_eq!(d.attempts, 1);
    assert!(!Path::new(&set.root_path).exists());
    assert!(!Path::new(&set.work_disk_path).exists());
    assert!(!s.vm_dir(&set.vm_id).exists());
    let d = delete(s, &set.vm_id).await;
    assert!(!d.removed, "deleting twice is a no-op");
}

#[tokio::test]
async fn sparse_copy_roots_are_private_and_keep_holes() {
    let s = Stack::start("backend = 'sparse'").await;
    let files = make_image(&s.dir.path().join("images"), 64);
    register(&s, "base", &files).await;
    assert_eq!(capabilities(&s).await.backend, "sparse-copy");
    let (a, b) = roots_are_private_copies(&s, &files.rootfs, "sparse-copy").await;

    // Holes preserved: the copy allocates about what the image does, not its 64 MiB.
    let root = Path::new(&a.root_path);
    assert_eq!(std::fs::metadata(root).unwrap().len(), 64 << 20);
    let (img, copy) = (allocated(&files.rootfs), allocated(root));
    assert!(
        copy < 16 << 20,
        "the copy allocates {copy} bytes (image: {img})"
    );
    assert!(
        copy <= img + (1 << 20),
        "the copy allocates {copy} bytes, the image {img}"
    );

    delete_removes_everything(&s, &a).await;
    delete_removes_everything(&s, &b).await;
}

#[tokio::test]
async fn reflink_roots_on_a_loop_mounted_xfs() {
    if !banger_testkit::require_root() {
        return;
    }
    if !banger_testkit::have_program("mkfs.xfs") {
        banger_testkit::skip("mkfs.xfs is not installed (apt-get install xfsprogs)");
        return;
    }
    let xfs = LoopMount::xfs();
    // State and image on the same reflink-capable file system.
    let dir = tempfile::tempdir().unwrap();
    let s = Stack::start_at(dir, xfs.point.join("state"), "backend = 'reflink'").await;
    let files = make_image(&xfs.point.join("images"), 64);
    register(&s, "base", &files).await;
    let caps = capabilities(&s).await;
    assert_eq!(caps.backend, "reflink");
    assert!(caps.supported.contains(&"reflink".to_owned()), "{caps:?}");

    let (a, b) = roots_are_private_copies(&s, &files.rootfs, "reflink").await;
    // Shared extents: xfs reports them with FIEMAP's "shared" flag.
    let extents = common::run("filefrag", &["-v", &b.root_path]);
    assert!(
        extents.contains("shared"),
        "the clone shares the image's extents:\n{extents}"
    );

    // An image on another file system cannot be cloned: the root is a sparse copy, and the
    // volume says so.
    let other = make_image(&s.dir.path().join("other"), 16);
    register(&s, "other", &other).await;
    let c = create(&s, &vm_id(), "other").await;
    assert_eq!(c.backend, "sparse-copy");
    assert_eq!(
        read_ext4(Path::new(&c.root_path), "/etc/hostname").as_deref(),
        Some("image\n")
    );

    for set in [&a, &b, &c] {
        delete_removes_everything(&s, set).await;
    }
    drop(s); // stop stord before the file system goes away
    drop(xfs);
}

#[tokio::test]
async fn dm_snapshot_roots() {
    if !Path::new("/dev/mapper/control").exists() {
        banger_testkit::skip(
            "this kernel has no device-mapper (/dev/mapper/control is missing); the dm table \
             and its sequencing are unit-tested in backend::dm",
        );
        return;
    }
    if !banger_testkit::require_root() {
        return;
    }
    let s = Stack::start("backend = 'dm'").await;
    let files = make_image(&s.dir.path().join("images"), 64);
    register(&s, "base", &files).await;
    assert_eq!(capabilities(&s).await.backend, "dm-snapshot");
    let (a, b) = roots_are_private_copies(&s, &files.rootfs, "dm-snapshot").await;
    assert!(a.root_path.starts_with("/dev/"), "{}", a.root_path);
    delete_removes_everything(&s, &a).await;
    delete_removes_everything(&s, &b).await;
}

#[tokio::test]
async fn a_configured_backend_this_host_cannot_use_is_refused_at_start_up() {
    let mut s = Stack::start("backend = 'sparse'").await;
    s.stop_stord();
    if !Path::new("/dev/mapper/control").exists() {
        let err = s.start_expecting_failure("backend = 'dm'");
        assert!(err.contains("dm-snapshot cannot be used here"), "{err}");
        assert!(err.contains("/dev/mapper/control"), "{err}");
    }
    let err = s.start_expecting_failure("backend = 'zfs'");
    assert!(err.contains("unknown storage back-end"), "{err}");
    let err = s.start_expecting_failure("bakend = 'sparse'");
    assert!(err.contains("[stord]"), "{err}");
}

#[tokio::test]
async fn volume_requests_with_bad_input_are_refused() {
    let s = Stack::start("backend = 'sparse'").await;
    let files = make_image(&s.dir.path().join("images"), 16);
    register(&s, "base", &files).await;
    let vm = vm_id();
    let err = s
        .req::<store::VolumeCreate>(&VolumeCreateRequest {
            vm_id: vm.clone(),
            image: ImageName::new("nope").unwrap(),
            disk_mib: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
    assert!(!s.vm_dir(&vm).exists(), "nothing was made");

    for body in [
        serde_json::json!({ "vm_id": "../../etc", "image": "base" }),
        serde_json::json!({ "vm_id": vm.as_str(), "image": "base", "disk_mib": 0 }),
        serde_json::json!({ "vm_id": vm.as_str(), "image": "base", "disk_mib": -1 }),
    ] {
        let err = s.raw::<store::VolumeCreate>(&body).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument, "{body}: {err}");
    }
    let listed: VolumeListReply = s
        .req::<store::VolumeList>(&VolumeListRequest { vm_id: None })
        .await
        .unwrap();
    assert!(listed.volumes.is_empty());

    // The same VM cannot switch images under its existing volumes.
    let other = make_image(&s.dir.path().join("other"), 16);
    register(&s, "other", &other).await;
    create(&s, &vm, "base").await;
    let err = s
        .req::<store::VolumeCreate>(&VolumeCreateRequest {
            vm_id: vm.clone(),
            image: ImageName::new("other").unwrap(),
            disk_mib: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict, "{err}");

    // A registered rootfs that changed since is refused for new roots.
    std::fs::OpenOptions::new()
        .append(true)
        .open(&other.rootfs)
        .unwrap()
        .set_len(17 << 20)
        .unwrap();
    let err = s
        .req::<store::VolumeCreate>(&VolumeCreateRequest {
            vm_id: vm_id(),
            image: ImageName::new("other").unwrap(),
            disk_mib: None,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Conflict, "{err}");
    assert!(err.message.contains("changed"), "{err}");
}
