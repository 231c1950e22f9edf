//! Command-line flags: Firecracker's own (the ones banger passes, and a few more accepted and
//! ignored so a real Firecracker command line works), plus the simulator's `--agent-bin` and
//! `--fault`.

use std::path::PathBuf;

use clap::Parser;

use crate::faults::Fault;

/// What `--version` prints: this is not Firecracker.
pub(crate) const VERSION_LINE: &str = concat!(
    "banger-fcsim ",
    env!("CARGO_PKG_VERSION"),
    " (Firecracker SIMULATOR: no guest kernel runs)"
);

/// The Firecracker simulator: serves Firecracker's API on `--api-sock`; InstanceStart runs the
/// real banger-agent on the host instead of booting a guest kernel.
#[derive(Debug, Parser)]
#[command(name = "banger-fcsim", version = VERSION_LINE)]
pub(crate) struct Args {
    /// The API Unix socket to create and serve (Firecracker's `--api-sock`).
    #[arg(long, value_name = "PATH")]
    pub(crate) api_sock: PathBuf,
    /// Instance id (banger passes the VM name).
    #[arg(long, value_name = "NAME", default_value = "anonymous-instance")]
    pub(crate) id: String,
    /// Log file (Firecracker's `--log-path`); stderr when absent.
    #[arg(long, value_name = "PATH")]
    pub(crate) log_path: Option<PathBuf>,
    /// Log level: Error, Warning, Info, Debug, Trace or Off (case-insensitive).
    #[arg(long, value_name = "LEVEL", default_value = "Info")]
    pub(crate) level: String,
    /// Print the level on each log line.
    #[arg(long)]
    pub(crate) show_level: bool,
    /// Print the source location on each log line (accepted; the simulator prints its module).
    #[arg(long)]
    pub(crate) show_log_origin: bool,
    /// Accepted and ignored (no guest kernel writes the boot-timer port).
    #[arg(long)]
    pub(crate) boot_timer: bool,
    /// Accepted and ignored (no seccomp filter is installed by the simulator).
    #[arg(long)]
    pub(crate) no_seccomp: bool,
    /// Accepted and ignored.
    #[arg(long, value_name = "PATH")]
    pub(crate) seccomp_filter: Option<PathBuf>,
    /// Accepted and ignored (configure metrics with `PUT /metrics`).
    #[arg(long, value_name = "PATH")]
    pub(crate) metrics_path: Option<PathBuf>,
    /// Accepted and ignored.
    #[arg(long, value_name = "MODULE")]
    pub(crate) module: Option<String>,
    /// Accepted and ignored (Firecracker's jailer start-time flags).
    #[arg(long, value_name = "US")]
    pub(crate) start_time_us: Option<u64>,
    /// Accepted and ignored.
    #[arg(long, value_name = "US")]
    pub(crate) start_time_cpu_us: Option<u64>,
    /// Accepted and ignored.
    #[arg(long, value_name = "US")]
    pub(crate) parent_cpu_time_us: Option<u64>,
    /// Largest accepted request body, bytes (Firecracker's default 51200).
    #[arg(long, value_name = "BYTES", default_value_t = 51_200)]
    pub(crate) http_api_max_payload_size: usize,
    /// SIMULATOR ONLY: the guest agent binary (default: `banger-agent` beside this executable,
    /// else on PATH).
    #[arg(long, value_name = "PATH")]
    pub(crate) agent_bin: Option<PathBuf>,
    /// SIMULATOR ONLY: a fault to inject, repeatable: ignore-ctrl-alt-del, slow-boot=MS,
    /// crash-after=MS, leave-socket, refuse-api. More per VM id in BANGER_FCSIM_FAULTS.
    #[arg(long = "fault", value_name = "FAULT")]
    pub(crate) faults: Vec<Fault>,
}

/// The agent binary: `--agent-bin`, else `banger-agent` beside this executable, else the name
/// looked up on PATH at spawn time.
pub(crate) fn agent_bin(flag: Option<&PathBuf>) -> PathBuf {
    flag.cloned()
        .unwrap_or_else(|| beside_this_executable("banger-agent"))
}

/// Program `name` beside this executable, else `name` (looked up on PATH at spawn time).
pub(crate) fn beside_this_executable(name: &str) -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        let beside = dir.join(name);
        if beside.is_file() {
            return beside;
        }
    }
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_controllers_command_line_parses() {
        let a = Args::try_parse_from([
            "banger-fcsim",
            "--api-sock",
            "/run/x/api.sock",
            "--id",
            "web",
            "--log-path",
            "/run/x/vmm.log",
            "--level",
            "Info",
            "--show-level",
            "--show-log-origin",
            "--boot-timer",
            "--no-seccomp",
            "--fault",
            "slow-boot=20",
            "--fault",
            "leave-socket",
        ]);
        let a = match a {
            Ok(a) => a,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(a.id, "web");
        assert_eq!(a.faults, vec![Fault::SlowBoot(20), Fault::LeaveSocket]);
        assert!(Args::try_parse_from(["banger-fcsim", "--id", "x"]).is_err());
        assert!(
            Args::try_parse_from(["banger-fcsim", "--api-sock", "/a", "--fault", "nope"]).is_err()
        );
    }
}
