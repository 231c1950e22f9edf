//! dnsd's bus operations, one file each: parse the request, read the current zone snapshot,
//! reply. None of them takes a lock that DNS queries or updates use.

pub mod lookup;
pub mod records;
pub mod status;
