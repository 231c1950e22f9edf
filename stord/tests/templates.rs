//! Work disks cloned from pre-formatted templates: each is a valid ext4 of the requested size,
//! labelled and seeded with the image's `/root` as `mkfs.ext4 -d` made it; two VMs' disks are
//! independent; a larger size grows a clone of a smaller template; a template that is missing
//! or corrupt is remade.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use banger_proto::op::store;
use banger_proto::store::{ImageInfo, RegisterImageRequest, VolumeCreateRequest, VolumeSet};
use banger_proto::{ImageName, MemMib, VmId};
use common::{Stack, debugfs, make_image, read_ext4, run, vm_id, write_ext4};

async fn stack_with_image() -> Stack {
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
    s
}

async fn create(s: &Stack, vm: &VmId, mib: Option<i64>) -> VolumeSet {
    s.req::<store::VolumeCreate>(&VolumeCreateRequest {
        vm_id: vm.clone(),
        image: ImageName::new("base").unwrap(),
        disk_mib: mib.map(|m| MemMib::new(m).unwrap()),
    })
    .await
    .unwrap()
}

fn templates(s: &Stack) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(s.stord_dir().join("templates"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    out.sort();
    out
}

/// The ext4 block count and block size of `image`, from its superblock.
fn fs_bytes(image: &Path) -> u64 {
    let (out, _) = debugfs(image, "stats", false);
    let field = |name: &str| -> u64 {
        out.lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    field("Block count:") * field("Block size:")
}

/// A valid work disk of `mib` MiB as stord has always made them.
fn assert_work_disk(work: &Path, mib: u64) {
    run("e2fsck", &["-f", "-n", work.to_str().unwrap()]);
    assert_eq!(std::fs::metadata(work).unwrap().len(), mib << 20);
    assert_eq!(fs_bytes(work), mib << 20, "the file system fills the file");
    let label = run("e2label", &[work.to_str().unwrap()]);
    assert_eq!(label.trim(), "banger-work");
    assert_eq!(
        read_ext4(work, "/.profile").as_deref(),
        Some("export FROM_IMAGE=1\n"),
        "the image's /root is at the top of the work disk"
    );
    let (listing, _) = debugfs(work, "ls", false);
    assert!(listing.contains("lost+found"), "{listing}");
    assert_eq!(
        std::fs::metadata(work).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[tokio::test]
async fn work_disks_are_independent_clones_of_one_template() {
    let s = stack_with_image().await;
    let (a_id, b_id) = (vm_id(), vm_id());
    let a = create(&s, &a_id, None).await;
    let b = create(&s, &b_id, None).await;
    let (wa, wb) = (Path::new(&a.work_disk_path), Path::new(&b.work_disk_path));
    assert_work_disk(wa, 32);
    assert_work_disk(wb, 32);

    let t = templates(&s);
    assert_eq!(t.len(), 1, "one template for one image and size: {t:?}");
    assert!(t[0].to_str().unwrap().ends_with("-32.f3.ext4"), "{t:?}");
    // The journal is not written out: a clone holds the file system's metadata, not 1 MiB of
    // journal zeros per 32 MiB (64 MiB per 8 GiB).
    use std::os::unix::fs::MetadataExt as _;
    let allocated = std::fs::metadata(wa).unwrap().blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "{allocated} bytes allocated in a 32 MiB work disk"
    );
    assert_eq!(
        std::fs::metadata(&t[0]).unwrap().permissions().mode() & 0o777,
        0o600
    );

    write_ext4(wa, "/notes.txt", "only in a");
    assert_eq!(
        read_ext4(wb, "/notes.txt"),
        None,
        "b does not see a's write"
    );
    assert_eq!(
        read_ext4(&t[0], "/notes.txt"),
        None,
        "the template is untouched"
    );
    let c = create(&s, &vm_id(), None).await;
    assert_eq!(read_ext4(Path::new(&c.work_disk_path), "/notes.txt"), None);
    run("e2fsck", &["-f", "-n", wa.to_str().unwrap()]);
}

#[tokio::test]
async fn a_larger_disk_grows_a_clone_of_a_smaller_template() {
    let s = stack_with_image().await;
    let small = create(&s, &vm_id(), Some(40)).await;
    assert_work_disk(Path::new(&small.work_disk_path), 40);
    let big = create(&s, &vm_id(), Some(100)).await;
    assert_eq!(big.disk_mib.get(), 100);
    assert_work_disk(Path::new(&big.work_disk_path), 100);
    let t = templates(&s);
    assert_eq!(
        t.len(),
        1,
        "the 100 MiB disk grew the 40 MiB template: {t:?}"
    );

    // Smaller than every template: a template of that size is made.
    let tiny = create(&s, &vm_id(), Some(16)).await;
    assert_work_disk(Path::new(&tiny.work_disk_path), 16);
    assert_eq!(templates(&s).len(), 2);
}

#[tokio::test]
async fn an_8_gib_disk_holds_its_file_system_not_mkfs_reserved_zeros() {
    use std::os::unix::fs::MetadataExt as _;
    let s = stack_with_image().await;
    let vm = create(&s, &vm_id(), Some(8192)).await;
    let work = Path::new(&vm.work_disk_path);
    assert_work_disk(work, 8192);
    // mkfs's default reservation for growing online to 1,024 times the size was 4 MiB of
    // written blocks here; reserving for 64 times leaves the file system's own metadata.
    let allocated = std::fs::metadata(work).unwrap().blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "{allocated} bytes allocated in an 8 GiB work disk"
    );
    let (stats, _) = debugfs(work, "stats", false);
    assert!(stats.contains("resize_inode"), "{stats}");
    assert!(
        stats.contains("Reserved GDT blocks:      63"),
        "room for the group descriptors of 512 GiB: {stats}"
    );
}

#[tokio::test]
async fn a_missing_or_corrupt_template_is_remade() {
    let mut s = stack_with_image().await;
    create(&s, &vm_id(), None).await;
    let t = templates(&s).remove(0);

    // Corrupt: the superblock zeroed. Checked the first time a new stord process uses it.
    s.stop_stord();
    let mut bytes = std::fs::read(&t).unwrap();
    bytes[1024..2048].fill(0);
    std::fs::write(&t, &bytes).unwrap();
    s.start_stord().await;
    let after = create(&s, &vm_id(), None).await;
    assert_work_disk(Path::new(&after.work_disk_path), 32);
    run("e2fsck", &["-f", "-n", t.to_str().unwrap()]);

    // Missing.
    std::fs::remove_file(&t).unwrap();
    let again = create(&s, &vm_id(), None).await;
    assert_work_disk(Path::new(&again.work_disk_path), 32);
    assert!(t.is_file(), "the template was made again");
}

#[tokio::test]
async fn a_template_of_an_earlier_format_is_never_cloned_and_goes_when_one_is_made() {
    let mut s = stack_with_image().await;
    create(&s, &vm_id(), None).await;
    let current = templates(&s).remove(0);
    // What an earlier stord left: the same image's template under the old name (its journal
    // written out), and one of an image since re-registered.
    s.stop_stord();
    let name = current.file_name().unwrap().to_str().unwrap().to_owned();
    let old = current.with_file_name(name.replace(".f3.ext4", ".ext4"));
    let second = current.with_file_name(name.replace(".f3.ext4", ".f2.ext4"));
    let other = current.with_file_name("0123456789abcdef-64.ext4");
    std::fs::rename(&current, &old).unwrap();
    std::fs::copy(&old, &second).unwrap();
    std::fs::write(&other, b"an old template").unwrap();
    s.start_stord().await;

    let vm = create(&s, &vm_id(), None).await;
    assert_work_disk(Path::new(&vm.work_disk_path), 32);
    assert_eq!(
        templates(&s),
        vec![current],
        "a template of the current format was made, and the old ones removed"
    );
}
