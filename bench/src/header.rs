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
           namespace; the latency stacks export spans over OTLP (the shares in the notes)\n",
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
        };
        assert_eq!(m.file_stem(), "2026-11-26-0310-lab-example");
        assert_eq!(m.json()["memory_bytes"], 24u64 << 30);
        assert_eq!(
            mem_total("MemTotal:       24567890 kB\nMemFree: 1 kB\n"),
            Some(24_567_890 * 1024)
        );
    }
}
