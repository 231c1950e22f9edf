//! `banger`: the command-line tool.

use std::process::ExitCode;

fn main() -> ExitCode {
    let (cli, command) = banger_cli::parse();
    banger_cli::main(cli, &command)
}
