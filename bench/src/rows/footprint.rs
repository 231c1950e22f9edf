//! Footprint: resident memory (`VmRSS` from `/proc/<pid>/status`) of each process of the stack
//! (nats-server, vm-controller, stord, netd, dnsd, from their pid files) idle, and with K VMs
//! running; and of one simulated VM (the `banger-fcsim` process the controller runs per VM).

use crate::fixture::{Bench, rss_bytes};
use crate::table::{Quantity, Row};

use super::scale::in_batches;

/// VMs created, stopped or deleted at once.
const BATCH: usize = 25;

/// The stack's processes by name and pid, from `<runtime>/stack/<name>.pid`, sorted by name.
fn services(bench: &Bench) -> Vec<(String, i32)> {
    let dir = bench.stack.dir.join("run/stack");
    let mut out: Vec<(String, i32)> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| {
                let path = e.ok()?.path();
                let name = path.file_name()?.to_str()?.strip_suffix(".pid")?.to_owned();
                let pid = banger_e2e::running_from_pid_file(&path)?;
                Some((name, pid))
            })
            .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// One row per service (K VMs running against idle), one for a simulated VM.
pub(crate) fn measure(bench: &Bench, k: usize) -> Vec<Row> {
    let services = services(bench);
    if services.is_empty() {
        return vec![Row::skipped("footprint", "no pid files under run/stack")];
    }
    let idle: Vec<Option<u64>> = services.iter().map(|(_, pid)| rss_bytes(*pid)).collect();
    let names: Vec<String> = (0..k).map(|i| format!("fp{i}")).collect();
    // In batches: 100 CLIs at once on 2 busy CPUs make some miss the controller's discovery
    // window (the scale rows show that); here only the VMs running at the end matter.
    let create_errors = in_batches(bench, &names, &["vm", "create", "{}"], BATCH);
    let sims: Vec<u64> = bench
        .simulator_pids()
        .into_iter()
        .filter_map(rss_bytes)
        .collect();
    let busy: Vec<Option<u64>> = services.iter().map(|(_, pid)| rss_bytes(*pid)).collect();
    let mut rows: Vec<Row> = services
        .iter()
        .zip(idle.iter().zip(&busy))
        .map(|((name, _), (idle, busy))| {
            let what = format!("RSS {name}, {k} VMs running (ref: idle)");
            match busy {
                Some(b) => {
                    Row::quantities(what, Quantity::Bytes(*b), None, idle.map(Quantity::Bytes))
                }
                None => Row::skipped(what, "the process is gone"),
            }
        })
        .collect();
    let sim_total: u64 = sims.iter().sum();
    let what = "RSS of one simulated VM (banger-fcsim; no ref)";
    rows.push(match u64::try_from(sims.len()) {
        Ok(n) if n > 0 => Row::quantities(what, Quantity::Bytes(sim_total / n), None, None)
            .with_note(format!(
                "mean of {n} simulator processes; all {n}: {}",
                Quantity::Bytes(sim_total).format()
            )),
        _ => Row::skipped(what, "no simulator process found"),
    });
    if let Some(first) = create_errors.first() {
        rows = rows
            .into_iter()
            .map(|r| {
                r.add_note(&format!(
                    "{} of {k} creates failed: {first}",
                    create_errors.len()
                ))
            })
            .collect();
    }
    // Leave the stack empty (untimed); dropping it would also stop them.
    let _ = in_batches(bench, &names, &["vm", "stop", "{}"], BATCH);
    let _ = in_batches(bench, &names, &["vm", "delete", "{}"], BATCH);
    rows
}
