//! The kernel and tool boundary: loop devices, device-mapper, file primitives and e2fsprogs.

pub mod devmapper;
pub mod files;
pub mod loopdev;
pub mod mount;
pub mod tool;
