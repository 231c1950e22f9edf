//! `banger-bench`: banger's numbers as a user sees them — the real `banger` CLI against a real
//! stack (`banger up --vmm sim` in a private network namespace, the e2e fixture) — each beside
//! a reference measured in the same run. The hypervisor is the SIMULATOR.

mod args;
mod fixture;
mod header;
mod report;
mod rows;
mod spans;
mod stats;
mod table;

use clap::Parser as _;

fn main() {
    let args = args::Args::parse();
    let settings = args.settings();
    let machine = header::Machine::read();
    let header = header::text(&settings, &machine);
    print!("{header}");
    let rows = rows::all(&settings);
    let load_at_end = header::load_average();
    let table = table::render(&rows);
    let footer = format!("\nload average (1/5/15 min) at the end: {load_at_end}\n");
    println!();
    print!("{table}{footer}");
    if let Some(dir) = &settings.out {
        let json = report::to_json(&rows, &machine, &settings.json(), &load_at_end);
        let markdown = format!("{header}\n{table}{footer}");
        match report::write(dir, &machine.file_stem(), &markdown, &json) {
            Ok(paths) => eprintln!("wrote {paths}"),
            Err(e) => {
                eprintln!("banger-bench: {e}");
                std::process::exit(1);
            }
        }
    }
}
