//! The lines above the table: what ran, on what machine, with which build, under what load.

use std::process::Command;

use serde_json::{Value, json};

use crate::args::Settings;

/// The build profile this binary (and so, by `cargo build`'s layout, the `banger` beside it)
/// was built with.
pub(crate) fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// The machine a run happened on.
#[derive(Debug, Clone)]
pub(crate) struct Machine {
    /// Host name.
    pub(crate) host: String,
    /// `uname -srm`.
    pub(crate) kernel: String,
    /// The first `model name` of `/proc/cpuinfo`.
    pub(crate) cpu: String,
    /// CPUs this process may use.
    pub(crate) cpus: usize,
    /// `MemTotal` in bytes.
    pub(crate) memory: u64,
    /// UTC start time, `2026-11-26 03:10 UTC`.
    pub(crate) started: String,
    /// The 1-minute load average at the start.
    pub(crate) load_at_start: String,
    /// `$TMPDIR`'s file system, `ext4 without a journal (/dev/vda)`.
    pub(crate) tmp_fs: String,
}

impl Machine {
    /// Reads it now.
    pub(crate) fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Self {
            host: command_line("hostname", &[]),
            kernel: command_line("uname", &["-srm"]),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|v| v.split_once(':'))
                .map_or_else(|| "?".to_owned(), |(_, v)| v.trim().to_owned()),
            cpus: std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
            memory: mem_total(&meminfo).unwrap_or(0),
            started: command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            load_at_start: load_average(),
            tmp_fs: tmp_file_system(),
        }
    }

    /// `2026-11-26-0310-<host>`: the results files' name.
    pub(crate) fn file_stem(&self) -> String {
        let stamp: String = self
            .started
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '-' || *c == ' ')
            .collect::<String>()
            .trim()
            .replace(' ', "-");
        let host: String = self
            .host
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        format!("{stamp}-{host}")
    }

    /// The machine as JSON.
    pub(crate) fn json(&self) -> Value {
        json!({
            "host": self.host,
            "kernel": self.kernel,
            "cpu": self.cpu,
            "cpus": self.cpus,
            "memory_bytes": self.memory,
            "started": self.started,
            "load_at_start": self.load_at_start,
            "tmp_fs": self.tmp_fs,
        })
    }
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn mem_total(meminfo: &str) -> Option<u64> {
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// `$TMPDIR`'s file system type and device, and for ext4 whether it has a journal (a jbd2
/// journal of a device shows as `/proc/fs/jbd2/<device>-<inode>`).
fn tmp_file_system() -> String {
    let tmp = std::env::temp_dir();
    let found = command_line(
        "findmnt",
        &["-n", "-o", "FSTYPE,SOURCE", "-T", &tmp.to_string_lossy()],
    );
    let mut words = found.split_whitespace();
    let (Some(kind), Some(source)) = (words.next(), words.next()) else {
        return "?".to_owned();
    };
    let journal = std::fs::read_dir("/proc/fs/jbd2")
        .map(|entries| {
            entries.filter_map(Result::ok).any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{}-", device_name(source)))
            })
        })
        .unwrap_or(false);
    describe_fs(kind, source, journal)
}

/// `/dev/vda` → `vda`.
fn device_name(source: &str) -> &str {
    source.rsplit('/').next().unwrap_or(source)
}

/// `ext4 without a journal (/dev/vda)`; only ext4 is said to have a journal or not.
fn describe_fs(kind: &str, source: &str, journal: bool) -> String {
    match (kind, journal) {
        ("ext4", true) => format!("ext4 with a journal ({source})"),
        ("ext4", false) => format!("ext4 without a journal ({source})"),
        _ => format!("{kind} ({source})"),
    }
}

/// `/proc/loadavg`'s three averages, `1.52 1.87 1.90`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

/// The header: the simulator warning, build profile, machine, settings.
pub(crate) fn text(settings: &Settings, machine: &Machine) -> String {
    let scale: Vec<String> = settings.scale.iter().map(ToString::to_string).collect();
    let list: Vec<String> = settings.list_vms.iter().map(ToString::to_string).collect();
    let groups: Vec<&str> = settings.groups.iter().map(|g| g.name()).collect();
    format!(
        "# banger-bench\n\n\
         - hypervisor: SIMULATOR (fcsim; no guest kernel boots, so start/stop exclude any boot)\n\
         - build profile: {}\n\
         - machine: {} ({}), {} CPUs, {} memory; {} ({})\n\
         - load average (1/5/15 min) at the start: {} — the CPUs are shared with other work\n\
         - groups: {}; repetitions: {}; scale: {} (serial reference up to {}); vm list: {}; \
           footprint at {} VMs\n\
         - every CLI command and reference runs through `ip netns exec` into its stack's \
           namespace; the latency stacks export spans over OTLP (the shares in the notes)\n\
         - every stack's directory (state, runtime files, image) is a file system made for it, \
           loop-mounted: ext4 with a journal for sparse copy, xfs for reflink; one scale row \
           repeats the largest K on $TMPDIR's, {}\n",
        profile(),
        machine.kernel,
        machine.cpu,
        machine.cpus,
        crate::stats::format_bytes(machine.memory),
        machine.host,
        machine.started,
        machine.load_at_start,
        groups.join(","),
        settings.reps,
        scale.join(","),
        settings.serial_max,
        list.join(","),
        settings.footprint_vms,
        machine.tmp_fs,
    )
}

/// The first line `program args` prints, or `?`.
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_name_is_the_start_time_and_the_host() {
        let m = Machine {
            host: "lab.example".to_owned(),
            kernel: "Linux 6.1 x86_64".to_owned(),
            cpu: "?".to_owned(),
            cpus: 2,
            memory: 24 << 30,
            started: "2026-11-26 03:10 UTC".to_owned(),
            load_at_start: "1.0 1.0 1.0".to_owned(),
            tmp_fs: "ext4 without a journal (/dev/vda)".to_owned(),
        };
        assert_eq!(m.file_stem(), "2026-11-26-0310-lab-example");
        assert_eq!(m.json()["memory_bytes"], 24u64 << 30);
        assert_eq!(
            mem_total("MemTotal:       24567890 kB\nMemFree: 1 kB\n"),
            Some(24_567_890 * 1024)
        );
    }

    #[test]
    fn only_ext4_is_said_to_have_a_journal_or_not() {
        assert_eq!(device_name("/dev/vda"), "vda");
        assert_eq!(
            describe_fs("ext4", "/dev/vda", false),
            "ext4 without a journal (/dev/vda)"
        );
        assert_eq!(
            describe_fs("ext4", "/dev/sda2", true),
            "ext4 with a journal (/dev/sda2)"
        );
        assert_eq!(describe_fs("tmpfs", "tmpfs", false), "tmpfs (tmpfs)");
    }
}
