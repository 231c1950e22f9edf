//! The JSON on the wire, pinned: every operation's request and reply parse from the fixture in
//! `fixtures/wire.json` and serialise back to exactly the same JSON (every key, every `null`).
//! The fixtures were captured from the code before operations became types; a change here is a
//! contract change (see `CONTRACT_VERSION`).

use banger_proto::{agent, dns, net, store, vm};
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

fn check<Req, Reply>(key: &str, all: &serde_json::Map<String, Value>)
where
    Req: Serialize + DeserializeOwned,
    Reply: Serialize + DeserializeOwned,
{
    let fx = all
        .get(key)
        .unwrap_or_else(|| panic!("no fixture for {key}"));
    same_json::<Req>(key, "request", &fx["request"]);
    same_json::<Reply>(key, "reply", &fx["reply"]);
}

#[test]
fn every_operation_round_trips_to_the_pinned_json() {
    let all = fixtures();
    check::<vm::CreateVmRequest, vm::VmOpReply>("<p>.vm.create", &all);
    check::<vm::ListVmsRequest, vm::ListVmsReply>("<p>.vm.list", &all);
    check::<vm::CreateVmRequest, vm::VmOpReply>("<p>.host.<host>.vm.create", &all);
    for op in ["start", "stop", "restart", "kill", "delete", "touch"] {
        check::<vm::VmRefRequest, vm::VmOpReply>(&format!("<p>.host.<host>.vm.{op}"), &all);
    }
    check::<vm::SetVmRequest, vm::VmOpReply>("<p>.host.<host>.vm.set", &all);
    check::<vm::VmRefRequest, vm::VmInfo>("<p>.host.<host>.vm.get", &all);
    check::<vm::VmRefRequest, agent::Health>("<p>.host.<host>.vm.health", &all);
    check::<vm::LogsRequest, vm::LogsReply>("<p>.host.<host>.vm.logs", &all);
    check::<vm::VmRefRequest, vm::VmStats>("<p>.host.<host>.vm.stats", &all);
    check::<vm::VmExecRequest, agent::ExecResult>("<p>.host.<host>.vm.exec", &all);
    check::<net::AttachRequest, net::Lease>("<p>.host.<host>.net.attach", &all);
    check::<net::DetachRequest, net::DetachReply>("<p>.host.<host>.net.detach", &all);
    check::<net::NetListRequest, net::NetListReply>("<p>.host.<host>.net.list", &all);
    check::<net::NetStatusRequest, net::NetStatus>("<p>.host.<host>.net.status", &all);
    let s = "<p>.host.<host>.store.";
    check::<store::ImageListRequest, store::ImageListReply>(&format!("{s}image.list"), &all);
    check::<store::ImageRefRequest, store::ImageInfo>(&format!("{s}image.show"), &all);
    check::<store::RegisterImageRequest, store::ImageInfo>(&format!("{s}image.register"), &all);
    check::<store::ImageRefRequest, store::ImageRemoveReply>(&format!("{s}image.remove"), &all);
    check::<store::VolumeCreateRequest, store::VolumeSet>(&format!("{s}volume.create"), &all);
    check::<store::VolumeDeleteRequest, store::VolumeDeleteReply>(
        &format!("{s}volume.delete"),
        &all,
    );
    check::<store::VolumeListRequest, store::VolumeListReply>(&format!("{s}volume.list"), &all);
    check::<store::VolumeResizeRequest, store::VolumeSet>(&format!("{s}volume.resize"), &all);
    check::<store::CapabilitiesRequest, store::Capabilities>(&format!("{s}capabilities"), &all);
    check::<dns::RecordsRequest, dns::RecordsReply>("<p>.dns.records", &all);
    check::<dns::LookupRequest, dns::LookupReply>("<p>.dns.lookup", &all);
    check::<dns::DnsStatusRequest, dns::DnsStatus>("<p>.dns.status", &all);
    assert_eq!(all.len(), 31, "one fixture per operation");
}

#[test]
fn the_error_reply_is_pinned() {
    let fixture: Value =
        serde_json::json!({"error": {"code": "not_found", "message": "no VM named \"web\""}});
    same_json::<banger_proto::error::ErrorReply>("error", "reply", &fixture);
}
