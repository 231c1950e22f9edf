//! The JSON on the wire, pinned: every operation's request and reply parse from the fixture in
//! `proto/fixtures/wire.json` and serialise back to exactly the same JSON (every key, every `null`).
//! The fixtures were captured from the code before operations became types (each key is the
//! operation's documented subject, which is checked too); a change here is a contract change
//! (see `CONTRACT_VERSION`). Every operation of `banger_proto::op` must have its fixture.

use crate::Subjects;
use crate::op::{self, OpInfo, Operation, Visitor};
use crate::testing::{fixture_subject, sample_at, wire_fixtures};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

fn same_json<T: Serialize + DeserializeOwned>(key: &str, part: &str, fixture: &Value) {
    let parsed: T = serde_json::from_value(fixture.clone())
        .unwrap_or_else(|e| panic!("{key} {part}: the fixture no longer parses: {e}"));
    let back = serde_json::to_value(&parsed)
        .unwrap_or_else(|e| panic!("{key} {part}: serialising failed: {e}"));
    assert_eq!(&back, fixture, "{key} {part}: the JSON on the wire changed");
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
            fixture_subject(key),
            "{}: the subject changed",
            info.name
        );
        self.seen.push(key);
    }
}

#[test]
fn every_operation_round_trips_to_the_pinned_json() {
    let fixtures = wire_fixtures();
    let mut check = Check {
        fixtures: &fixtures,
        seen: Vec::new(),
    };
    op::visit_all(&mut check);
    let mut seen = check.seen;
    seen.sort_unstable();
    let mut pinned: Vec<&str> = fixtures.keys().map(String::as_str).collect();
    pinned.sort_unstable();
    assert_eq!(
        seen, pinned,
        "one fixture per operation, one operation per fixture"
    );
    assert_eq!(seen.len(), 31);
}

#[test]
fn the_error_reply_is_pinned() {
    let fixture: Value =
        serde_json::json!({"error": {"code": "not_found", "message": "no VM named \"web\""}});
    same_json::<crate::error::ErrorReply>("error", "reply", &fixture);
}
