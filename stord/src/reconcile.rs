//! Start-up reconciliation: converge the disk and the kernel on the registry.
//!
//! stord's volume records are the truth. At start-up (nothing else runs yet):
//! - a volume directory under `volumes/` with no record is debris of a crash and is removed,
//!   with whatever root any back-end could have made in it;
//! - a dm device or loop device carrying this stord's naming (see [`crate::backend::dm`]) whose
//!   VM has no record is removed or detached; a loop device tagged for a work-disk repair is
//!   always detached (it only lives while stord holds it);
//! - a staging file (`*.staging`) is removed;
//! - a record whose files are missing is reported (the next `volume.create` remakes what it
//!   can), never silently dropped.
//!
//! Devices of another stord (another state directory, another tag) and devices without
//! banger's naming are never touched.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use banger_proto::VmId;

use crate::backend::STAGING_SUFFIX;
use crate::backend::dm::owner_of;
use crate::db::DbError;
use crate::ops::volume_delete;
use crate::retry::Backoff;
use crate::state::{Stord, chain};

/// What a pass found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Volume directories removed (no record).
    pub removed_dirs: Vec<VmId>,
    /// dm devices removed.
    pub removed_dm: Vec<String>,
    /// Loop devices detached (number, tag).
    pub detached_loops: Vec<(u32, String)>,
    /// Staging files removed.
    pub removed_staging: Vec<PathBuf>,
    /// Records whose root or work disk is missing.
    pub missing: Vec<VmId>,
    /// Things that could not be cleaned, with why.
    pub failures: Vec<String>,
}

impl ReconcileReport {
    /// Whether the pass changed anything or found a problem.
    pub fn is_clean(&self) -> bool {
        *self == Self::default()
    }

    /// Logs the report: one line per kind of finding.
    pub fn log(&self) {
        if self.is_clean() {
            tracing::info!("reconciled: nothing to clean");
            return;
        }
        if !self.removed_dirs.is_empty() {
            tracing::warn!(vms = ?self.removed_dirs, "removed volume directories without a record");
        }
        if !self.removed_dm.is_empty() {
            tracing::warn!(devices = ?self.removed_dm, "removed dm devices without a record");
        }
        if !self.detached_loops.is_empty() {
            tracing::warn!(loops = ?self.detached_loops, "detached loop devices without a record");
        }
        if !self.removed_staging.is_empty() {
            tracing::info!(files = ?self.removed_staging, "removed half-written files");
        }
        if !self.missing.is_empty() {
            tracing::warn!(vms = ?self.missing, "volume records whose files are missing");
        }
        for f in &self.failures {
            tracing::error!("reconciliation: {f}");
        }
    }
}

/// Runs one pass. Blocks; call it before serving (it takes no VM locks).
pub fn reconcile(st: &Stord) -> Result<ReconcileReport, DbError> {
    let mut report = ReconcileReport::default();
    let records = st.db.volumes()?;
    let known: HashSet<VmId> = records.iter().map(|v| v.vm_id.clone()).collect();

    // Volume directories without a record.
    match std::fs::read_dir(&st.dirs.volumes) {
        Ok(entries) => {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(vm) = name.to_str().and_then(|n| VmId::new(n).ok()) else {
                    report.failures.push(format!(
                        "{} is not a VM volume directory; left alone",
                        entry.path().display()
                    ));
                    continue;
                };
                if known.contains(&vm) {
                    remove_staging(&entry.path(), &mut report);
                    continue;
                }
                match volume_delete::apply(st, &vm, Backoff::REMOVAL) {
                    Ok(_) => report.removed_dirs.push(vm),
                    Err(e) => report.failures.push(chain(&e)),
                }
            }
        }
        Err(e) => report
            .failures
            .push(format!("listing {}: {e}", st.dirs.volumes.display())),
    }

    // dm devices without a record.
    match st.devices.list_dm() {
        Ok(dms) => {
            for (name, _) in dms {
                let Some(vm) = owner_of(&st.state_tag, &name) else {
                    continue;
                };
                if known.contains(&vm) {
                    continue;
                }
                match st.devices.remove_dm(&name) {
                    Ok(()) => report.removed_dm.push(name),
                    Err(e) => report.failures.push(chain(&e)),
                }
            }
        }
        Err(e) => report.failures.push(chain(&e)),
    }

    // Loop devices without a record, and any left from a work-disk repair.
    match st.devices.list_loops() {
        Ok(loops) => {
            for entry in loops {
                let Some(vm) = owner_of(&st.state_tag, &entry.tag) else {
                    continue;
                };
                let repair_tag = st.work_tag(&vm);
                if known.contains(&vm) && entry.tag != repair_tag {
                    continue;
                }
                match st.devices.detach_loop(entry.number) {
                    Ok(()) => report.detached_loops.push((entry.number, entry.tag)),
                    Err(e) => report.failures.push(chain(&e)),
                }
            }
        }
        Err(e) => report.failures.push(chain(&e)),
    }

    // Records whose files are gone.
    for v in &records {
        let root_missing = !v.root_path.starts_with("/dev/") && !Path::new(&v.root_path).exists();
        if root_missing || !Path::new(&v.work_disk_path).exists() {
            report.missing.push(v.vm_id.clone());
        }
    }
    Ok(report)
}

fn remove_staging(dir: &Path, report: &mut ReconcileReport) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let p = entry.path();
        if p.to_str().is_some_and(|s| s.ends_with(STAGING_SUFFIX)) {
            match std::fs::remove_file(&p) {
                Ok(()) => report.removed_staging.push(p),
                Err(e) => report
                    .failures
                    .push(format!("removing {}: {e}", p.display())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::sync::Arc;

    use banger_proto::store::ImageInfo;
    use banger_proto::{ImageName, MemMib};

    use super::*;
    use crate::backend::dm::fake::FakeDevices;
    use crate::backend::dm::{DeviceNames, SnapshotTable};
    use crate::config::StordFile;
    use crate::db::{ImageRow, VolumeRow};
    use crate::sys::loopdev::LoopEntry;

    fn id(n: u8) -> VmId {
        VmId::new(format!("{n:032x}")).unwrap()
    }

    #[test]
    fn devices_and_directories_no_record_explains_are_cleaned_and_others_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let devices = Arc::new(FakeDevices::default());
        let st = Stord::open(
            dir.path().join("stord"),
            StordFile::default().resolve().unwrap(),
            devices.clone(),
        )
        .unwrap();
        let tag = st.state_tag.clone();
        // `known` has a record; `stray` a directory and devices but no record (a crash during
        // create); `lone` only devices (its directory is gone).
        let (known, stray, lone) = (id(1), id(2), id(3));
        st.db
            .insert_image(&ImageRow {
                info: ImageInfo {
                    name: ImageName::new("base").unwrap(),
                    kernel: "/k".into(),
                    initrd: None,
                    rootfs: "/r".into(),
                    kernel_args: String::new(),
                    default_disk_mib: MemMib::new(8).unwrap(),
                    rootfs_bytes: 0,
                    created_at_ms: 0,
                },
                rootfs_mtime_ns: 0,
            })
            .unwrap();
        let known_dir = st.dirs.vm_dir(&known);
        std::fs::create_dir_all(&known_dir).unwrap();
        std::fs::write(known_dir.join("work.ext4"), b"").unwrap();
        std::fs::write(known_dir.join("cow.img.staging"), b"").unwrap();
        st.db
            .insert_volume(&VolumeRow {
                vm_id: known.clone(),
                image: ImageName::new("base").unwrap(),
                backend: "dm-snapshot".into(),
                root_path: "/dev/dm-0".into(),
                work_disk_path: known_dir.join("work.ext4").display().to_string(),
                disk_mib: MemMib::new(8).unwrap(),
                created_at_ms: 0,
            })
            .unwrap();
        let stray_dir = st.dirs.vm_dir(&stray);
        std::fs::create_dir_all(&stray_dir).unwrap();
        std::fs::write(stray_dir.join("cow.img"), b"").unwrap();

        let k = DeviceNames::new(&tag, &known);
        let s = DeviceNames::new(&tag, &stray);
        let l = DeviceNames::new(&tag, &lone);
        let other_stord = DeviceNames::new("ffffffff", &stray);
        let table = SnapshotTable::new(512, "7:0".into(), "7:1".into());
        let loop_entry = |number, tag: &str| LoopEntry {
            number,
            tag: tag.to_owned(),
            backing_file: PathBuf::from("/x"),
        };
        {
            let mut f = devices.state();
            for (i, name) in [&k.dm, &s.dm, &l.dm, &other_stord.dm, &"vg0-root".to_owned()]
                .into_iter()
                .enumerate()
            {
                f.dms
                    .push((name.clone(), u32::try_from(i).unwrap(), table.clone()));
            }
            f.loops = vec![
                loop_entry(0, &k.origin_tag),
                loop_entry(1, &k.cow_tag),
                loop_entry(2, &s.origin_tag),
                loop_entry(3, &s.cow_tag),
                loop_entry(4, &st.work_tag(&known)),
                loop_entry(5, ""),
                loop_entry(6, &other_stord.cow_tag),
                loop_entry(7, &l.cow_tag),
            ];
        }

        let report = reconcile(&st).unwrap();
        assert_eq!(report.removed_dirs, vec![stray.clone()]);
        assert!(!stray_dir.exists());
        assert_eq!(
            report.removed_staging,
            vec![known_dir.join("cow.img.staging")]
        );
        // The stray's devices went with its directory; the lone ones are found by name.
        assert_eq!(report.removed_dm, vec![l.dm.clone()]);
        let detached: Vec<u32> = report.detached_loops.iter().map(|(n, _)| *n).collect();
        assert_eq!(detached, vec![4, 7]);
        assert!(report.failures.is_empty(), "{:?}", report.failures);
        assert!(report.missing.is_empty(), "{:?}", report.missing);

        let f = devices.state();
        let dms: Vec<&str> = f.dms.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(
            dms,
            vec![k.dm.as_str(), other_stord.dm.as_str(), "vg0-root"]
        );
        let loops: Vec<u32> = f.loops.iter().map(|l| l.number).collect();
        assert_eq!(loops, vec![0, 1, 5, 6]);
        drop(f);

        // A second pass finds nothing.
        assert!(reconcile(&st).unwrap().is_clean());
    }
}
