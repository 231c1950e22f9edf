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

/// `vm.list` grew optional fields (the request's `refs`; the reply's `peers`, `members`,
/// `vmm`): the pinned JSON above still round-trips unchanged, a new reply decodes where the
/// old shape is expected, and an old reply decodes here with nothing known about the peers.
#[test]
fn vm_list_grew_optional_fields_and_both_shapes_still_decode() {
    use crate::vm::{ListVmsReply, ListVmsRequest};

    // The shapes as they were before the fields existed.
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct OldRequest {}
    #[derive(serde::Deserialize)]
    struct OldReply {
        host: String,
        vms: Vec<Value>,
    }

    let all = serde_json::to_value(ListVmsRequest::default()).unwrap();
    assert_eq!(all, serde_json::json!({}));
    let _: OldRequest = serde_json::from_value(all).unwrap();
    let some = serde_json::to_value(ListVmsRequest::matching(["web", "3f2a"])).unwrap();
    assert_eq!(some, serde_json::json!({"refs": ["web", "3f2a"]}));

    let fixtures = wire_fixtures();
    let old = &fixtures["<p>.vm.list"]["reply"];
    let decoded: ListVmsReply = serde_json::from_value(old.clone()).unwrap();
    assert_eq!(
        (decoded.peers.as_ref(), decoded.members.as_ref()),
        (None, None)
    );
    assert_eq!(decoded.vms.len(), 1);

    let mut new = decoded;
    new.peers = Some(vec!["lab1".into(), "lab2".into()]);
    new.members = Some(vec![]);
    new.vmm = Some("sim".into());
    let json = serde_json::to_value(&new).unwrap();
    assert_eq!(json["peers"], serde_json::json!(["lab1", "lab2"]));
    let by_old: OldReply = serde_json::from_value(json.clone()).unwrap();
    assert_eq!((by_old.host.as_str(), by_old.vms.len()), ("lab1", 1));
    let back: ListVmsReply = serde_json::from_value(json).unwrap();
    assert_eq!(back, new);
}

#[test]
fn the_refs_filter_matches_names_ids_and_id_prefixes() {
    use crate::vm::ListVmsRequest;
    let vm = crate::testing::vm_info("web", "0123456789abcdef0123456789abcdef", "h1");
    let wants = |refs: &[&str]| ListVmsRequest::matching(refs.iter().copied()).wants(&vm);
    assert!(wants(&[]));
    assert!(wants(&["web"]));
    assert!(wants(&["0123456789abcdef0123456789abcdef"]));
    assert!(wants(&["0123"]));
    assert!(wants(&["nope", "0123"]));
    assert!(!wants(&["we"]));
    assert!(!wants(&["web2"]));
    assert!(!wants(&["1234"]));
    assert!(!wants(&[""]));
}
