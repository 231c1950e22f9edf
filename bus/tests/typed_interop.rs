//! Typed operations against clients and services that know nothing of them: a client that
//! sends raw JSON to a raw subject (`nats req`, a build from before operations were types, the
//! Python watcher) and a service that answers raw JSON on its subject. Every operation of
//! `banger_proto::op` is exercised with the JSON pinned in `proto/fixtures/wire.json`; error
//! headers, trace context, queue groups, no-responders, timeouts and the `$SRV.INFO` listing
//! are checked on the way.
//!
//! Raw and typed sides share one connection: `flush` does not wait for the server to process a
//! subscription, and one connection's messages are processed in order, so a subscription made
//! before a request is always seen by it.

#![allow(
    clippy::tests_outside_test_module,
    clippy::unwrap_used,
    reason = "an integration test file is a test crate of its own; a panic is a failed test"
)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_nats::HeaderMap;
use banger_bus::client::{ERROR_CODE_HEADER, NATS_SERVICE_ERROR, NATS_SERVICE_ERROR_CODE};
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_bus::{Bus, BusError, RequestError};
use banger_proto::op::{self, Delivery, Lab, OpInfo, Operation, Visitor};
use banger_proto::testing::{fixture_subject, sample_at, wire_fixtures};
use banger_proto::{ApiError, ErrorCode, HostId, Subjects, service};
use banger_testkit::NatsServer;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

fn nats() -> Option<NatsServer> {
    if !banger_testkit::have_program("nats-server") {
        banger_testkit::skip("nats-server is not installed");
        return None;
    }
    Some(NatsServer::start())
}

/// Spans get real trace ids (the service runtime's telemetry), so trace context is visible.
fn telemetry() {
    static GUARD: OnceLock<banger_bus::telemetry::TelemetryGuard> = OnceLock::new();
    GUARD.get_or_init(|| {
        banger_bus::telemetry::init("typed-interop", banger_bus::telemetry::LogFormat::Human)
    });
}

async fn bus(nats: &NatsServer) -> Bus {
    Bus::new(
        async_nats::connect(nats.url()).await.unwrap(),
        Subjects::default(),
    )
}

fn host() -> HostId {
    HostId::new("lab1").unwrap()
}

type Register = Box<dyn for<'a> FnOnce(&'a mut ServiceHost) -> BoxFuture<'a, Result<(), BusError>>>;

/// For every operation: a typed `serve` that answers the fixture reply when it receives the
/// fixture request (and `invalid_argument` otherwise), grouped by service.
struct TypedServers {
    fixtures: serde_json::Map<String, Value>,
    by_service: BTreeMap<&'static str, Vec<Register>>,
}

impl Visitor for TypedServers {
    fn visit<O: Operation>(&mut self, info: OpInfo) {
        let fx = self.fixtures[info.subject].clone();
        let at: O::At = sample_at();
        let register: Register = Box::new(move |host: &mut ServiceHost| {
            Box::pin(async move {
                host.serve(O::default(), &at, fx, |fx, req: O::Request| async move {
                    let got = serde_json::to_value(&req).unwrap();
                    if got != fx["request"] {
                        return Err(ApiError::invalid(format!("unexpected request {got}")));
                    }
                    Ok(serde_json::from_value::<O::Reply>(fx["reply"].clone()).unwrap())
                })
                .await
            })
        });
        self.by_service
            .entry(O::SERVICE)
            .or_default()
            .push(register);
    }
}

/// Starts one `ServiceHost` per service, each serving all its operations the typed way.
async fn start_typed_services(nats: &NatsServer, shutdown: &CancellationToken) -> Bus {
    let mut servers = TypedServers {
        fixtures: wire_fixtures(),
        by_service: BTreeMap::new(),
    };
    op::visit_all(&mut servers);
    let bus = bus(nats).await;
    for (name, registers) in servers.by_service {
        let mut host = ServiceHost::start(&bus, ServiceSpec::new(name, "typed", &host()))
            .await
            .unwrap();
        for register in registers {
            register(&mut host).await.unwrap();
        }
        let all: Vec<OpInfo> = op::all()
            .into_iter()
            .filter(|o| o.service == name)
            .collect();
        host.check_serves(&all).unwrap();
        tokio::spawn(host.run(shutdown.clone()));
    }
    bus.client().flush().await.unwrap();
    bus
}

/// A raw client (subject and JSON by hand, a `traceparent` of its own) gets exactly the
/// pinned reply from every typed endpoint, with the trace continued.
#[tokio::test]
async fn raw_clients_get_the_pinned_json_from_typed_services() {
    let Some(nats) = nats() else { return };
    telemetry();
    let shutdown = CancellationToken::new();
    let bus = start_typed_services(&nats, &shutdown).await;
    let raw = bus.client().clone();
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    for (key, fx) in wire_fixtures() {
        let subject = fixture_subject(&key);
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            format!("00-{trace_id}-00f067aa0ba902b7-01").as_str(),
        );
        let body = serde_json::to_vec(&fx["request"]).unwrap();
        let reply = tokio::time::timeout(
            T,
            raw.request_with_headers(subject.clone(), headers, body.into()),
        )
        .await
        .unwrap_or_else(|_| panic!("{subject}: no answer"))
        .unwrap_or_else(|e| panic!("{subject}: {e}"));
        let h = reply.headers.clone().unwrap_or_default();
        assert!(
            h.get(NATS_SERVICE_ERROR).is_none(),
            "{subject}: error {:?}",
            h.get(NATS_SERVICE_ERROR)
        );
        let got: Value = serde_json::from_slice(&reply.payload).unwrap();
        assert_eq!(got, fx["reply"], "{subject}: the reply JSON changed");
        let parent = h.get("traceparent").map(|v| v.as_str().to_owned());
        assert!(
            parent
                .as_deref()
                .is_some_and(|p| p.starts_with(&format!("00-{trace_id}-"))),
            "{subject}: the reply does not continue the caller's trace: {parent:?}"
        );
    }
    shutdown.cancel();
}

type Call = Box<dyn FnOnce(Bus) -> BoxFuture<'static, ()>>;

/// For every operation: a typed `call` that must decode the fixture reply.
struct TypedCalls {
    fixtures: serde_json::Map<String, Value>,
    calls: Vec<Call>,
}

impl Visitor for TypedCalls {
    fn visit<O: Operation>(&mut self, info: OpInfo) {
        let fx = self.fixtures[info.subject].clone();
        let name = info.name;
        self.calls.push(Box::new(move |bus: Bus| {
            Box::pin(async move {
                let req: O::Request = serde_json::from_value(fx["request"].clone()).unwrap();
                let at: O::At = sample_at();
                let reply = bus
                    .call::<O>(&at, &req, T)
                    .await
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(serde_json::to_value(&reply).unwrap(), fx["reply"], "{name}");
            })
        }));
    }
}

/// A service answering raw JSON on the documented subjects (as a build from before operations
/// were types does) is understood by every typed call, and receives exactly the pinned
/// request with the caller's trace context.
#[tokio::test]
async fn typed_calls_understand_raw_services() {
    let Some(nats) = nats() else { return };
    telemetry();
    let fixtures = wire_fixtures();
    let bus = bus(&nats).await;
    let raw = bus.client().clone();
    let mut sub = raw.subscribe("banger.>").await.unwrap();
    raw.flush().await.unwrap();
    let seen: Arc<Mutex<HashMap<String, (Value, bool)>>> = Arc::default();
    let (answers, record) = (fixtures.clone(), seen.clone());
    let responder = raw.clone();
    let server = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let subject = msg.subject.to_string();
            let Some((_, fx)) = answers.iter().find(|(k, _)| fixture_subject(k) == subject) else {
                continue;
            };
            let traced = msg
                .headers
                .as_ref()
                .is_some_and(|h| h.get("traceparent").is_some());
            let body: Value = serde_json::from_slice(&msg.payload).unwrap();
            record.lock().unwrap().insert(subject, (body, traced));
            let reply = serde_json::to_vec(&fx["reply"]).unwrap();
            if let Some(to) = msg.reply {
                responder.publish(to, reply.into()).await.unwrap();
            }
        }
    });
    let mut calls = TypedCalls {
        fixtures: fixtures.clone(),
        calls: Vec::new(),
    };
    op::visit_all(&mut calls);
    assert_eq!(calls.calls.len(), fixtures.len());
    for call in calls.calls {
        call(bus.clone()).await;
    }
    let seen = seen.lock().unwrap();
    for (key, fx) in &fixtures {
        let subject = fixture_subject(key);
        let (body, traced) = seen
            .get(&subject)
            .unwrap_or_else(|| panic!("{subject}: the raw service got nothing"));
        assert_eq!(body, &fx["request"], "{subject}: the request JSON changed");
        assert!(traced, "{subject}: no traceparent on the request");
    }
    server.abort();
}

/// A handler's error reaches a raw client as the body and the three headers, and a typed
/// caller as the remote `ApiError`; a raw service that only sets the headers is understood.
#[tokio::test]
async fn errors_cross_in_both_directions() {
    let Some(nats) = nats() else { return };
    let bus = bus(&nats).await;
    let mut svc = ServiceHost::start(&bus, ServiceSpec::new(service::NETD, "typed", &host()))
        .await
        .unwrap();
    svc.serve(op::net::Status, &host(), (), |(), _| async {
        Err::<banger_proto::net::NetStatus, _>(ApiError::not_found("no bridge\nhere"))
    })
    .await
    .unwrap();
    let shutdown = CancellationToken::new();
    tokio::spawn(svc.run(shutdown.clone()));
    bus.client().flush().await.unwrap();

    let raw = bus.client().clone();
    let reply = raw
        .request("banger.host.lab1.net.status", "{}".into())
        .await
        .unwrap();
    let h = reply.headers.clone().unwrap();
    assert_eq!(
        h.get(NATS_SERVICE_ERROR).unwrap().as_str(),
        "no bridge here"
    );
    assert_eq!(h.get(NATS_SERVICE_ERROR_CODE).unwrap().as_str(), "404");
    assert_eq!(h.get(ERROR_CODE_HEADER).unwrap().as_str(), "not_found");
    let body: Value = serde_json::from_slice(&reply.payload).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"error": {"code": "not_found", "message": "no bridge\nhere"}})
    );
    match bus
        .call::<op::net::Status>(&host(), &Default::default(), T)
        .await
    {
        Err(RequestError::Remote(e)) => assert_eq!(e.code, ErrorCode::NotFound),
        other => panic!("expected the remote error, got {other:?}"),
    }

    // A raw service that answers with the service-API headers only. (Not with code 503 and an
    // empty body: async-nats reads that as the server's own "no responders" status.)
    let mut sub = raw.subscribe("banger.host.lab1.net.list").await.unwrap();
    raw.flush().await.unwrap();
    let responder = raw.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let mut h = HeaderMap::new();
            h.insert(NATS_SERVICE_ERROR, "busy");
            h.insert(NATS_SERVICE_ERROR_CODE, "409");
            h.insert(ERROR_CODE_HEADER, "conflict");
            if let Some(to) = msg.reply {
                responder
                    .publish_with_headers(to, h, bytes::Bytes::new())
                    .await
                    .unwrap();
            }
        }
    });
    match bus
        .call::<op::net::List>(&host(), &Default::default(), T)
        .await
    {
        Err(RequestError::Remote(e)) => {
            assert_eq!((e.code, e.message.as_str()), (ErrorCode::Conflict, "busy"));
        }
        other => panic!("expected the remote error, got {other:?}"),
    }
    shutdown.cancel();
}

/// Nobody serving: `no responders` at once; somebody silent: a timeout at the deadline.
#[tokio::test]
async fn no_responders_and_timeouts_are_told_apart() {
    let Some(nats) = nats() else { return };
    let bus = bus(&nats).await;
    match bus
        .call::<op::dns::Status>(&Lab, &Default::default(), T)
        .await
    {
        Err(e @ RequestError::NoResponders { .. }) => {
            assert_eq!(e.code(), ErrorCode::Unavailable);
        }
        other => panic!("expected no responders, got {other:?}"),
    }
    let _silent = bus.client().subscribe("banger.dns.lookup").await.unwrap();
    bus.client().flush().await.unwrap();
    let req = banger_proto::dns::LookupRequest {
        name: "web.vm.".into(),
    };
    match bus
        .call::<op::dns::Lookup>(&Lab, &req, Duration::from_millis(300))
        .await
    {
        Err(e @ RequestError::Timeout { .. }) => assert_eq!(e.code(), ErrorCode::Timeout),
        other => panic!("expected a timeout, got {other:?}"),
    }
}

/// The `$SRV.INFO` answer of service `name` on `host`. Discovery stops 100 ms after the latest
/// answer, so on a loaded machine one instance can miss a round: ask again until the deadline.
async fn info_of(bus: &Bus, name: &str, host: &str) -> Value {
    let end = tokio::time::Instant::now() + T;
    loop {
        let infos = bus
            .service_verb(format!("{}.{name}", service::SRV_INFO), T)
            .await
            .unwrap();
        if let Some(info) = infos.into_iter().find(|i| i["metadata"]["host"] == host) {
            return info;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "no $SRV.INFO from {name} on {host}"
        );
    }
}

/// `$SRV.INFO` lists every operation of every service with its subject, and queue groups
/// follow the operation's delivery: two controllers both answer `vm.list`, one `vm.create`.
#[tokio::test]
async fn service_info_lists_every_endpoint_and_delivery_is_kept() {
    let Some(nats) = nats() else { return };
    let shutdown = CancellationToken::new();
    let bus = start_typed_services(&nats, &shutdown).await;
    // A second controller, on another host, serving the lab-wide operations.
    let other = HostId::new("lab2").unwrap();
    let spec = ServiceSpec::new(service::VM_CONTROLLER, "typed", &other);
    let mut second = ServiceHost::start(&bus, spec).await.unwrap();
    let fx = wire_fixtures();
    let list_reply: banger_proto::vm::ListVmsReply =
        serde_json::from_value(fx["<p>.vm.list"]["reply"].clone()).unwrap();
    let place_reply: banger_proto::vm::VmOpReply =
        serde_json::from_value(fx["<p>.vm.create"]["reply"].clone()).unwrap();
    second
        .serve(op::vm::List, &Lab, list_reply, |r, _| async move { Ok(r) })
        .await
        .unwrap();
    second
        .serve(
            op::vm::Place,
            &Lab,
            place_reply,
            |r, _| async move { Ok(r) },
        )
        .await
        .unwrap();
    assert!(
        matches!(
            second.check_serves(op::vm::ALL),
            Err(BusError::Unserved { .. })
        ),
        "a controller serving two of its operations must not pass the check"
    );
    tokio::spawn(second.run(shutdown.clone()));
    bus.client().flush().await.unwrap();

    let list_req = banger_proto::vm::ListVmsRequest::default();
    let lists = bus
        .gather::<op::vm::List>(&Lab, &list_req, Some(2), T)
        .await
        .unwrap();
    assert_eq!(lists.len(), 2, "both controllers answer vm.list");

    // vm.create is load-balanced: a gather on it hears exactly one answer.
    let create: banger_proto::vm::CreateVmRequest =
        serde_json::from_value(fx["<p>.vm.create"]["request"].clone()).unwrap();
    let places = bus
        .gather::<op::vm::Place>(&Lab, &create, None, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(places.len(), 1, "one controller answers vm.create");

    for name in service::ALL {
        let info = info_of(&bus, name, "lab1").await;
        let listed: BTreeMap<String, (String, String)> = info["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let field = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                (field("name"), (field("subject"), field("queue_group")))
            })
            .collect();
        let expected: Vec<OpInfo> = op::all()
            .into_iter()
            .filter(|o| o.service == *name)
            .collect();
        assert_eq!(listed.len(), expected.len(), "{name}: {listed:?}");
        for o in expected {
            let (subject, group) = listed
                .get(o.endpoint)
                .unwrap_or_else(|| panic!("{name}: {} not listed", o.endpoint));
            assert_eq!(subject, &fixture_subject(o.subject), "{}", o.name);
            match o.delivery {
                Delivery::Queue => assert_eq!(group, "q", "{}", o.name),
                Delivery::Broadcast => assert_ne!(group, "q", "{}", o.name),
            }
        }
    }
    shutdown.cancel();
}
