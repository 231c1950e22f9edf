//! Where an operation's time goes, from the spans every process of a traced stack exports: for
//! each CLI command (the root span `banger vm create`, ...), the summed duration of each
//! service's server spans in that command's trace, as a share of the command's own span.

use std::collections::HashMap;
use std::time::Duration;

use banger_testkit::otlp::Span;

/// OTLP span kind of a span that serves a request.
const SERVER: i32 = 2;

/// The services whose share is reported, in order.
pub(crate) const SERVICES: [&str; 3] = ["vm-controller", "stord", "netd"];

/// The CLI root spans named `command` (e.g. `banger vm start`).
pub(crate) fn roots<'a>(spans: &'a [Span], command: &str) -> Vec<&'a Span> {
    spans
        .iter()
        .filter(|s| s.service == "banger" && s.name == command && s.parent_span_id.is_empty())
        .collect()
}

/// For the commands named `command`: each of [`SERVICES`] with its server spans' summed time
/// over the commands' summed time (0 to 1, and more when a service served requests in
/// parallel), and how many commands that covers. `None` when no such command was exported.
pub(crate) fn shares(spans: &[Span], command: &str) -> Option<(Vec<(String, f64)>, usize)> {
    let roots = roots(spans, command);
    let total: Duration = roots.iter().map(|r| r.duration()).sum();
    if roots.is_empty() || total.is_zero() {
        return None;
    }
    let mut per_service: HashMap<&str, Duration> = HashMap::new();
    for root in &roots {
        for s in spans
            .iter()
            .filter(|s| s.kind == SERVER && s.trace_id == root.trace_id)
        {
            *per_service.entry(s.service.as_str()).or_default() += s.duration();
        }
    }
    let shares = SERVICES
        .iter()
        .map(|svc| {
            let t = per_service.get(svc).copied().unwrap_or_default();
            ((*svc).to_owned(), t.as_secs_f64() / total.as_secs_f64())
        })
        .collect();
    Some((shares, roots.len()))
}

/// `vm-controller 61%, stord 40%, netd 0%` for the table's note.
pub(crate) fn describe(shares: &[(String, f64)]) -> String {
    shares
        .iter()
        .map(|(svc, share)| format!("{svc} {:.0}%", share * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(service: &str, name: &str, trace: &str, parent: &str, kind: i32, ms: u64) -> Span {
        Span {
            service: service.to_owned(),
            name: name.to_owned(),
            trace_id: trace.to_owned(),
            span_id: format!("{service}-{trace}-{ms}"),
            parent_span_id: parent.to_owned(),
            kind,
            links: Vec::new(),
            attributes: Vec::new(),
            start_unix_nano: 1_000_000_000,
            end_unix_nano: 1_000_000_000 + ms * 1_000_000,
        }
    }

    #[test]
    fn each_service_gets_its_server_time_over_the_commands_time() {
        let spans = [
            span("banger", "banger vm create", "t1", "", 3, 100),
            span("vm-controller", "vm.create", "t1", "c1", SERVER, 80),
            span("stord", "store.volume.create", "t1", "v1", SERVER, 50),
            // A client span of the controller does not count as its work.
            span("vm-controller", "store.volume.create", "t1", "v0", 3, 55),
            span("banger", "banger vm create", "t2", "", 3, 300),
            span("vm-controller", "vm.create", "t2", "c2", SERVER, 200),
            span("stord", "store.volume.create", "t2", "v2", SERVER, 150),
            // Another command's trace is not counted.
            span("banger", "banger vm delete", "t3", "", 3, 100),
            span("netd", "net.detach", "t3", "d3", SERVER, 90),
        ];
        let (shares, n) = shares(&spans, "banger vm create").unwrap();
        assert_eq!(n, 2);
        let get = |svc: &str| shares.iter().find(|(s, _)| s == svc).unwrap().1;
        assert!((get("vm-controller") - 0.7).abs() < 1e-9, "{shares:?}");
        assert!((get("stord") - 0.5).abs() < 1e-9, "{shares:?}");
        assert!(get("netd").abs() < 1e-9, "{shares:?}");
        assert_eq!(describe(&shares), "vm-controller 70%, stord 50%, netd 0%");
        assert!(super::shares(&spans, "banger vm start").is_none());
    }
}
