//! `banger`: the command-line tool.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    banger_cli::main(banger_cli::Cli::parse())
}
