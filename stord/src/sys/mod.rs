//! The kernel and tool boundary: loop devices, device-mapper, file primitives and e2fsprogs.

pub mod devmapper;
pub mod files;
pub use banger_loopdev as loopdev;
pub mod mount;
pub mod tool;
