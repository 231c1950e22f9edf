//! Lifecycle latency of vm-controller.
//!
//! Two setups, each labelled in the output:
//!
//! - `doubles`: the controller over a real nats-server and SQLite, with doubles of stord, netd,
//!   the agent and the hypervisor (guest shutdown after CtrlAltDel takes 200 ms). This measures
//!   the controller's own overhead and shows whether stops of many VMs overlap.
//! - `fcsim` (root only): the real stord, netd and agent with the Firecracker SIMULATOR in a
//!   private network namespace. No guest kernel boots; the numbers are the host-side cost.
//!
//! Prints p50/p99 of create (with start), stop, start and delete over N VMs, and the wall time
//! of stopping 1, 10 and 20 VMs concurrently vs one after the other.
//!
//! `cargo bench -p banger-vm-controller --bench lifecycle` (build the service binaries first
//! for the fcsim part).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss,
    clippy::tests_outside_test_module,
    unreachable_pub,
    reason = "a benchmark binary: a panic is a failed run; percentiles are approximate"
)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/sim.rs"]
mod sim;

use std::future::Future;
use std::time::{Duration, Instant};

use banger_bus::Bus;
use banger_proto::HostId;
use banger_proto::op::{Operation, vm};
use banger_proto::vm::{VmInfo, VmOpReply, VmRefRequest, VmState};

/// VMs per latency series.
const SERIES: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn report(setup: &str, op: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{setup:8} {op:14} n={:3}  p50={:8.1} ms  p99={:8.1} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
    );
}

async fn timed<T>(f: impl Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let v = f.await;
    (v, t.elapsed())
}

/// The operations, over whichever setup.
trait Driver {
    fn create(&self, name: String) -> impl Future<Output = VmInfo>;
    fn op<O: VmOp>(&self, vm: VmInfo) -> impl Future<Output = VmOpReply>;
}

/// An operation on one VM that answers with it (`vm::Stop`, `vm::Start`, `vm::Delete`).
trait VmOp: Operation<At = HostId, Request = VmRefRequest, Reply = VmOpReply> {}
impl<O: Operation<At = HostId, Request = VmRefRequest, Reply = VmOpReply>> VmOp for O {}

struct Doubles<'a>(&'a common::Harness);

impl Driver for Doubles<'_> {
    async fn create(&self, name: String) -> VmInfo {
        self.0.create(&name).await
    }
    async fn op<O: VmOp>(&self, vm: VmInfo) -> VmOpReply {
        self.0.op::<O>(&vm.id).await.unwrap()
    }
}

struct Real(Bus);

impl Driver for Real {
    async fn create(&self, name: String) -> VmInfo {
        sim::create(&self.0, &name, Duration::from_secs(120)).await
    }
    async fn op<O: VmOp>(&self, vm: VmInfo) -> VmOpReply {
        sim::call::<O>(
            &self.0,
            &sim::host(),
            &VmRefRequest { id: vm.id.clone() },
            Duration::from_secs(120),
        )
        .await
        .unwrap()
    }
}

async fn lifecycle_series(setup: &str, d: &impl Driver) {
    let (mut create, mut stop, mut start, mut delete) = (vec![], vec![], vec![], vec![]);
    for i in 0..SERIES {
        let (vm, t) = timed(d.create(format!("lat{i}"))).await;
        assert_eq!(vm.state, VmState::Running);
        create.push(t);
        let (_, t) = timed(d.op::<vm::Stop>(vm.clone())).await;
        stop.push(t);
        let (_, t) = timed(d.op::<vm::Start>(vm.clone())).await;
        start.push(t);
        let (_, t) = timed(d.op::<vm::Delete>(vm)).await;
        delete.push(t);
    }
    report(setup, "create+start", create);
    report(setup, "stop", stop);
    report(setup, "start", start);
    report(setup, "delete", delete);
}

async fn stop_fanout(setup: &str, d: &impl Driver) {
    for n in [1usize, 10, 20] {
        let mut vms = Vec::new();
        for i in 0..n {
            vms.push(d.create(format!("fan{n}x{i}")).await);
        }
        let (_, concurrent) = timed(futures::future::join_all(
            vms.iter().map(|v| d.op::<vm::Stop>(v.clone())),
        ))
        .await;
        for v in &vms {
            d.op::<vm::Start>(v.clone()).await;
        }
        let (_, serial) = timed(async {
            for v in &vms {
                d.op::<vm::Stop>(v.clone()).await;
            }
        })
        .await;
        println!(
            "{setup:8} stop x{n:<2}         concurrent={:8.1} ms  serial={:8.1} ms",
            concurrent.as_secs_f64() * 1e3,
            serial.as_secs_f64() * 1e3
        );
        for v in vms {
            d.op::<vm::Delete>(v).await;
        }
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let fakes = common::Fakes {
            vmm: common::FakeVmm::new(Duration::from_millis(200)),
            ..common::Fakes::default()
        };
        let h = common::Harness::start_with(common::test_config(), fakes).await;
        println!("doubles: real nats-server + SQLite, doubled stord/netd/agent/hypervisor (200 ms guest shutdown)");
        lifecycle_series("doubles", &Doubles(&h)).await;
        stop_fanout("doubles", &Doubles(&h)).await;
    });

    if !banger_testkit::is_root() {
        println!("fcsim: skipped (needs root for network namespaces and taps)");
        return;
    }
    let bins = match sim::bins() {
        Ok(b) => b,
        Err(why) => {
            println!("fcsim: skipped ({why})");
            return;
        }
    };
    println!("fcsim: real stord/netd/agent + Firecracker SIMULATOR (no guest kernel boots)");
    let stack = sim::Stack::start(bins, 10_000, "");
    let dir = stack.dir.path().to_owned();
    stack.run(move |bus| async move {
        sim::register_image(&bus, &dir).await;
        let d = Real(bus);
        lifecycle_series("fcsim", &d).await;
        stop_fanout("fcsim", &d).await;
    });
}
