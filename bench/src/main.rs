//! `banger-bench`: banger's numbers as a user sees them — the real `banger` CLI against a real
//! stack (`banger up --vmm sim` in a private network namespace, the e2e fixture) — each beside
//! a reference measured in the same run. The hypervisor is the SIMULATOR.

mod args;
mod fixture;
mod header;
mod report;
mod rows;
mod stats;
mod table;

use clap::Parser as _;

fn main() {
    let args = args::Args::parse();
    let settings = args.settings();
    // Before anything else: this may re-execute the binary.
    let ready = fixture::preflight().and_then(|()| fixture::binaries_built());
    let header = header::text(&settings);
    print!("{header}");
    let rows = rows::all(&settings, ready);
    let table = table::render(&rows);
    println!();
    print!("{table}");
    if let Some(dir) = &args.out {
        match report::write(dir, &format!("{header}\n{table}"), &rows) {
            Ok(paths) => eprintln!("wrote {paths}"),
            Err(e) => {
                eprintln!("banger-bench: {e}");
                std::process::exit(1);
            }
        }
    }
}
