//! banger-fcsim: a Firecracker simulator. It takes Firecracker's flags and serves its API on
//! the API socket; `InstanceStart` makes a guest network namespace wired to the real tap, runs
//! the real guest agent in it and serves hybrid vsock, but no guest kernel runs. See README.md.

mod api;
mod bootargs;
mod cli;
mod faults;
mod guest;
mod log;
mod run;
mod vmm;

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    let args = cli::Args::parse();
    // One runtime thread. (The agent is spawned by the guest thread, see guest::netns, which
    // is its PR_SET_PDEATHSIG parent and lives until the guest shuts down.)
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("banger-fcsim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run::run(args))
}
