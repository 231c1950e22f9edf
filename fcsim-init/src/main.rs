//! `banger-fcsim-init`: the simulated guest's init (see the library's documentation).

use std::process::ExitCode;

fn main() -> ExitCode {
    let plan = match banger_fcsim_init::Plan::from_args(std::env::args_os().skip(1)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: {e}", banger_fcsim_init::NAME);
            eprintln!("{}", banger_fcsim_init::USAGE);
            return ExitCode::from(2);
        }
    };
    let code = banger_fcsim_init::run(&plan);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
