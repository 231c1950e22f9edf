//! `GET /healthz`: how the guest is, read from `/proc` and `statvfs("/")`.
//!
//! Everything here is a few small reads of kernel-generated files; the handler still runs it on
//! the blocking pool so a wedged `/proc` never stalls the runtime.

use banger_proto::agent::Health;

/// Reading a health source failed.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    /// A `/proc` file could not be read.
    #[error("reading {path}")]
    Read {
        /// The file.
        path: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A `/proc` file did not have the expected shape.
    #[error("parsing {path}: {what}")]
    Parse {
        /// The file.
        path: &'static str,
        /// What was missing or malformed.
        what: &'static str,
    },
    /// The hostname could not be read.
    #[error("reading the hostname")]
    Hostname(#[source] nix::Error),
    /// `statvfs("/")` failed.
    #[error("statvfs on /")]
    Statvfs(#[source] nix::Error),
}

const UPTIME: &str = "/proc/uptime";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
const LOADAVG: &str = "/proc/loadavg";
const MEMINFO: &str = "/proc/meminfo";

/// Gathers a [`Health`] from the running kernel (blocking).
// The statvfs field types are u64 on 64-bit Linux but narrower on 32-bit targets.
#[allow(
    clippy::useless_conversion,
    reason = "fsblkcnt_t and c_ulong are u32 on 32-bit targets"
)]
pub fn gather() -> Result<Health, HealthError> {
    let uptime_secs = parse_uptime(&read(UPTIME)?)?;
    let boot_id = read(BOOT_ID)?.trim().to_owned();
    let load = parse_loadavg(&read(LOADAVG)?)?;
    let (mem_total_bytes, mem_available_bytes) = parse_meminfo(&read(MEMINFO)?)?;
    let fs = nix::sys::statvfs::statvfs("/").map_err(HealthError::Statvfs)?;
    let frag = u64::from(fs.fragment_size());
    Ok(Health {
        status: "ok".to_owned(),
        uptime_secs,
        hostname: hostname()?,
        agent_version: crate::VERSION.to_owned(),
        boot_id,
        load,
        mem_total_bytes,
        mem_available_bytes,
        rootfs_total_bytes: u64::from(fs.blocks()).saturating_mul(frag),
        rootfs_free_bytes: u64::from(fs.blocks_available()).saturating_mul(frag),
    })
}

/// The kernel's hostname (lossy UTF-8).
pub fn hostname() -> Result<String, HealthError> {
    let h = nix::unistd::gethostname().map_err(HealthError::Hostname)?;
    Ok(h.to_string_lossy().into_owned())
}

fn read(path: &'static str) -> Result<String, HealthError> {
    std::fs::read_to_string(path).map_err(|source| HealthError::Read { path, source })
}

/// `/proc/uptime`: "12345.67 23456.78" — seconds since boot, then idle seconds.
fn parse_uptime(text: &str) -> Result<f64, HealthError> {
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .ok_or(HealthError::Parse {
            path: UPTIME,
            what: "first field is not a number of seconds",
        })
}

/// `/proc/loadavg`: "0.10 0.20 0.30 1/123 4567".
fn parse_loadavg(text: &str) -> Result<[f64; 3], HealthError> {
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().ok().filter(|v| v.is_finite()));
    match (it.next(), it.next(), it.next()) {
        (Some(Some(a)), Some(Some(b)), Some(Some(c))) => Ok([a, b, c]),
        _ => Err(HealthError::Parse {
            path: LOADAVG,
            what: "the first three fields are not load averages",
        }),
    }
}

/// `/proc/meminfo`: `MemTotal` and `MemAvailable`, in bytes (the file says kB, meaning KiB).
fn parse_meminfo(text: &str) -> Result<(u64, u64), HealthError> {
    let field = |name: &str| {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            let kib = rest.split_whitespace().next()?.parse::<u64>().ok()?;
            Some(kib.saturating_mul(1024))
        })
    };
    match (field("MemTotal"), field("MemAvailable")) {
        (Some(total), Some(avail)) => Ok((total, avail)),
        _ => Err(HealthError::Parse {
            path: MEMINFO,
            what: "MemTotal or MemAvailable missing",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_parse() {
        assert!((parse_uptime("350735.47 234388.90\n").unwrap() - 350_735.47).abs() < 1e-6);
        assert!(parse_uptime("").is_err());
        assert_eq!(
            parse_loadavg("0.10 0.20 1.50 1/123 4567\n").unwrap(),
            [0.10, 0.20, 1.50]
        );
        assert!(parse_loadavg("0.10 x").is_err());
        let mem = "MemTotal:       16333884 kB\nMemFree:  1 kB\nMemAvailable:   8000000 kB\n";
        assert_eq!(
            parse_meminfo(mem).unwrap(),
            (16_333_884 * 1024, 8_000_000 * 1024)
        );
        assert!(parse_meminfo("MemTotal: 1 kB\n").is_err());
    }

    #[test]
    fn gather_reads_this_kernel() {
        let h = gather().unwrap();
        assert_eq!(h.status, "ok");
        assert!(h.uptime_secs > 0.0);
        assert_eq!(h.boot_id.len(), 36, "{}", h.boot_id);
        assert!(h.mem_total_bytes >= h.mem_available_bytes && h.mem_total_bytes > 0);
        assert!(h.rootfs_total_bytes >= h.rootfs_free_bytes && h.rootfs_total_bytes > 0);
    }
}
