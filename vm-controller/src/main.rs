//! `banger-vm-controller`: Owns VM records and Firecracker processes on one host.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = banger_vm_controller::Args::parse();
    let common = args.common.clone();
    banger_bus::runtime::service_main("vm-controller", &common, |ctx, shutdown| {
        banger_vm_controller::run(ctx, args, shutdown)
    })
}
