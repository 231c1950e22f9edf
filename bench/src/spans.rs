//! Where an operation's time goes, from the spans every process of a traced stack exports: for
//! each CLI command (the root span `banger vm create`, ...), the summed duration of each
//! service's server spans in that command's trace, as a share of the command's own span.

use std::collections::HashMap;
use std::time::Duration;

use banger_testkit::otlp::Span;

use crate::stats::{format_duration, percentile};

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

/// One line of a [`breakdown`]: a span name of one service, over the commands whose traces
/// hold it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Step {
    /// The exporting service (`banger` for the CLI).
    pub(crate) service: String,
    /// The span name.
    pub(crate) name: String,
    /// How many of the commands had at least one such span.
    pub(crate) commands: usize,
    /// Spans per command that had it (a name can occur several times in one trace).
    pub(crate) per_command: f64,
    /// Mean of the per-command summed durations, over the commands that had it.
    pub(crate) mean: Duration,
    /// Median of the same.
    pub(crate) p50: Duration,
}

/// Where the commands named `command` spend their time, span by span: for every (service,
/// span name) in their traces, its summed duration per command, averaged and its median.
/// Ordered by the first start of the name within a trace (the order the steps run), so
/// the listing reads as the command's timeline. Nested spans overlap their parents.
pub(crate) fn breakdown(spans: &[Span], command: &str) -> Vec<Step> {
    let roots = roots(spans, command);
    // (service, name) -> per-root summed duration, and the mean offset from the root's start.
    type Key = (String, String);
    let mut sums: HashMap<Key, Vec<Duration>> = HashMap::new();
    let mut counts: HashMap<Key, usize> = HashMap::new();
    let mut offsets: HashMap<Key, u64> = HashMap::new();
    for root in &roots {
        let mut per: HashMap<Key, (Duration, u64)> = HashMap::new();
        for s in spans.iter().filter(|s| s.trace_id == root.trace_id) {
            let key = (s.service.clone(), step_name(&s.name));
            let offset = s.start_unix_nano.saturating_sub(root.start_unix_nano);
            *counts.entry(key.clone()).or_default() += 1;
            let e = per.entry(key).or_insert((Duration::ZERO, offset));
            e.0 += s.duration();
            e.1 = e.1.min(offset);
        }
        for (key, (d, offset)) in per {
            let o = offsets.entry(key.clone()).or_insert(offset);
            *o = (*o).min(offset);
            sums.entry(key).or_default().push(d);
        }
    }
    let mut steps: Vec<(u64, Step)> = sums
        .into_iter()
        .map(|(key, durations)| {
            let total: Duration = durations.iter().sum();
            let n = durations.len();
            let count = counts.get(&key).copied().unwrap_or(n);
            let offset = offsets.get(&key).copied().unwrap_or(0);
            let (service, name) = key;
            let step = Step {
                service,
                name,
                commands: n,
                per_command: count as f64 / n as f64,
                mean: total / u32::try_from(n).unwrap_or(u32::MAX).max(1),
                p50: percentile(&durations, 50.0).unwrap_or_default(),
            };
            (offset, step)
        })
        .collect();
    steps.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.name.cmp(&b.1.name)));
    steps.into_iter().map(|(_, s)| s).collect()
}

/// A span's name as a step: an event publication (`send banger.events.<host>.vm.<id>.started`)
/// by its event kind (`send ....started`), so every command's publications group together.
fn step_name(name: &str) -> String {
    match name.strip_prefix("send ") {
        Some(subject) if subject.contains(".events.") => {
            let kind = subject.rsplit('.').next().unwrap_or_default();
            format!("send event {kind}")
        }
        _ => name.to_owned(),
    }
}

/// A [`breakdown`] as text: one line per step, `service  span  n  mean  p50`.
pub(crate) fn render_breakdown(title: &str, steps: &[Step]) -> String {
    let width = label_width(steps.iter().map(|s| (&s.service, &s.name)));
    let mut out = format!("\n{title}\n");
    out.push_str(&format!(
        "  {:<width$}  {:>5}  {:>5}  {:>10}  {:>10}\n",
        "service: span", "cmds", "x/cmd", "mean", "p50"
    ));
    for s in steps {
        let label = format!("{}: {}", s.service, s.name);
        out.push_str(&format!(
            "  {label:<width$}  {:>5}  {:>5.1}  {:>10}  {:>10}\n",
            s.commands,
            s.per_command,
            format_duration(s.mean),
            format_duration(s.p50)
        ));
    }
    out
}

/// One line of a [`timeline`]: every span of one (service, name) in one trace.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spread {
    /// The exporting service (`banger` for the CLI).
    pub(crate) service: String,
    /// The span name (events grouped by kind, as in [`breakdown`]).
    pub(crate) name: String,
    /// How many such spans the trace holds.
    pub(crate) count: usize,
    /// Their summed duration (more than the wall time when they overlap).
    pub(crate) sum: Duration,
    /// The longest one.
    pub(crate) max: Duration,
    /// From the root's start to the first one's start.
    pub(crate) first_start: Duration,
    /// From the root's start to the last one's end.
    pub(crate) last_end: Duration,
}

/// Where ONE command's time goes when it does many things at once (a batch command naming
/// 100 VMs): for every (service, span name) in the trace of the latest root span named
/// `command`, how many, their sum and longest, and when the first started and the last ended,
/// relative to the command's start. Ordered by first start. Empty when no such root arrived.
pub(crate) fn timeline(spans: &[Span], command: &str) -> Vec<Spread> {
    let Some(root) = roots(spans, command)
        .into_iter()
        .max_by_key(|r| r.start_unix_nano)
    else {
        return Vec::new();
    };
    let mut by_key: HashMap<(String, String), Spread> = HashMap::new();
    for s in spans.iter().filter(|s| s.trace_id == root.trace_id) {
        let since = |t: u64| Duration::from_nanos(t.saturating_sub(root.start_unix_nano));
        let e = by_key
            .entry((s.service.clone(), step_name(&s.name)))
            .or_insert_with(|| Spread {
                service: s.service.clone(),
                name: step_name(&s.name),
                count: 0,
                sum: Duration::ZERO,
                max: Duration::ZERO,
                first_start: since(s.start_unix_nano),
                last_end: Duration::ZERO,
            });
        e.count += 1;
        e.sum += s.duration();
        e.max = e.max.max(s.duration());
        e.first_start = e.first_start.min(since(s.start_unix_nano));
        e.last_end = e.last_end.max(since(s.end_unix_nano));
    }
    let mut all: Vec<Spread> = by_key.into_values().collect();
    all.sort_by(|a, b| a.first_start.cmp(&b.first_start).then(a.name.cmp(&b.name)));
    all
}

/// The width of the `service: span` column for these (service, name) pairs.
fn label_width<'a>(labels: impl Iterator<Item = (&'a String, &'a String)>) -> usize {
    labels
        .map(|(service, name)| service.len() + name.len() + 2)
        .max()
        .unwrap_or(0)
        .max(20)
}

/// A [`timeline`] as text: `service: span  n  sum  max  first start  last end`.
pub(crate) fn render_timeline(title: &str, steps: &[Spread]) -> String {
    let width = label_width(steps.iter().map(|s| (&s.service, &s.name)));
    let mut out = format!("\n{title}\n");
    out.push_str(&format!(
        "  {:<width$}  {:>5}  {:>10}  {:>10}  {:>10}  {:>10}\n",
        "service: span", "n", "sum", "max", "first at", "last end"
    ));
    for s in steps {
        let label = format!("{}: {}", s.service, s.name);
        out.push_str(&format!(
            "  {label:<width$}  {:>5}  {:>10}  {:>10}  {:>10}  {:>10}\n",
            s.count,
            format_duration(s.sum),
            format_duration(s.max),
            format_duration(s.first_start),
            format_duration(s.last_end),
        ));
    }
    out
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

    /// `s` started `ms` milliseconds later (and ends as much later).
    fn later(mut s: Span, ms: u64) -> Span {
        s.start_unix_nano += ms * 1_000_000;
        s.end_unix_nano += ms * 1_000_000;
        s
    }

    #[test]
    fn the_breakdown_sums_each_step_per_command_in_timeline_order() {
        let spans = [
            span("banger", "banger vm start", "t1", "", 3, 100),
            later(span("vm-controller", "vm.start", "t1", "c1", SERVER, 80), 1),
            later(span("vm-controller", "firecracker", "t1", "c1", 1, 2), 3),
            later(span("vm-controller", "firecracker", "t1", "c1", 1, 4), 6),
            span("banger", "banger vm start", "t2", "", 3, 200),
            later(
                span("vm-controller", "vm.start", "t2", "c2", SERVER, 120),
                2,
            ),
            span("banger", "banger vm stop", "t3", "", 3, 100),
        ];
        let steps = breakdown(&spans, "banger vm start");
        let names: Vec<&str> = steps.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["banger vm start", "vm.start", "firecracker"]);
        let fc = &steps[2];
        assert_eq!((fc.commands, fc.per_command), (1, 2.0));
        assert_eq!(fc.mean, Duration::from_millis(6));
        let start = &steps[1];
        assert_eq!(start.mean, Duration::from_millis(100));
        assert_eq!(start.p50, Duration::from_millis(80));
        let text = render_breakdown("vm start", &steps);
        assert!(text.contains("vm-controller: firecracker"), "{text}");
        assert!(breakdown(&spans, "banger vm delete").is_empty());
        assert_eq!(
            step_name("send banger.events.h1.vm.01abc.started"),
            "send event started"
        );
        assert_eq!(step_name("send x.y"), "send x.y");
    }

    #[test]
    fn a_timeline_spreads_the_latest_commands_spans_from_its_start() {
        let mut spans = vec![
            span("banger", "banger vm start", "old", "", 3, 10),
            span("netd", "net.attach", "old", "x", SERVER, 5),
            span("banger", "banger vm start", "new", "", 3, 100),
        ];
        spans.iter_mut().for_each(|s| {
            if s.trace_id == "new" {
                s.start_unix_nano += 1_000_000_000;
                s.end_unix_nano += 1_000_000_000;
            }
        });
        for (start_ms, ms) in [(10, 20), (15, 40)] {
            let mut s = span("netd", "net.attach", "new", "r", SERVER, ms);
            s.start_unix_nano = 2_000_000_000 + start_ms * 1_000_000;
            s.end_unix_nano = s.start_unix_nano + ms * 1_000_000;
            spans.push(s);
        }
        let t = timeline(&spans, "banger vm start");
        let attach = t.iter().find(|s| s.name == "net.attach").unwrap();
        assert_eq!(attach.count, 2);
        assert_eq!(attach.sum, Duration::from_millis(60));
        assert_eq!(attach.max, Duration::from_millis(40));
        assert_eq!(attach.first_start, Duration::from_millis(10));
        assert_eq!(attach.last_end, Duration::from_millis(55));
        assert_eq!(t[0].name, "banger vm start", "ordered by first start");
        assert!(timeline(&spans, "banger vm stop").is_empty());
        assert!(render_timeline("start", &t).contains("net.attach"));
    }
}
