//! `vm.logs`: a window of the serial console or the hypervisor log.
//!
//! From `offset` when given (a follower passes back `next_offset`), else the last `max_bytes`.
//! Reading is bounded: [`MAX_LOG_READ`] per request whatever the caller asks.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;

use banger_proto::ErrorCode;
use banger_proto::vm::{LogSource, LogsReply, LogsRequest};

use crate::controller::Controller;
use crate::error::{Coded, LookupError};

/// The most a request returns: a bus message stays well under NATS's 1 MiB default payload.
pub const MAX_LOG_READ: u64 = 512 * 1024;

/// What a request without `max_bytes` returns.
pub const DEFAULT_LOG_READ: u64 = 64 * 1024;

/// Why reading a log failed.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The VM could not be read.
    #[error(transparent)]
    Lookup(#[from] LookupError),
    /// The log file could not be opened.
    #[error("opening {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The log file could not be read.
    #[error("reading {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The read did not finish.
    #[error("reading the log")]
    Task(#[source] tokio::task::JoinError),
}

impl Coded for LogsError {
    fn code(&self) -> ErrorCode {
        match self {
            Self::Lookup(e) => e.code(),
            Self::Open { .. } | Self::Read { .. } | Self::Task(_) => ErrorCode::Internal,
        }
    }
}

impl Controller {
    /// Reads a VM's log.
    pub async fn logs(&self, req: LogsRequest) -> Result<LogsReply, LogsError> {
        // The record must exist; logs of a deleted VM are gone with it.
        self.record(&req.id).await?;
        let paths = self.paths(&req.id);
        let path = match req.source {
            LogSource::Serial => paths.serial_log,
            LogSource::Vmm => paths.vmm_log,
        };
        let max = req.max_bytes.unwrap_or(DEFAULT_LOG_READ).min(MAX_LOG_READ);
        let offset = req.offset;
        tokio::task::spawn_blocking(move || read_window(path, offset, max))
            .await
            .map_err(LogsError::Task)?
    }
}

fn read_window(path: PathBuf, offset: Option<u64>, max: u64) -> Result<LogsReply, LogsError> {
    let mut f = match std::fs::File::open(&path) {
        Ok(f) => f,
        // Never started: an empty log.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(LogsReply {
                data: String::new(),
                next_offset: offset.unwrap_or(0),
            });
        }
        Err(source) => return Err(LogsError::Open { path, source }),
    };
    let read = |source| LogsError::Read {
        path: path.clone(),
        source,
    };
    let len = f.metadata().map_err(read)?.len();
    let start = match offset {
        Some(o) => o.min(len),
        None => len.saturating_sub(max),
    };
    f.seek(SeekFrom::Start(start)).map_err(read)?;
    let mut buf = Vec::new();
    f.take(max).read_to_end(&mut buf).map_err(read)?;
    let next_offset = start + u64::try_from(buf.len()).unwrap_or(0);
    Ok(LogsReply {
        data: String::from_utf8_lossy(&buf).into_owned(),
        next_offset,
    })
}

#[cfg(test)]
impl crate::error::Samples for LogsError {
    fn samples() -> Vec<Self> {
        use crate::error::samples::{io_error, join_error};
        let mut all: Vec<Self> = LookupError::samples()
            .into_iter()
            .map(Self::Lookup)
            .collect();
        all.push(Self::Open {
            path: "/var/log/serial.log".into(),
            source: io_error(),
        });
        all.push(Self::Read {
            path: "/var/log/serial.log".into(),
            source: io_error(),
        });
        all.push(Self::Task(join_error()));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_follow_from_an_offset_or_read_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("serial.log");
        std::fs::write(&p, b"0123456789").unwrap();
        let tail = read_window(p.clone(), None, 4).unwrap();
        assert_eq!((tail.data.as_str(), tail.next_offset), ("6789", 10));
        let from = read_window(p.clone(), Some(2), 3).unwrap();
        assert_eq!((from.data.as_str(), from.next_offset), ("234", 5));
        let past = read_window(p.clone(), Some(99), 3).unwrap();
        assert_eq!((past.data.as_str(), past.next_offset), ("", 10));
        let missing = read_window(dir.path().join("nope"), None, 3).unwrap();
        assert_eq!(missing.next_offset, 0);
    }
}
