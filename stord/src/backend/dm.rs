//! The device-mapper back-end: a persistent snapshot over two loop devices.
//!
//! ```text
//!   image rootfs ──loop (read-only, tag …-origin)──┐
//!                                                  ├── dm "snapshot" target ── /dev/dm-N  (the VM's root)
//!   <vm dir>/cow.img ──loop (read-write, tag …-cow)┘     table: "<origin> <cow> P 8"
//! ```
//!
//! Creating a root is O(1): a sparse exception store (`cow.img`) and three ioctls. Writes land
//! in the exception store in 4 KiB chunks (8 sectors); the image is never written. The snapshot
//! is *persistent* (`P`), so after a host reboot the same `cow.img` is re-attached and the VM's
//! changes are still there: `create` on an existing volume re-activates it.
//!
//! Naming (what reconciliation recognises): the dm device is `banger-<state tag>-<vm id>` and
//! its loop devices carry the tags `…-origin` and `…-cow`, where the state tag is a hash of
//! stord's state directory, so two stord instances on one host never touch each other's
//! devices. Without udev no `/dev/mapper/<name>` link appears; the root is then addressed as
//! `/dev/dm-<minor>`.
//!
//! The kernel side is behind [`BlockDevices`] so the sequencing (undo on failure, busy retries,
//! never leaking a loop device) is unit-tested with a recording double; the real implementation
//! is [`crate::sys::devmapper::LinuxBlockDevices`].

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use banger_proto::VmId;
use banger_proto::store::BackendKind;

use super::{BackendError, Root, RootBackend, RootSpec, remove_file_retrying};
use crate::retry::{Attempted, Backoff, retry};
use crate::sys::loopdev::{LoopEntry, LoopError};

/// The exception store's file name in a VM's volume directory.
pub const COW_FILE: &str = "cow.img";
/// Snapshot chunk size in 512-byte sectors: 4 KiB, the file system block size.
pub const CHUNK_SECTORS: u32 = 8;
/// Sector size.
pub const SECTOR: u64 = 512;
/// Prefix of every dm device and loop tag stord makes.
pub const NAME_PREFIX: &str = "banger-";

/// A loop device held open by its creator until the dm table holds it.
pub struct LoopHandle {
    /// Device number.
    pub number: u32,
    _hold: Option<Box<dyn std::any::Any + Send>>,
}

impl LoopHandle {
    /// A handle for device `number`; `hold` keeps it attached while alive (autoclear).
    pub fn new(number: u32, hold: Option<Box<dyn std::any::Any + Send>>) -> Self {
        Self {
            number,
            _hold: hold,
        }
    }

    /// `major:minor`, as a dm table names it.
    pub fn dev_t(&self) -> String {
        format!("{}:{}", crate::sys::loopdev::LOOP_MAJOR, self.number)
    }
}

/// Why a loop or dm operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DevError {
    /// A loop device operation failed.
    #[error(transparent)]
    Loop(#[from] LoopError),
    /// A device-mapper operation failed.
    #[error("{step} dm device {name}: {message}")]
    Dm {
        /// What was being done.
        step: &'static str,
        /// The device.
        name: String,
        /// The library's message.
        message: String,
        /// The errno, when the kernel gave one.
        errno: Option<i32>,
    },
}

impl DevError {
    /// Whether the kernel said busy.
    pub fn is_busy(&self) -> bool {
        match self {
            Self::Loop(l) => l.raw_os_error() == Some(libc::EBUSY),
            Self::Dm { errno, .. } => *errno == Some(libc::EBUSY),
        }
    }
}

/// Loop devices and device-mapper, as the dm back-end and reconciliation use them.
pub trait BlockDevices: Send + Sync + std::fmt::Debug {
    /// Why device-mapper cannot be used on this host, or `None` when it can. Loop operations
    /// work either way.
    fn dm_unavailable(&self) -> Option<String>;
    /// Attaches `file` to a free loop device (autoclear) tagged `tag`.
    fn attach_loop(&self, file: &Path, read_only: bool, tag: &str) -> Result<LoopHandle, DevError>;
    /// Detaches loop device `number` (gone already is fine).
    fn detach_loop(&self, number: u32) -> Result<(), DevError>;
    /// Every bound loop device.
    fn list_loops(&self) -> Result<Vec<LoopEntry>, DevError>;
    /// Creates dm device `name` with `table` and activates it; returns its minor number. A
    /// failure removes the half-made device.
    fn create_snapshot(&self, name: &str, table: &SnapshotTable) -> Result<u32, DevError>;
    /// Removes dm device `name` (gone already is fine).
    fn remove_dm(&self, name: &str) -> Result<(), DevError>;
    /// Every dm device: name and minor.
    fn list_dm(&self) -> Result<Vec<(String, u32)>, DevError>;
}

/// A dm `snapshot` table of one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotTable {
    /// Length in sectors (the origin's size).
    pub sectors: u64,
    /// The origin device (`major:minor`).
    pub origin: String,
    /// The exception store device (`major:minor`).
    pub cow: String,
}

impl SnapshotTable {
    /// The table for an origin of `origin_bytes` bytes. The dm length is whole sectors; an
    /// image whose size is not a multiple of 512 loses its tail, which no file system uses.
    pub fn new(origin_bytes: u64, origin: String, cow: String) -> Self {
        Self {
            sectors: origin_bytes / SECTOR,
            origin,
            cow,
        }
    }

    /// The target line `devicemapper::DM::table_load` takes: start, length, type, parameters
    /// (`<origin> <cow> P <chunk>`: persistent exception store, 4 KiB chunks).
    pub fn target(&self) -> (u64, u64, String, String) {
        (
            0,
            self.sectors,
            "snapshot".to_owned(),
            format!("{} {} P {CHUNK_SECTORS}", self.origin, self.cow),
        )
    }
}

/// The names of one VM's devices under one state tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceNames {
    /// The dm device.
    pub dm: String,
    /// The origin loop device's tag.
    pub origin_tag: String,
    /// The exception store loop device's tag.
    pub cow_tag: String,
}

impl DeviceNames {
    /// Names for `vm` under `state_tag`.
    pub fn new(state_tag: &str, vm: &VmId) -> Self {
        let dm = format!("{NAME_PREFIX}{state_tag}-{vm}");
        Self {
            origin_tag: format!("{dm}-origin"),
            cow_tag: format!("{dm}-cow"),
            dm,
        }
    }
}

/// The VM a device name or loop tag of `state_tag` belongs to, if it is one of ours.
pub fn owner_of(state_tag: &str, name: &str) -> Option<VmId> {
    let rest = name
        .strip_prefix(NAME_PREFIX)?
        .strip_prefix(state_tag)?
        .strip_prefix('-')?;
    let id = rest.get(..VmId::LEN)?;
    let suffix = rest.get(VmId::LEN..)?;
    if !matches!(suffix, "" | "-origin" | "-cow" | "-work") {
        return None;
    }
    VmId::new(id).ok()
}

/// The path a guest boots for dm device `name` with `minor`: the udev link when it exists,
/// else the devtmpfs node.
pub fn device_path(name: &str, minor: u32) -> PathBuf {
    let mapper = Path::new("/dev/mapper").join(name);
    if mapper.exists() {
        mapper
    } else {
        PathBuf::from(format!("/dev/dm-{minor}"))
    }
}

/// Persistent dm snapshots.
pub struct DmSnapshot {
    devices: Arc<dyn BlockDevices>,
    state_tag: String,
}

impl std::fmt::Debug for DmSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmSnapshot")
            .field("state_tag", &self.state_tag)
            .finish_non_exhaustive()
    }
}

impl DmSnapshot {
    /// A back-end over `devices`, naming devices with `state_tag`.
    pub fn new(devices: Arc<dyn BlockDevices>, state_tag: String) -> Self {
        Self { devices, state_tag }
    }

    /// The kernel boundary (for reconciliation).
    pub fn devices(&self) -> &Arc<dyn BlockDevices> {
        &self.devices
    }

    /// Detaches every loop device tagged for `vm`, retrying busy ones; returns attempts.
    fn detach_loops_of(&self, vm: &VmId, policy: Backoff) -> Result<u32, BackendError> {
        let names = DeviceNames::new(&self.state_tag, vm);
        let mut attempts = 1;
        for entry in self.devices.list_loops()? {
            if entry.tag == names.origin_tag || entry.tag == names.cow_tag {
                let n = entry.number;
                let Attempted {
                    result,
                    attempts: a,
                } = retry(policy, DevError::is_busy, || self.devices.detach_loop(n));
                attempts = attempts.max(a);
                result.map_err(|e| gave_up(a, e.into()))?;
            }
        }
        Ok(attempts)
    }
}

fn gave_up(attempts: u32, last: BackendError) -> BackendError {
    if attempts > 1 {
        BackendError::GaveUp {
            attempts,
            last: Box::new(last),
        }
    } else {
        last
    }
}

impl RootBackend for DmSnapshot {
    fn kind(&self) -> BackendKind {
        BackendKind::DmSnapshot
    }

    fn create(&self, spec: &RootSpec<'_>) -> Result<Root, BackendError> {
        let names = DeviceNames::new(&self.state_tag, spec.vm);
        if let Some((_, minor)) = self
            .devices
            .list_dm()?
            .into_iter()
            .find(|(n, _)| *n == names.dm)
        {
            return Ok(Root {
                path: device_path(&names.dm, minor),
                backend: BackendKind::DmSnapshot,
            });
        }
        let origin_bytes = std::fs::metadata(spec.image_rootfs)
            .map_err(|e| BackendError::io("reading the size of", spec.image_rootfs, e))?
            .len();
        // An existing exception store holds the VM's changes (persistent snapshot): reuse it.
        let cow_path = spec.dir.join(COW_FILE);
        let made_cow = !cow_path.exists();
        if made_cow {
            // Sparse, as large as the origin: the worst case is the VM rewriting every block.
            // A new file reads as zeros, which the kernel takes as an empty store.
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(super::sparse::ROOT_MODE)
                .open(&cow_path)
                .map_err(|e| BackendError::io("creating", &cow_path, e))?;
            f.set_len(origin_bytes + (origin_bytes / 64).max(1 << 20))
                .map_err(|e| BackendError::io("sizing", &cow_path, e))?;
        }
        let undo_cow = || {
            if made_cow {
                let _ = std::fs::remove_file(&cow_path);
            }
        };
        let result = (|| {
            // Each handle keeps its device attached until the dm table holds it; on any failure
            // below they drop and autoclear detaches the devices.
            let origin = self
                .devices
                .attach_loop(spec.image_rootfs, true, &names.origin_tag)?;
            let cow = self.devices.attach_loop(&cow_path, false, &names.cow_tag)?;
            let table = SnapshotTable::new(origin_bytes, origin.dev_t(), cow.dev_t());
            let minor = self.devices.create_snapshot(&names.dm, &table)?;
            Ok::<_, BackendError>(minor)
        })();
        match result {
            Ok(minor) => Ok(Root {
                path: device_path(&names.dm, minor),
                backend: BackendKind::DmSnapshot,
            }),
            Err(e) => {
                undo_cow();
                Err(e)
            }
        }
    }

    fn remove(&self, spec: &RootSpec<'_>, policy: Backoff) -> Result<u32, BackendError> {
        let names = DeviceNames::new(&self.state_tag, spec.vm);
        let Attempted { result, attempts } = retry(policy, DevError::is_busy, || {
            self.devices.remove_dm(&names.dm)
        });
        result.map_err(|e| gave_up(attempts, e.into()))?;
        let loops = self.detach_loops_of(spec.vm, policy)?;
        let files = remove_file_retrying(&spec.dir.join(COW_FILE), policy)?;
        Ok(attempts.max(loops).max(files))
    }
}

/// A recording [`BlockDevices`] for unit tests: keeps devices in memory and can be told to
/// answer busy a number of times.
#[cfg(test)]
pub mod fake {
    use std::sync::Mutex;

    use super::*;

    /// The recorded state.
    #[derive(Debug, Default)]
    pub struct State {
        /// Bound loops: number, tag, backing file.
        pub loops: Vec<LoopEntry>,
        /// Live dm devices: name, minor, table.
        pub dms: Vec<(String, u32, SnapshotTable)>,
        /// Remaining busy answers of `remove_dm`.
        pub busy_removals: u32,
        /// Fail `create_snapshot` when set.
        pub fail_create: bool,
        /// What `dm_unavailable` answers.
        pub dm_unavailable: Option<String>,
        /// Every call, in order.
        pub calls: Vec<String>,
        /// How many times the devices were listed (`list_dm`, `list_loops`).
        pub lists: u32,
        next_loop: u32,
    }

    /// The double.
    #[derive(Debug, Default)]
    pub struct FakeDevices(pub Mutex<State>);

    impl FakeDevices {
        pub fn state(&self) -> std::sync::MutexGuard<'_, State> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    fn busy(name: &str) -> DevError {
        DevError::Dm {
            step: "removing",
            name: name.to_owned(),
            message: "Device or resource busy".into(),
            errno: Some(libc::EBUSY),
        }
    }

    impl BlockDevices for FakeDevices {
        fn dm_unavailable(&self) -> Option<String> {
            self.state().dm_unavailable.clone()
        }

        fn attach_loop(&self, file: &Path, _ro: bool, tag: &str) -> Result<LoopHandle, DevError> {
            let mut s = self.state();
            let number = s.next_loop;
            s.next_loop += 1;
            s.calls.push(format!("attach {tag}"));
            s.loops.push(LoopEntry {
                number,
                tag: tag.to_owned(),
                backing_file: file.to_owned(),
            });
            Ok(LoopHandle::new(number, None))
        }

        fn detach_loop(&self, number: u32) -> Result<(), DevError> {
            let mut s = self.state();
            s.calls.push(format!("detach {number}"));
            s.loops.retain(|l| l.number != number);
            Ok(())
        }

        fn list_loops(&self) -> Result<Vec<LoopEntry>, DevError> {
            let mut s = self.state();
            s.lists += 1;
            Ok(s.loops.clone())
        }

        fn create_snapshot(&self, name: &str, table: &SnapshotTable) -> Result<u32, DevError> {
            let mut s = self.state();
            s.calls.push(format!("create {name}"));
            if s.fail_create {
                return Err(DevError::Dm {
                    step: "loading the snapshot table of",
                    name: name.to_owned(),
                    message: "Invalid argument".into(),
                    errno: Some(libc::EINVAL),
                });
            }
            let minor = u32::try_from(s.dms.len()).unwrap_or(0);
            s.dms.push((name.to_owned(), minor, table.clone()));
            Ok(minor)
        }

        fn remove_dm(&self, name: &str) -> Result<(), DevError> {
            let mut s = self.state();
            s.calls.push(format!("remove {name}"));
            if s.busy_removals > 0 && s.dms.iter().any(|d| d.0 == name) {
                s.busy_removals -= 1;
                return Err(busy(name));
            }
            s.dms.retain(|d| d.0 != name);
            Ok(())
        }

        fn list_dm(&self) -> Result<Vec<(String, u32)>, DevError> {
            let mut s = self.state();
            s.lists += 1;
            Ok(s.dms.iter().map(|d| (d.0.clone(), d.1)).collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::fake::FakeDevices;
    use super::*;

    const FAST: Backoff = Backoff {
        attempts: 5,
        initial: Duration::from_millis(1),
        max: Duration::from_millis(2),
    };

    fn vm() -> VmId {
        VmId::new("0123456789abcdef0123456789abcdef").unwrap()
    }

    struct Fixture {
        dir: tempfile::TempDir,
        vm: VmId,
        vm_dir: PathBuf,
        image: PathBuf,
        devices: Arc<FakeDevices>,
        backend: DmSnapshot,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("image.ext4");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        std::fs::create_dir(dir.path().join("vm")).unwrap();
        let devices = Arc::new(FakeDevices::default());
        let backend = DmSnapshot::new(devices.clone(), "0badcafe".into());
        Fixture {
            vm_dir: dir.path().join("vm"),
            vm: vm(),
            dir,
            image,
            devices,
            backend,
        }
    }

    impl Fixture {
        fn spec(&self) -> RootSpec<'_> {
            RootSpec {
                vm: &self.vm,
                image_rootfs: &self.image,
                dir: &self.vm_dir,
            }
        }
    }

    #[test]
    fn the_table_is_a_persistent_snapshot_of_the_whole_origin() {
        let t = SnapshotTable::new(1 << 30, "7:0".into(), "7:1".into());
        assert_eq!(
            t.target(),
            (
                0,
                2_097_152,
                "snapshot".to_owned(),
                "7:0 7:1 P 8".to_owned()
            )
        );
        // A tail shorter than a sector is not mapped.
        assert_eq!(SnapshotTable::new(1025, "a".into(), "b".into()).sectors, 2);
    }

    #[test]
    fn names_carry_the_state_tag_and_vm_and_parse_back() {
        let n = DeviceNames::new("0badcafe", &vm());
        assert_eq!(n.dm, "banger-0badcafe-0123456789abcdef0123456789abcdef");
        assert_eq!(n.origin_tag, format!("{}-origin", n.dm));
        assert_eq!(n.cow_tag, format!("{}-cow", n.dm));
        assert!(n.cow_tag.len() < crate::sys::loopdev::TAG_CAPACITY);
        assert_eq!(owner_of("0badcafe", &n.dm), Some(vm()));
        assert_eq!(owner_of("0badcafe", &n.origin_tag), Some(vm()));
        assert_eq!(owner_of("0badcafe", &n.cow_tag), Some(vm()));
        // Another stord's devices, and things that merely look similar, are not ours.
        assert_eq!(owner_of("12345678", &n.dm), None);
        assert_eq!(owner_of("0badcafe", "banger-0badcafe-xyz"), None);
        assert_eq!(owner_of("0badcafe", &format!("{}-other", n.dm)), None);
        assert_eq!(owner_of("0badcafe", "vg0-root"), None);
    }

    #[test]
    fn without_udev_the_root_is_the_dm_node() {
        assert_eq!(
            device_path("banger-nonexistent-test-device", 7),
            PathBuf::from("/dev/dm-7")
        );
    }

    #[test]
    fn create_attaches_origin_read_only_and_cow_then_loads_the_snapshot() {
        let f = fixture();
        let root = f.backend.create(&f.spec()).unwrap();
        assert_eq!(root.backend, BackendKind::DmSnapshot);
        assert_eq!(root.path, PathBuf::from("/dev/dm-0"));
        let s = f.devices.state();
        let names = DeviceNames::new("0badcafe", &vm());
        assert_eq!(
            s.calls,
            vec![
                format!("attach {}", names.origin_tag),
                format!("attach {}", names.cow_tag),
                format!("create {}", names.dm),
            ]
        );
        assert_eq!(s.dms[0].2.target().3, "7:0 7:1 P 8");
        assert_eq!(s.loops[0].backing_file, f.image);
        let cow = f.dir.path().join("vm").join(COW_FILE);
        assert!(cow.exists());
        // Sparse: nothing allocated up front.
        assert!(crate::sys::files::allocated_bytes(&cow).unwrap() < 1 << 20);
    }

    #[test]
    fn create_is_idempotent_and_reuses_an_active_device() {
        let f = fixture();
        let a = f.backend.create(&f.spec()).unwrap();
        let b = f.backend.create(&f.spec()).unwrap();
        assert_eq!(a, b);
        assert_eq!(f.devices.state().dms.len(), 1);
        assert_eq!(f.devices.state().loops.len(), 2);
    }

    #[test]
    fn a_failed_create_removes_the_new_exception_store() {
        let f = fixture();
        f.devices.state().fail_create = true;
        let err = f.backend.create(&f.spec()).unwrap_err();
        assert!(
            err.to_string().contains("loading the snapshot table"),
            "{err}"
        );
        assert!(!f.dir.path().join("vm").join(COW_FILE).exists());
        assert!(f.devices.state().dms.is_empty());
        // Loop devices are autoclear: the real kernel detaches them when the handles drop.
    }

    #[test]
    fn remove_retries_busy_devices_then_detaches_loops_and_deletes_the_store() {
        let f = fixture();
        f.backend.create(&f.spec()).unwrap();
        f.devices.state().busy_removals = 3;
        let attempts = f.backend.remove(&f.spec(), FAST).unwrap();
        assert_eq!(attempts, 4);
        let s = f.devices.state();
        assert!(s.dms.is_empty());
        assert!(s.loops.is_empty(), "loop devices leaked: {:?}", s.loops);
        assert!(!f.dir.path().join("vm").join(COW_FILE).exists());
    }

    #[test]
    fn remove_gives_up_after_bounded_attempts_with_the_last_error() {
        let f = fixture();
        f.backend.create(&f.spec()).unwrap();
        f.devices.state().busy_removals = 100;
        let err = f.backend.remove(&f.spec(), FAST).unwrap_err();
        assert!(
            matches!(err, BackendError::GaveUp { attempts: 5, .. }),
            "{err:?}"
        );
        let chain = banger_bus::runtime::chain(&err);
        assert!(chain.contains("busy"), "{chain}");
        // Nothing was torn down under a device still in use.
        assert_eq!(f.devices.state().dms.len(), 1);
        assert!(f.dir.path().join("vm").join(COW_FILE).exists());
    }

    #[test]
    fn remove_is_idempotent() {
        let f = fixture();
        assert_eq!(f.backend.remove(&f.spec(), FAST).unwrap(), 1);
        f.backend.create(&f.spec()).unwrap();
        f.backend.remove(&f.spec(), FAST).unwrap();
        f.backend.remove(&f.spec(), FAST).unwrap();
    }
}
