//! One bus hop, measured: the code shared by `cargo bench -p banger-bus --bench bus_hop` and the
//! `banger-bench` harness's bus row. One request/reply hop through banger's service runtime
//! (typed request, trace-context headers, service-API endpoint, JSON reply) against a bare
//! async-nats request/reply to a bare subscriber answering the same JSON body, in the same run,
//! on the same nats-server. [`measure_hops`] asserts nothing, it measures.

use std::time::{Duration, Instant};

use banger_bus::Bus;
use banger_bus::service::{ServiceHost, ServiceSpec};
use banger_bus::shutdown::CancellationToken;
use banger_proto::op::{Delivery, Lab, Operation};
use banger_proto::{HostId, Subjects};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

/// Requests sent before timing starts, per path.
pub const WARMUP: usize = 200;
/// Timed sequential requests per path.
pub const ROUNDS: usize = 3_000;
/// How many turns the two paths take (each measures `ROUNDS / BLOCKS` requests per turn).
pub const BLOCKS: usize = 3;
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Serialize, Deserialize)]
struct Echo {
    name: String,
    n: u64,
}

/// The measured operation: `<p>.bench.ours`, answered with the request itself.
#[derive(Default)]
struct EchoOp;

impl Operation for EchoOp {
    type Request = Echo;
    type Reply = Echo;
    type At = Lab;
    const SERVICE: &'static str = "bench";
    const ENDPOINT: &'static str = "echo";
    const TOKENS: &'static str = "bench.ours";
    const DELIVERY: Delivery = Delivery::Queue;
    const ERRORS: &'static [banger_proto::ErrorCode] = banger_proto::op::RUNTIME_ERRORS;
}

/// The round-trip times of both paths, in the order they were taken.
#[derive(Debug, Default)]
pub struct HopSamples {
    /// Through the service runtime (`Bus::call` to an operation `ServiceHost::serve`s).
    pub ours: Vec<Duration>,
    /// Bare async-nats `request` to a bare subscriber.
    pub bare: Vec<Duration>,
}

async fn measure<F, Fut>(warmup: usize, rounds: usize, mut call: F) -> Result<Vec<Duration>, String>
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    for i in 0..warmup {
        call(i as u64)
            .await
            .map_err(|e| format!("warm-up request {i}: {e}"))?;
    }
    let mut samples = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let t = Instant::now();
        call(i as u64)
            .await
            .map_err(|e| format!("timed request {i}: {e}"))?;
        samples.push(t.elapsed());
    }
    Ok(samples)
}

/// Measures `rounds` sequential requests (after `warmup` untimed ones) on each path against
/// the nats-server at `nats_url`.
pub async fn measure_hops(
    nats_url: &str,
    warmup: usize,
    rounds: usize,
) -> Result<HopSamples, String> {
    let connect = |what: &'static str| async move {
        async_nats::connect(nats_url)
            .await
            .map_err(|e| format!("connecting the {what} to {nats_url}: {e}"))
    };
    let server_client = connect("server").await?;
    let client = connect("client").await?;

    // Ours: a typed operation served by the service runtime, called through Bus::call.
    let host = HostId::new("bench").map_err(|e| e.to_string())?;
    let server_bus = Bus::new(server_client.clone(), Subjects::default());
    let mut service = ServiceHost::start(&server_bus, ServiceSpec::new("bench", "echo", &host))
        .await
        .map_err(|e| format!("starting the echo service: {e}"))?;
    service
        .serve(EchoOp, &Lab, (), |(), req| async move { Ok(req) })
        .await
        .map_err(|e| format!("adding the echo endpoint: {e}"))?;
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(service.run(shutdown.clone()));

    // Reference: a bare subscriber answering the same JSON body.
    let mut sub = server_client
        .subscribe("bench.bare")
        .await
        .map_err(|e| format!("subscribing: {e}"))?;
    let responder = server_client.clone();
    let bare_task = tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            if let Some(reply) = msg.reply {
                let _ = responder.publish(reply, msg.payload).await;
            }
        }
    });
    server_client
        .flush()
        .await
        .map_err(|e| format!("flushing: {e}"))?;

    let bus = Bus::new(client.clone(), Subjects::default());
    // The endpoint's subscription reaches the server through the service's own machinery:
    // wait until it answers before anything is timed.
    let deadline = Instant::now() + TIMEOUT;
    let probe = Echo {
        name: "probe".into(),
        n: 0,
    };
    while let Err(e) = bus.call::<EchoOp>(&Lab, &probe, TIMEOUT).await {
        if Instant::now() > deadline {
            return Err(format!("the echo endpoint never answered: {e}"));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The two paths take turns, BLOCKS blocks each, so both are measured across the same
    // stretch of a shared machine's time rather than one after the other.
    let per_block = rounds.div_ceil(BLOCKS);
    let (mut ours_all, mut bare_all) = (Vec::new(), Vec::new());
    let mut failed = None;
    for block in 0..BLOCKS {
        let warm = if block == 0 { warmup } else { 0 };
        let ours = measure(warm, per_block, |n| {
            let bus = &bus;
            async move {
                let req = Echo {
                    name: "web".into(),
                    n,
                };
                let _: Echo = bus
                    .call::<EchoOp>(&Lab, &req, TIMEOUT)
                    .await
                    .map_err(|e| format!("service-runtime request: {e}"))?;
                Ok(())
            }
        })
        .await;
        let bare = measure(warm, per_block, |n| {
            let client = &client;
            async move {
                let body = serde_json::to_vec(&Echo {
                    name: "web".into(),
                    n,
                })
                .map_err(|e| e.to_string())?;
                let reply = client
                    .request("bench.bare", body.into())
                    .await
                    .map_err(|e| format!("bare request: {e}"))?;
                let _: Echo = serde_json::from_slice(&reply.payload).map_err(|e| e.to_string())?;
                Ok(())
            }
        })
        .await;
        match (ours, bare) {
            (Ok(o), Ok(b)) => {
                ours_all.extend(o);
                bare_all.extend(b);
            }
            (Err(e), _) | (_, Err(e)) => {
                failed = Some(e);
                break;
            }
        }
    }
    shutdown.cancel();
    let _ = running.await;
    bare_task.abort();
    match failed {
        Some(e) => Err(e),
        None => Ok(HopSamples {
            ours: ours_all,
            bare: bare_all,
        }),
    }
}
