//! One trace per command: every process of a real stack exports its spans over OTLP/HTTP to a
//! receiver inside the test, and the spans of every service a command reaches share the CLI's
//! trace id, with each service's span a child of the CLI's request span.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::time::Duration;

use banger_e2e::Stack;
use banger_testkit::otlp::{OtlpReceiver, Span};
use banger_testkit::require_root;

/// OTLP span kinds.
const SERVER: i32 = 2;
const CLIENT: i32 = 3;

fn stack_exporting_to(tag: &str) -> (Stack, OtlpReceiver) {
    let mut stack = Stack::new(tag);
    // The receiver's socket lives in the stack's namespace, where the services can reach it.
    let receiver = stack.ns.run(OtlpReceiver::start);
    stack.env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint());
    // Export often so the test does not wait for the default 5 s batch delay.
    stack.env("OTEL_BSP_SCHEDULE_DELAY", "100");
    (stack, receiver)
}

/// The root span of the CLI command `name`.
fn root<'a>(spans: &'a [Span], name: &str) -> Option<&'a Span> {
    spans
        .iter()
        .find(|s| s.service == "banger" && s.name == name && s.parent_span_id.is_empty())
}

/// Asserts that `service` handled `subject` in the trace of `root`, as a child of one of the
/// CLI's request spans, with the messaging attributes of the semantic conventions.
fn assert_served_in_trace(spans: &[Span], root: &Span, service: &str, subject_part: &str) {
    let server = spans
        .iter()
        .find(|s| s.service == service && s.kind == SERVER && s.name.contains(subject_part))
        .unwrap_or_else(|| panic!("no {service} span for {subject_part}: {spans:#?}"));
    assert_eq!(
        server.trace_id, root.trace_id,
        "{service} did not continue the CLI's trace"
    );
    let parent = spans
        .iter()
        .find(|s| s.span_id == server.parent_span_id)
        .unwrap_or_else(|| panic!("the parent of {service}'s span was not exported"));
    assert_eq!(parent.service, "banger", "{service}'s parent: {parent:?}");
    assert_eq!(parent.kind, CLIENT);
    assert_eq!(parent.trace_id, root.trace_id);
    assert_eq!(server.attr("messaging.system"), Some("nats"));
    assert!(
        server
            .attr("messaging.destination.name")
            .is_some_and(|d| d.contains(subject_part)),
        "{server:?}"
    );
}

#[test]
fn banger_status_is_one_trace_across_the_services_it_asks() {
    if !require_root() {
        return;
    }
    let (stack, receiver) = stack_exporting_to("tr");
    stack.up();
    stack.banger_ok(&["status"]);
    let spans = receiver.wait_for(
        "the spans of banger status from the CLI, netd and dnsd",
        Duration::from_secs(20),
        |spans| {
            root(spans, "banger status").is_some_and(|r| {
                ["netd", "dnsd"].iter().all(|svc| {
                    spans
                        .iter()
                        .any(|s| s.service == *svc && s.trace_id == r.trace_id)
                })
            })
        },
    );
    let root = root(&spans, "banger status").unwrap();
    assert_served_in_trace(&spans, root, "netd", "net.status");
    assert_served_in_trace(&spans, root, "dnsd", "dns.status");
}

#[test]
fn vm_create_is_one_trace_through_controller_stord_and_netd_linked_to_dns() {
    if !require_root() {
        return;
    }
    let (stack, receiver) = stack_exporting_to("tc");
    stack.up();
    stack.register_image("demo");
    stack.banger_ok(&["vm", "create", "web", "--image", "demo"]);

    const CONSUMER: i32 = 5;
    let linked_consumer = |spans: &[Span], svc: &str, trace: &str, kind: &str| {
        spans.iter().any(|s| {
            s.service == svc
                && s.kind == CONSUMER
                && s.name.ends_with(kind)
                && s.links.iter().any(|(t, _)| t == trace)
        })
    };
    let spans = receiver.wait_for(
        "the spans of banger vm create across the stack",
        Duration::from_secs(30),
        |spans| {
            root(spans, "banger vm create").is_some_and(|r| {
                ["vm-controller", "stord", "netd"].iter().all(|svc| {
                    spans
                        .iter()
                        .any(|s| s.service == *svc && s.kind == SERVER && s.trace_id == r.trace_id)
                }) && linked_consumer(spans, "dnsd", &r.trace_id, ".started")
            })
        },
    );
    let root = root(&spans, "banger vm create").unwrap();
    assert_served_in_trace(&spans, root, "vm-controller", "vm.create");
    // stord and netd are asked by the controller: their spans are children of the
    // controller's request spans, in the CLI's trace.
    for (svc, op) in [("stord", "store."), ("netd", "net.attach")] {
        let server = spans
            .iter()
            .find(|s| s.service == svc && s.kind == SERVER && s.trace_id == root.trace_id)
            .unwrap_or_else(|| panic!("no {svc} span in the trace: {spans:#?}"));
        assert!(
            spans
                .iter()
                .filter(|s| s.service == svc && s.kind == SERVER)
                .any(|s| s.name.contains(op)),
            "{svc} never served {op}"
        );
        let parent = spans
            .iter()
            .find(|s| s.span_id == server.parent_span_id)
            .unwrap_or_else(|| panic!("the parent of {svc}'s span was not exported"));
        assert_eq!(parent.service, "vm-controller");
        assert_eq!(parent.kind, CLIENT);
    }
    // dnsd reacts to the `started` event: its own trace, linked to the command's.
    assert!(linked_consumer(&spans, "dnsd", &root.trace_id, ".started"));
}
