//! `banger-netd`: Owns the host bridge, one tap per VM, address leases and NAT.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = banger_netd::Args::parse();
    let common = args.common.clone();
    banger_bus::runtime::service_main("netd", &common, |ctx, shutdown| {
        banger_netd::run(ctx, args, shutdown)
    })
}
