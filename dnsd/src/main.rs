//! `banger-dnsd`: Serves <name>.vm records for running VMs.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = banger_dnsd::Args::parse();
    if let Err(e) = banger_dnsd::preflight(&args) {
        eprintln!("dnsd: error: {}", banger_bus::runtime::chain(&e));
        return ExitCode::FAILURE;
    }
    let common = args.common.clone();
    banger_bus::runtime::service_main("dnsd", &common, |ctx, shutdown| {
        banger_dnsd::run(ctx, args, shutdown)
    })
}
