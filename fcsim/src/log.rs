//! The VMM log (Firecracker's `--log-path` / `PUT /logger`), and the serial console.
//!
//! Log lines look like Firecracker's (`<time> [<id>:<thread>:<LEVEL>] message`) except that the
//! thread part always says `fcsim-SIMULATOR`, so nobody mistakes a simulated run for a real
//! one. Without a log path the log goes to stderr (which banger redirects to `vmm.log`).
//!
//! The serial console is stdout (banger redirects it to `serial.log`); every line the simulated
//! guest prints there starts with `[SIMULATED GUEST]`.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

/// Log levels, most severe first (Firecracker's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Off,
    Error,
    Warning,
    Info,
    Debug,
    Trace,
}

impl Level {
    /// Parses Firecracker's level names, case-insensitively (`Warn` too).
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s.to_ascii_lowercase().as_str() {
            "off" => Self::Off,
            "error" => Self::Error,
            "warning" | "warn" => Self::Warning,
            "info" => Self::Info,
            "debug" => Self::Debug,
            "trace" => Self::Trace,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Off => "OFF",
            Self::Error => "ERROR",
            Self::Warning => "WARN",
            Self::Info => "INFO",
            Self::Debug => "DEBUG",
            Self::Trace => "TRACE",
        }
    }
}

struct Logger {
    id: String,
    level: Level,
    show_level: bool,
    file: Option<File>,
}

static LOGGER: OnceLock<Mutex<Logger>> = OnceLock::new();

fn logger() -> &'static Mutex<Logger> {
    LOGGER.get_or_init(|| {
        Mutex::new(Logger {
            id: "anonymous-instance".to_owned(),
            level: Level::Info,
            show_level: false,
            file: None,
        })
    })
}

/// Sets the instance id, level and level display.
pub(crate) fn configure(id: &str, level: Level, show_level: bool) {
    let mut l = logger()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    l.id = id.to_owned();
    l.level = level;
    l.show_level = show_level;
}

/// Sends the log to `path` from now on (opened for append, created if missing, as Firecracker
/// does for a regular file).
pub(crate) fn set_path(path: &Path) -> std::io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let mut l = logger()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    l.file = Some(file);
    Ok(())
}

/// Changes the level (from `PUT /logger`).
pub(crate) fn set_level(level: Level, show_level: Option<bool>) {
    let mut l = logger()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    l.level = level;
    if let Some(s) = show_level {
        l.show_level = s;
    }
}

/// Writes one log line at `level`.
pub(crate) fn write(level: Level, msg: &str) {
    let mut l = logger()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if level == Level::Off || level > l.level {
        return;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let lvl = if l.show_level {
        format!(":{}", level.name())
    } else {
        String::new()
    };
    let line = format!(
        "{}.{:09} [{}:fcsim-SIMULATOR{lvl}] {msg}\n",
        now.as_secs(),
        now.subsec_nanos(),
        l.id
    );
    // A log that cannot be written is not worth failing a request over (Firecracker counts it
    // in a metric and moves on).
    match l.file.as_mut() {
        Some(f) => {
            let _ = f.write_all(line.as_bytes());
        }
        None => {
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }
}

pub(crate) fn error(msg: &str) {
    write(Level::Error, msg);
}

pub(crate) fn warn(msg: &str) {
    write(Level::Warning, msg);
}

pub(crate) fn info(msg: &str) {
    write(Level::Info, msg);
}

pub(crate) fn debug(msg: &str) {
    write(Level::Debug, msg);
}

/// Prints one line on the serial console (stdout), marked as coming from the simulated guest.
pub(crate) fn serial(msg: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "[SIMULATED GUEST] {msg}");
    let _ = out.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_like_firecracker() {
        assert_eq!(Level::parse("Info"), Some(Level::Info));
        assert_eq!(Level::parse("WARNING"), Some(Level::Warning));
        assert_eq!(Level::parse("off"), Some(Level::Off));
        assert_eq!(Level::parse("loud"), None);
        assert!(Level::Error < Level::Debug);
    }
}
