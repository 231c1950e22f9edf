//! Work disks and the life around them: kept across root re-creation and restarts, grown on
//! request, a stale nested `/root/root` repaired on the next start, busy removal retried and
//! reported, `deleted` events and start-up reconciliation cleaning what no record explains.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use banger_proto::event::{EventKind, VmEvent};
use banger_proto::op::store;
use banger_proto::store::{
    ImageInfo, RegisterImageRequest, VolumeCreateRequest, VolumeDeleteReply, VolumeDeleteRequest,
    VolumeListReply, VolumeListRequest, VolumeResizeRequest, VolumeSet,
};
use banger_proto::vm::{VmInfo, VmState};
use banger_proto::{CpuCount, ErrorCode, ImageName, MemMib, VmId, VmName};
use common::{BindMount, Stack, debugfs, make_image, mkdir_ext4, read_ext4, vm_id, write_ext4};

async fn stack_with_image() -> (Stack, common::ImageFiles) {
    let s = Stack::start("backend = 'sparse'").await;
    let files = make_image(&s.dir.path().join("images"), 32);
    let _: ImageInfo = s
        .req::<store::ImageRegister>(&RegisterImageRequest {
            name: ImageName::new("base").unwrap(),
            kernel: files.kernel.display().to_string(),
            initrd: None,
            rootfs: files.rootfs.display().to_string(),
            kernel_args: None,
            default_disk_mib: Some(MemMib::new(32).unwrap()),
        })
        .await
        .unwrap();
    (s, files)
}

async fn create(s: &Stack, vm: &VmId) -> VolumeSet {
    s.req::<store::VolumeCreate>(&VolumeCreateRequest {
        vm_id: vm.clone(),
        image: ImageName::new("base").unwrap(),
        disk_mib: None,
    })
    .await
    .unwrap()
}

async fn list(s: &Stack) -> Vec<VolumeSet> {
    let r: VolumeListReply = s
        .req::<store::VolumeList>(&VolumeListRequest { vm_id: None })
        .await
        .unwrap();
    r.volumes
}

#[tokio::test]
async fn the_work_disk_outlives_its_root_and_restarts() {
    let (mut s, _files) = stack_with_image().await;
    let vm = vm_id();
    let set = create(&s, &vm).await;
    let work = Path::new(&set.work_disk_path);
    write_ext4(work, "/notes.txt", "keep me");
    write_ext4(Path::new(&set.root_path), "/etc/marker", "root change");

    // The root is lost (a re-image): the next start makes a fresh one, the work disk stays.
    std::fs::remove_file(&set.root_path).unwrap();
    let again = create(&s, &vm).await;
    assert_eq!(again, set);
    assert_eq!(read_ext4(Path::new(&again.root_path), "/etc/marker"), None);
    assert_eq!(read_ext4(work, "/notes.txt").as_deref(), Some("keep me"));

    // stord restarts (host reboot): same volumes, same contents.
    s.restart_stord().await;
    assert_eq!(list(&s).await, vec![set.clone()]);
    let after = create(&s, &vm).await;
    assert_eq!(after, set);
    assert_eq!(read_ext4(work, "/notes.txt").as_deref(), Some("keep me"));

    let d: VolumeDeleteReply = s
        .req::<store::VolumeDelete>(&VolumeDeleteRequest { vm_id: vm })
        .await
        .unwrap();
    assert!(d.removed);
    assert!(!work.exists(), "delete removes the work disk");
}

#[tokio::test]
async fn the_work_disk_grows_on_request_and_never_shrinks() {
    let (s, _files) = stack_with_image().await;
    let vm = vm_id();
    let set = create(&s, &vm).await;
    let work = Path::new(&set.work_disk_path).to_owned();
    write_ext4(&work, "/data", "before the resize");
    let blocks = |p: &Path| -> u64 {
        let (out, _) = debugfs(p, "stats", false);
        out.lines()
            .find_map(|l| l.strip_prefix("Block count:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let before = blocks(&work);

    let grown: VolumeSet = s
        .req::<store::VolumeResize>(&VolumeResizeRequest {
            vm_id: vm.clone(),
            disk_mib: MemMib::new(96).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(grown.disk_mib.get(), 96);
    assert_eq!(std::fs::metadata(&work).unwrap().len(), 96 << 20);
    assert!(
        blocks(&work) > before * 2,
        "the file system grew with the file"
    );
    assert_eq!(
        read_ext4(&work, "/data").as_deref(),
        Some("before the resize")
    );
    assert_eq!(
        list(&s).await[0].disk_mib.get(),
        96,
        "the new size is recorded"
    );

    let err = s
        .req::<store::VolumeResize>(&VolumeResizeRequest {
            vm_id: vm.clone(),
            disk_mib: MemMib::new(64).unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidArgument, "{err}");
    assert!(err.message.contains("shrinking"), "{err}");
    assert_eq!(std::fs::metadata(&work).unwrap().len(), 96 << 20);

    let err = s
        .req::<store::VolumeResize>(&VolumeResizeRequest {
            vm_id: vm_id(),
            disk_mib: MemMib::new(64).unwrap(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotFound, "{err}");
}

/// The earlier bangerd's regression: a work disk holding the image's home as `/root` inside
/// itself (the guest saw `/root/root/...`). The next start moves it up; what both levels hold
/// keeps the top-level copy and the nested one is kept aside.
#[tokio::test]
async fn a_stale_nested_home_is_flattened_on_the_next_start() {
    if !banger_testkit::require_root() {
        return;
    }
    let (s, _files) = stack_with_image().await;
    let vm = vm_id();
    let set = create(&s, &vm).await;
    let work = Path::new(&set.work_disk_path);
    mkdir_ext4(work, "/root");
    mkdir_ext4(work, "/root/.ssh");
    write_ext4(work, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA key");
    write_ext4(work, "/root/.profile", "nested profile");
    debugfs(work, "set_inode_field /root mode 040700", true);

    let again = create(&s, &vm).await;
    assert_eq!(again, set);
    assert_eq!(
        read_ext4(work, "/.ssh/authorized_keys").as_deref(),
        Some("ssh-ed25519 AAAA key")
    );
    assert_eq!(
        read_ext4(work, "/.profile").as_deref(),
        Some("export FROM_IMAGE=1\n"),
        "the top-level copy wins"
    );
    assert_eq!(
        read_ext4(work, "/.banger-nested-root/.profile").as_deref(),
        Some("nested profile"),
        "the shadowed nested copy is kept"
    );
    let (root_listing, err) = debugfs(work, "ls -p /root", false);
    assert!(
        err.contains("not found") || root_listing.trim().is_empty(),
        "the nested home is gone: {root_listing}{err}"
    );
    // Nothing stays mounted or attached on the host.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(s.stord_dir().to_str().unwrap()),
        "{mounts}"
    );
}

#[tokio::test]
async fn busy_removal_is_retried_then_reported_and_finished_later() {
    if !banger_testkit::require_root() {
        return;
    }
    let (s, files) = stack_with_image().await;
    let vm = vm_id();
    let set = create(&s, &vm).await;
    // A mount on the root file makes unlink fail with EBUSY, as a device still held by a dying
    // Firecracker does.
    let mut busy = BindMount::new(&files.kernel, Path::new(&set.root_path));
    let started = std::time::Instant::now();
    let err = s
        .req::<store::VolumeDelete>(&VolumeDeleteRequest { vm_id: vm.clone() })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::Unavailable, "{err}");
    assert!(err.message.contains("gave up after 8 attempts"), "{err}");
    assert!(
        err.message.contains("busy"),
        "the last error is reported: {err}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(50 + 100 + 200),
        "it backed off"
    );
    // Nothing was half-removed: the record and the work disk are still there.
    assert_eq!(list(&s).await, vec![set.clone()]);
    assert!(Path::new(&set.work_disk_path).exists());

    busy.release();
    let d: VolumeDeleteReply = s
        .req::<store::VolumeDelete>(&VolumeDeleteRequest { vm_id: vm })
        .await
        .unwrap();
    assert!(d.removed);
    assert!(list(&s).await.is_empty());
}

fn vm_info(id: &VmId) -> VmInfo {
    VmInfo {
        id: id.clone(),
        name: VmName::new("gone").unwrap(),
        host: common::host(),
        state: VmState::Stopped,
        image: ImageName::new("base").unwrap(),
        cpus: CpuCount::new(1).unwrap(),
        memory_mib: MemMib::new(128).unwrap(),
        disk_mib: MemMib::new(32).unwrap(),
        network: None,
        port_forwards: Vec::new(),
        reason: None,
        created_at_ms: 1,
        updated_at_ms: 1,
        started_at_ms: None,
        touched_at_ms: None,
    }
}

#[tokio::test]
async fn a_deleted_event_removes_what_is_left_of_the_vm() {
    let (s, _files) = stack_with_image().await;
    let gone = vm_id();
    let kept = vm_id();
    let gone_set = create(&s, &gone).await;
    let kept_set = create(&s, &kept).await;
    let event = VmEvent {
        kind: EventKind::Deleted,
        at_ms: 2,
        seq: 1,
        vm: vm_info(&gone),
    };
    s.bus.publish_event(&common::host(), &event).await.unwrap();
    // An event of another host is not ours.
    let mut foreign = vm_info(&kept);
    foreign.host = banger_proto::HostId::new("elsewhere").unwrap();
    let foreign_event = VmEvent {
        vm: foreign,
        ..event
    };
    s.bus
        .publish_event(&foreign_event.vm.host.clone(), &foreign_event)
        .await
        .unwrap();

    let bus_s = &s;
    banger_testkit::wait_until(
        "the deleted VM's volumes to go",
        Duration::from_secs(20),
        || async move { list(bus_s).await.len() == 1 },
    )
    .await;
    assert_eq!(list(&s).await, vec![kept_set]);
    assert!(!Path::new(&gone_set.work_disk_path).exists());
    assert!(!s.vm_dir(&gone).exists());
}

#[tokio::test]
async fn start_up_reconciliation_removes_debris_no_record_explains() {
    let (mut s, _files) = stack_with_image().await;
    let vm = vm_id();
    let set = create(&s, &vm).await;
    s.stop_stord();
    // A crash mid-create left a directory without a record, and a half-written file.
    let stray = vm_id();
    let stray_dir = s.vm_dir(&stray);
    std::fs::create_dir_all(&stray_dir).unwrap();
    std::fs::write(stray_dir.join("root.ext4"), b"half").unwrap();
    let staging = s.vm_dir(&vm).join("work.ext4.staging");
    std::fs::write(&staging, b"half").unwrap();
    // Something that is not a VM directory is reported, never removed.
    let foreign = s.stord_dir().join("volumes").join("not-a-vm");
    std::fs::create_dir_all(&foreign).unwrap();

    s.start_stord().await;
    assert!(!stray_dir.exists(), "debris without a record is removed");
    assert!(!staging.exists(), "half-written files are removed");
    assert!(
        foreign.exists(),
        "directories stord did not make are left alone"
    );
    assert_eq!(list(&s).await, vec![set.clone()]);
    assert!(Path::new(&set.root_path).exists() && Path::new(&set.work_disk_path).exists());
}
