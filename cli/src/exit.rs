//! Exit codes and how errors map to them.

use banger_bus::RequestError;
use banger_proto::ErrorCode;

/// Everything worked.
pub const OK: u8 = 0;
/// The command failed.
pub const FAILURE: u8 = 1;
/// The command line was wrong (clap uses 2 as well).
pub const USAGE: u8 = 2;
/// Some targets of a batch failed, others succeeded.
pub const PARTIAL: u8 = 3;
/// The target was not found, or a service was unavailable.
pub const NOT_FOUND_OR_UNAVAILABLE: u8 = 4;

/// The exit code for an error code.
pub fn for_code(code: ErrorCode) -> u8 {
    match code {
        ErrorCode::InvalidArgument => USAGE,
        ErrorCode::NotFound | ErrorCode::Unavailable | ErrorCode::Timeout => {
            NOT_FOUND_OR_UNAVAILABLE
        }
        _ => FAILURE,
    }
}

/// The exit code for an error that ended the command.
pub fn code_of(e: &anyhow::Error) -> u8 {
    if let Some(r) = e.downcast_ref::<RequestError>() {
        return for_code(r.code());
    }
    if let Some(a) = e.downcast_ref::<banger_proto::ApiError>() {
        return for_code(a.code);
    }
    if e.chain().any(|c| {
        matches!(
            c.downcast_ref::<banger_bus::BusError>(),
            Some(banger_bus::BusError::Connect { .. })
        )
    }) {
        return NOT_FOUND_OR_UNAVAILABLE;
    }
    FAILURE
}
