//! Bus overhead: one request/reply hop through banger's service runtime against a bare
//! async-nats request/reply, on one nats-server, with the measuring code of
//! `cargo bench -p banger-bus --bench bus_hop` (`banger_testkit::bus_hop`).

use banger_testkit::bus_hop as hop;
use banger_testkit::{NatsServer, have_program};

use super::Samples;
use crate::table::Row;

/// The bus-hop row.
pub(crate) fn measure() -> Vec<Row> {
    let what = "bus hop: service runtime request/reply (ref: bare async-nats)";
    if !have_program("nats-server") {
        return vec![Row::skipped(what, "`nats-server` is not on PATH")];
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return vec![Row::skipped(what, format!("starting tokio: {e}"))],
    };
    let nats = NatsServer::start();
    let measured = runtime.block_on(hop::measure_hops(&nats.url(), hop::WARMUP, hop::ROUNDS));
    match measured {
        Ok(samples) => {
            let (mut ours, mut bare) = (Samples::default(), Samples::default());
            samples.ours.into_iter().for_each(|d| ours.push(Ok(d)));
            samples.bare.into_iter().for_each(|d| bare.push(Ok(d)));
            let bare_p99 = bare
                .summary()
                .map(|s| crate::stats::format_duration(s.p99))
                .unwrap_or_default();
            vec![super::compare(what, &ours, &bare).add_note(&format!(
                "{} sequential requests after {} warm-up, in {} turns with the bare path; bare p99 \
                 {bare_p99}",
                hop::ROUNDS,
                hop::WARMUP,
                hop::BLOCKS
            ))]
        }
        Err(e) => vec![Row::skipped(what, e)],
    }
}
