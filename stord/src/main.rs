//! `banger-stord`: Owns base images, copy-on-write VM roots and work disks.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = banger_stord::Args::parse();
    let common = args.common.clone();
    banger_bus::runtime::service_main("stord", &common, |ctx, shutdown| {
        banger_stord::run(ctx, args, shutdown)
    })
}
