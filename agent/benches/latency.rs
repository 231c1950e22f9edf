//! Round-trip latency of the agent, as the host sees it: `/healthz` over the agent's own Unix
//! socket and through a hybrid vsock (`CONNECT`) socket, and an exec of `true`. Each call opens
//! its own connection, as `AgentClient` does. Run with `cargo bench -p banger-agent`.
//!
//! The hybrid vsock socket here is the test stand-in (a Unix socket that forwards), not a
//! Firecracker VM: the numbers measure the agent and client, not a guest's vsock transport.

#![allow(
    clippy::unwrap_used,
    reason = "a bench binary: a panic is a failed run"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use banger_agent_client::AgentClient;
use banger_proto::agent::{DEFAULT_AGENT_PORT, ExecRequest};
use support::{Agent, HybridVsock};

const WARMUP: usize = 20;
const ROUNDS: usize = 300;

async fn measure<F, Fut>(mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    for _ in 0..WARMUP {
        f().await;
    }
    let mut samples = Vec::with_capacity(ROUNDS);
    for _ in 0..ROUNDS {
        let t = Instant::now();
        f().await;
        samples.push(t.elapsed());
    }
    samples.sort();
    samples
}

fn row(name: &str, samples: &[Duration]) {
    let pct = |p: usize| samples[(samples.len() - 1) * p / 100];
    let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len()).unwrap();
    println!(
        "| {name:<32} | {:>9.3} | {:>9.3} | {:>9.3} | {:>9.3} |",
        ms(pct(50)),
        ms(pct(99)),
        ms(mean),
        ms(samples[0])
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let agent = Agent::start(dir.path(), "agent", &["--allow-exec"]).await;
        let vsock = HybridVsock::start(
            dir.path().join("vsock.sock"),
            HashMap::from([(DEFAULT_AGENT_PORT, agent.socket.clone())]),
        );
        let direct: AgentClient = agent.direct();
        let hybrid: AgentClient = vsock.client(DEFAULT_AGENT_PORT);
        let true_req = ExecRequest::new(["true"]);

        let unix = measure(|| {
            let c = direct.clone();
            async move {
                c.health().await.unwrap();
            }
        })
        .await;
        let connect = measure(|| {
            let c = hybrid.clone();
            async move {
                c.health().await.unwrap();
            }
        })
        .await;
        let exec = measure(|| {
            let c = hybrid.clone();
            let r = true_req.clone();
            async move {
                assert_eq!(c.exec_collect(&r).await.unwrap().exit_code, Some(0));
            }
        })
        .await;

        println!("\nbanger-agent latency, {ROUNDS} calls each, one connection per call (ms)\n");
        println!(
            "| {:<32} | {:>9} | {:>9} | {:>9} | {:>9} |",
            "call", "p50", "p99", "mean", "min"
        );
        println!(
            "|{:-<34}|{:->11}|{:->11}|{:->11}|{:->11}|",
            "", "", "", "", ""
        );
        row("health, unix socket", &unix);
        row("health, hybrid vsock CONNECT", &connect);
        row("exec `true`, hybrid vsock", &exec);
        println!();
        drop(agent);
    });
}
