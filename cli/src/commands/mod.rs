//! One module per command group.

pub mod completions;
pub mod doctor;
pub mod doctor_exposure;
pub mod doctor_forward;
pub mod down;
pub mod events;
pub mod image;
pub mod image_build;
pub mod init;
pub mod ping;
pub mod status;
pub mod tui;
pub mod up;
pub mod vm;

use crate::App;

/// The commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Start the local banger stack on this machine (NATS and every service; its files are
    /// root-only, and what an earlier version left open is repaired)
    ///
    /// Each process's identity (pid and start time) is recorded in
    /// <runtime-dir>/stack/<name>.pid and its output goes to <state-dir>/logs/<name>.log. If a
    /// service does not come up, everything this run started is stopped again, and the exit
    /// status and last log lines of the one that failed are shown.
    Up(up::UpArgs),
    /// Stop the local banger stack (VMs, services and the NATS it started)
    ///
    /// Only this stack's processes are stopped: a process counts when its pid and start time
    /// match its pid file and its command line names this stack's config, so a pid reused by
    /// another process (another stack's service included) is never signalled.
    Down(down::DownArgs),
    /// Write a stack's bus credentials and nats-server config once, start nothing (for
    /// compose.yaml and service managers)
    Init(init::InitArgs),
    /// Print a shell completion script (bash, zsh, fish, ...)
    Completions(completions::CompletionsArgs),
    /// Write man pages into a directory
    Man(completions::ManArgs),
    /// Check whether this host is ready to run VMs and that no other user can reach banger's
    /// files and sockets, with a fix for each problem
    Doctor(doctor::DoctorArgs),
    /// Show every banger service on every host, as the NATS service API reports them
    Status(status::StatusArgs),
    /// Create, run and inspect VMs
    #[command(subcommand)]
    Vm(vm::VmCommand),
    /// Watch VM lifecycle events as they happen
    Events(events::EventsArgs),
    /// Build, register, verify and inspect the images VMs boot from
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Check that a service answers on the bus (exit 0) or not (exit 4), for health checks
    Ping(ping::PingArgs),
    /// A live terminal view of every VM: start, stop, create, exec and ssh from one screen
    Tui(tui::TuiArgs),
}

/// Runs `cmd` and returns the exit code.
pub async fn dispatch(app: &App, cmd: Command) -> anyhow::Result<u8> {
    match cmd {
        Command::Status(a) => status::run(app, a).await,
        Command::Vm(c) => vm::run(app, c).await,
        Command::Image(c) => image::run(app, c).await,
        Command::Events(a) => events::run(app, a).await,
        Command::Ping(a) => ping::run(app, a).await,
        // Handled before connecting (see `crate::run`): they manage the bus itself.
        Command::Up(_)
        | Command::Down(_)
        | Command::Init(_)
        | Command::Doctor(_)
        | Command::Tui(_)
        | Command::Completions(_)
        | Command::Man(_) => Ok(crate::exit::USAGE),
    }
}
