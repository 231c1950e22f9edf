//! The real [`BlockDevices`]: loop ioctls and the `devicemapper` crate.
//!
//! Loop devices work on any kernel with the loop driver; device-mapper only where
//! `/dev/mapper/control` exists. No udev is assumed: a new dm device is addressed as
//! `/dev/dm-<minor>` (the node devtmpfs creates) unless a `/dev/mapper/<name>` link exists.

use std::path::Path;

use devicemapper::{DM, DevId, DmError, DmName, DmOptions};

use crate::backend::dm::{BlockDevices, DevError, LoopHandle, SnapshotTable};
use crate::sys::loopdev::{self, LoopEntry};

/// The device-mapper control node; its absence means the kernel has no device-mapper.
pub const DM_CONTROL: &str = "/dev/mapper/control";

/// Loop devices and (when the kernel has it) device-mapper on this host.
pub struct LinuxBlockDevices {
    dm: Result<DM, String>,
}

impl std::fmt::Debug for LinuxBlockDevices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxBlockDevices")
            .field("dm", &self.dm.as_ref().map(|_| "available"))
            .finish()
    }
}

impl LinuxBlockDevices {
    /// Opens the device-mapper control device when there is one.
    pub fn open() -> Self {
        Self { dm: open_dm() }
    }

    fn dm(&self, name: &str) -> Result<&DM, DevError> {
        self.dm.as_ref().map_err(|why| DevError::Dm {
            step: "using",
            name: name.to_owned(),
            message: why.clone(),
            errno: None,
        })
    }
}

fn open_dm() -> Result<DM, String> {
    if !Path::new(DM_CONTROL).exists() {
        return Err(format!(
            "{DM_CONTROL} is missing: this kernel has no device-mapper"
        ));
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err("/dev/loop-control is missing: this kernel has no loop devices".into());
    }
    let dm = DM::new().map_err(|e| format!("opening {DM_CONTROL}: {e}"))?;
    dm.version()
        .map_err(|e| format!("asking device-mapper for its version: {e}"))?;
    Ok(dm)
}

fn errno_of(e: &DmError) -> Option<i32> {
    match e {
        DmError::Core(devicemapper::errors::Error::Ioctl(_, _, _, errno)) => Some(**errno as i32),
        _ => None,
    }
}

fn dm_err(step: &'static str, name: &str, e: &DmError) -> DevError {
    DevError::Dm {
        step,
        name: name.to_owned(),
        message: e.to_string(),
        errno: errno_of(e),
    }
}

impl BlockDevices for LinuxBlockDevices {
    fn dm_unavailable(&self) -> Option<String> {
        self.dm.as_ref().err().cloned()
    }

    fn attach_loop(&self, file: &Path, read_only: bool, tag: &str) -> Result<LoopHandle, DevError> {
        let a = loopdev::attach(file, read_only, tag)?;
        Ok(LoopHandle::new(a.number, Some(Box::new(a))))
    }

    fn detach_loop(&self, number: u32) -> Result<(), DevError> {
        Ok(loopdev::detach(number)?)
    }

    fn list_loops(&self) -> Result<Vec<LoopEntry>, DevError> {
        Ok(loopdev::list()?)
    }

    fn create_snapshot(&self, name: &str, table: &SnapshotTable) -> Result<u32, DevError> {
        let dm = self.dm(name)?;
        let dm_name = DmName::new(name).map_err(|e| dm_err("naming", name, &e))?;
        let id = DevId::Name(dm_name);
        let info = dm
            .device_create(dm_name, None, DmOptions::default())
            .map_err(|e| dm_err("creating", name, &e))?;
        let activate = dm
            .table_load(&id, &[table.target()], DmOptions::default())
            .map_err(|e| dm_err("loading the snapshot table of", name, &e))
            // Resuming (a suspend call without DM_SUSPEND) activates the loaded table.
            .and_then(|_| {
                dm.device_suspend(&id, DmOptions::default())
                    .map_err(|e| dm_err("activating", name, &e))
            });
        if let Err(e) = activate {
            if let Err(undo) = dm.device_remove(&id, DmOptions::default()) {
                tracing::warn!(device = name, error = %undo, "removing a half-created dm device");
            }
            return Err(e);
        }
        Ok(info.device().minor)
    }

    fn remove_dm(&self, name: &str) -> Result<(), DevError> {
        let dm = self.dm(name)?;
        let dm_name = DmName::new(name).map_err(|e| dm_err("naming", name, &e))?;
        match dm.device_remove(&DevId::Name(dm_name), DmOptions::default()) {
            Ok(_) => Ok(()),
            Err(e) if errno_of(&e) == Some(libc::ENXIO) => Ok(()),
            Err(e) => Err(dm_err("removing", name, &e)),
        }
    }

    fn list_dm(&self) -> Result<Vec<(String, u32)>, DevError> {
        let Ok(dm) = &self.dm else {
            return Ok(Vec::new());
        };
        let list = dm.list_devices().map_err(|e| dm_err("listing", "*", &e))?;
        Ok(list
            .into_iter()
            .map(|(name, dev, _)| (name.to_string(), dev.minor))
            .collect())
    }
}
