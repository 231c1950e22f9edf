//! The JSON on the wire, pinned: every operation's request and reply parse from the fixture in
//! `fixtures/wire.json` and serialise back to exactly the same JSON (every key, every `null`).
//! The fixtures were captured from the code before operations became types (each key is the
//! operation's documented subject, which is checked too); a change here is a contract change
//! (see `CONTRACT_VERSION`). Every operation of `banger_proto::op` must have its fixture.

use std::any::Any;

use banger_proto::op::{self, Lab, OpInfo, Operation, Scope, Visitor};
use banger_proto::{HostId, Subjects};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn fixtures() -> serde_json::Map<String, Value> {
    let text = include_str!("fixtures/wire.json");
    match serde_json::from_str(text) {
        Ok(Value::Object(m)) => m,
        other => panic!("fixtures/wire.json is not a JSON object: {other:?}"),
    }
}

fn same_json<T: Serialize + DeserializeOwned>(key: &str, part: &str, fixture: &Value) {
    let parsed: T = serde_json::from_value(fixture.clone())
        .unwrap_or_else(|e| panic!("{key} {part}: the fixture no longer parses: {e}"));
    let back = serde_json::to_value(&parsed)
        .unwrap_or_else(|e| panic!("{key} {part}: serialising failed: {e}"));
    assert_eq!(&back, fixture, "{key} {part}: the JSON on the wire changed");
}

/// The address every fixture is written for: prefix `banger`, host `lab1`.
fn sample_at<A: Scope>() -> A {
    let lab = Lab;
    let host = HostId::new("lab1").unwrap();
    let any: [&dyn Any; 2] = [&lab, &host];
    any.iter()
        .find_map(|a| a.downcast_ref::<A>())
        .cloned()
        .unwrap_or_else(|| panic!("an operation addressed to neither the lab nor a host"))
}

struct Check<'a> {
    fixtures: &'a serde_json::Map<String, Value>,
    seen: Vec<&'static str>,
}

impl Visitor for Check<'_> {
    fn visit<O: Operation>(&mut self, info: OpInfo) {
        let key = info.subject;
        let fx = self
            .fixtures
            .get(key)
            .unwrap_or_else(|| panic!("no fixture for {key} ({})", info.name));
        same_json::<O::Request>(key, "request", &fx["request"]);
        same_json::<O::Reply>(key, "reply", &fx["reply"]);
        let subject = O::subject(&Subjects::default(), &sample_at::<O::At>());
        assert_eq!(
            subject,
            key.replace("<p>", "banger").replace("<host>", "lab1"),
            "{}: the subject changed",
            info.name
        );
        self.seen.push(key);
    }
}

#[test]
fn every_operation_round_trips_to_the_pinned_json() {
    let fixtures = fixtures();
    let mut check = Check {
        fixtures: &fixtures,
        seen: Vec::new(),
    };
    op::visit_all(&mut check);
    let mut seen = check.seen;
    seen.sort_unstable();
    let mut pinned: Vec<&str> = fixtures.keys().map(String::as_str).collect();
    pinned.sort_unstable();
    assert_eq!(seen, pinned, "one fixture per operation, one operation per fixture");
    assert_eq!(seen.len(), 31);
}

#[test]
fn the_error_reply_is_pinned() {
    let fixture: Value =
        serde_json::json!({"error": {"code": "not_found", "message": "no VM named \"web\""}});
    same_json::<banger_proto::error::ErrorReply>("error", "reply", &fixture);
}
