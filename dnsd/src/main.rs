//! `banger-dnsd`: Serves <name>.vm records for running VMs.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = banger_dnsd::Args::parse();
    let common = args.common.clone();
    banger_bus::runtime::service_main("dnsd", &common, |ctx, shutdown| {
        banger_dnsd::run(ctx, args, shutdown)
    })
}
