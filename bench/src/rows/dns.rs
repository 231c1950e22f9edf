//! DNS: dnsd serving 1,000 and 10,000 VMs (2 names each) under `dnsperf` load, against Knot
//! DNS (`knotd`) serving the same zone under the same load in the same run, and the delay from
//! a `started` event to the record being served; with the measuring code of
//! `cargo bench -p banger-dnsd --bench dns_serve` (`banger_testkit::dns_load`: dnsd runs
//! in-process, fed by a stand-in controller answering `vm.list`). Each server is loaded three
//! times, in turns with the other, and its median round is shown (every round in the note).

use std::time::Duration;

use banger_testkit::dns_load as load;
use banger_testkit::have_program;

use super::{Samples, compare};
use crate::stats::format_duration;
use crate::table::{Quantity, Row};

/// Fleet sizes measured.
const SIZES: [usize; 2] = [1_000, 10_000];

/// The DNS rows.
pub(crate) fn measure() -> Vec<Row> {
    if !have_program("nats-server") {
        return vec![Row::skipped("dns", "`nats-server` is not on PATH")];
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return vec![Row::skipped("dns", format!("starting tokio: {e}"))],
    };
    let dir = match tempfile::tempdir() {
        Ok(d) => d,
        Err(e) => return vec![Row::skipped("dns", format!("scratch directory: {e}"))],
    };
    SIZES
        .iter()
        .flat_map(|&n| {
            let result = runtime.block_on(load::measure_size(dir.path(), n));
            rows(&result)
        })
        .collect()
}

fn samples(d: &[Duration]) -> Samples {
    let mut s = Samples::default();
    d.iter().for_each(|d| s.push(Ok(*d)));
    s
}

/// The mean of `d` (zero when empty): with a fixed number of queries in flight it is that
/// number divided by the answers per second, whatever the distribution's shape.
fn mean(d: &[Duration]) -> Duration {
    let count = u32::try_from(d.len()).unwrap_or(u32::MAX).max(1);
    d.iter().sum::<Duration>() / count
}

/// A short duration in microseconds with two decimals (a CPU cost per answer is a few µs).
fn micros(d: Duration) -> String {
    format!("{:.2} us", d.as_secs_f64() * 1e6)
}

/// Every round's queries per second, dnsd's then knotd's (the rows show each one's median).
fn rounds_note((dnsd, knot): &(Vec<f64>, Vec<f64>)) -> String {
    let list = |v: &[f64]| {
        v.iter()
            .map(|q| format!("{q:.0}"))
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut note = format!(
        "median of {} rounds taken in turns: dnsd {}",
        dnsd.len(),
        list(dnsd)
    );
    if !knot.is_empty() {
        note.push_str(&format!(", knotd {}", list(knot)));
    }
    note.push_str(" q/s");
    note
}

fn rows(r: &load::SizeResult) -> Vec<Row> {
    let n = r.vms;
    let knot = r.knot.as_ref();
    let no_knot = "knotd not installed (apt-get install knot): no reference";
    let mut rows = Vec::new();

    let what = format!("dns {n} VMs: dnsperf queries/s (ref: knotd)");
    rows.push(match &r.dnsd.dnsperf {
        None => Row::skipped(what, "dnsperf not installed (apt-get install dnsperf)"),
        Some(ours) => {
            let reference = knot.and_then(|k| k.dnsperf.as_ref());
            Row::quantities(
                what,
                Quantity::Rate(ours.qps),
                None,
                reference.map(|k| Quantity::Rate(k.qps)),
            )
            .with_note(format!(
                "{} s, {} records, dnsperf {}; lost {}{}; server CPU per answer: dnsd {}{}; {}",
                load::LOAD_SECS,
                2 * n,
                load::DNSPERF_FLAGS.join(" "),
                ours.lost,
                reference.map_or_else(
                    || format!("; {no_knot}"),
                    |k| format!(", knotd lost {}", k.lost)
                ),
                micros(ours.cpu_per_answer()),
                reference.map_or_else(String::new, |k| format!(
                    ", knotd {}",
                    micros(k.cpu_per_answer())
                )),
                load::servers_setup(),
            ))
            .add_note(&rounds_note(&r.rounds_qps))
        }
    });
    if let Some(ours) = &r.dnsd.dnsperf {
        let reference = knot.and_then(|k| k.dnsperf.as_ref());
        rows.push(Row::measured(
            format!("dns {n} VMs: dnsperf mean latency (ref: knotd)"),
            ours.avg,
            None,
            reference.map(|k| k.avg),
        ));
    }

    let ours = samples(&r.dnsd.latencies);
    let reference = knot.map_or_else(Samples::default, |k| samples(&k.latencies));
    let knot_note = knot.map_or_else(
        || no_knot.to_owned(),
        |k| {
            format!(
                "knotd p99 {}, mean {}, {:.0} answers/s",
                reference
                    .summary()
                    .map(|s| format_duration(s.p99))
                    .unwrap_or_default(),
                format_duration(mean(&k.latencies)),
                k.builtin_qps
            )
        },
    );
    rows.push(
        compare(
            &format!(
                "dns {n} VMs: latency, {} clients 1 in flight (ref: knotd)",
                load::BUILTIN_CLIENTS
            ),
            &ours,
            &reference,
        )
        .add_note(&format!(
            "dnsd mean {}, {:.0} answers/s; {knot_note}",
            format_duration(mean(&r.dnsd.latencies)),
            r.dnsd.builtin_qps
        )),
    );
    let what = format!(
        "dns {n} VMs: p99 latency, {} clients 1 in flight (ref: knotd p99)",
        load::BUILTIN_CLIENTS
    );
    rows.push(match ours.summary() {
        None => Row::skipped(what, "no query was answered"),
        Some(o) => Row::measured(what, o.p99, None, reference.summary().map(|k| k.p99))
            .with_note(format!("{} answers", r.dnsd.latencies.len())),
    });
    rows.push(
        compare(
            &format!("dns {n} VMs: started event -> served (no ref)"),
            &samples(&r.events),
            &Samples::default(),
        )
        .add_note(&format!("{} events", r.events.len())),
    );
    rows.push(Row::measured(
        format!(
            "dns {n} VMs: start to all {} records served (no ref)",
            2 * n
        ),
        r.load_time,
        None,
        None,
    ));
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_note_lists_every_round_of_both_servers() {
        let note = rounds_note(&(vec![190_000.4, 210_000.0, 200_000.0], vec![180_000.0]));
        assert_eq!(
            note,
            "median of 3 rounds taken in turns: dnsd 190000/210000/200000, knotd 180000 q/s"
        );
        let note = rounds_note(&(vec![1.0], vec![]));
        assert!(!note.contains("knotd"), "{note}");
    }
}
