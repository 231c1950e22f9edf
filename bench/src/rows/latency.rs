//! Control-plane latency: each VM operation through the CLI, interleaved with the kernel and
//! disk work that operation cannot avoid, done directly in the same namespace; once per stord
//! back-end. The timed commands export no spans (as a user's do by default); after each timed
//! cycle the same cycle runs traced, untimed, so each row also says how much of the command's
//! time each service spent serving it.
//!
//! | operation | reference |
//! |---|---|
//! | `vm create --no-start` | `cp --sparse=always` (sparse-copy) or `cp --reflink=always` (reflink) of the image's rootfs + `truncate` + `mkfs.ext4` of the work disk |
//! | `vm start` | `ip tuntap add mode tap` + `ip link set master <bridge> up` |
//! | `vm stop` | `ip link del` of that tap |
//! | `vm delete` | `rm` of the two disk files |
//! | `vm create --wait` (create to healthy agent) | none: the simulator boots no kernel, so this is the control plane's and the agent's start |
//! | `banger --version` | none: the CLI's process start, the floor of every row |

use std::time::{Duration, Instant};

use super::{Samples, compare};
use crate::fixture::{Backend, Bench, WORK_DISK_MIB, time};
use crate::spans;
use crate::table::Row;

/// The variable that points a command's trace exporter at the bench's receiver.
const OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How long to wait for the last spans to be exported after the last command.
const SPAN_WAIT: Duration = Duration::from_secs(30);

/// One operation: its label, the CLI command that names its trace (`None`: its spans are not
/// told apart from another row's), and its samples.
struct Op {
    what: String,
    command: Option<&'static str>,
    ours: Samples,
    reference: Samples,
}

/// The samples of one latency run.
pub(crate) struct Latency {
    ops: Vec<Op>,
    /// `banger --version`: the floor.
    pub(crate) version: Samples,
    backend: Backend,
}

impl Latency {
    /// One row per operation with each service's share when the stack was traced, then the
    /// floor. With `breakdown`, each command's span breakdown is printed too.
    pub(crate) fn rows(&self, bench: &Bench, breakdown: bool) -> Vec<Row> {
        let spans = bench.receiver.as_ref().map(|r| {
            let deletes = self
                .ops
                .iter()
                .find(|op| op.command == Some("banger vm delete"))
                .map_or(0, |op| op.ours.ok_count());
            wait_for_spans(r, deletes);
            r.spans()
        });
        let mut rows: Vec<Row> = self
            .ops
            .iter()
            .map(|op| {
                let row = compare(&op.what, &op.ours, &op.reference);
                let Some(command) = op.command else {
                    return row;
                };
                if breakdown && let Some(all) = spans.as_deref() {
                    let steps = spans::breakdown(all, command);
                    print!("{}", spans::render_breakdown(&op.what, &steps));
                }
                match spans.as_deref().map(|s| spans::shares(s, command)) {
                    Some(Some((shares, n))) => {
                        let mut row = row.add_note(&format!(
                            "spans of {n}: {} of the command",
                            spans::describe(&shares)
                        ));
                        row.shares = shares;
                        row
                    }
                    Some(None) => row.add_note("no spans of this command arrived"),
                    None => row,
                }
            })
            .collect();
        rows.push(compare(
            &format!(
                "{}: banger --version (CLI floor, no ref)",
                self.backend.label()
            ),
            &self.version,
            &Samples::default(),
        ));
        rows
    }
}

/// Waits (polling, up to [`SPAN_WAIT`]) until `deletes` `banger vm delete` commands have been
/// exported: the last command of every cycle, so the rest are in by then.
fn wait_for_spans(receiver: &banger_testkit::otlp::OtlpReceiver, deletes: usize) {
    let end = Instant::now() + SPAN_WAIT;
    while Instant::now() < end
        && spans::roots(&receiver.spans(), "banger vm delete").len() < deletes
    {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs `reps` create/start/stop/delete cycles of one VM, each step followed by its reference.
pub(crate) fn measure(bench: &Bench, backend: Backend, reps: usize) -> Latency {
    let label = backend.label();
    let copy = match backend {
        Backend::Sparse => "--sparse=always",
        Backend::Reflink => "--reflink=always",
    };
    let op = |what: &str, command: &'static str| Op {
        what: format!("{label}: {what}"),
        command: Some(command),
        ours: Samples::default(),
        reference: Samples::default(),
    };
    let mut ops = vec![
        op(
            &format!("vm create --no-start (ref: cp {copy}+mkfs)"),
            "banger vm create",
        ),
        op("vm start (ref: tap add+enslave)", "banger vm start"),
        op("vm stop (ref: tap del)", "banger vm stop"),
        op("vm delete (ref: rm disks)", "banger vm delete"),
        Op {
            command: None,
            ..op("create to healthy agent (vm create --wait, no ref)", "")
        },
    ];
    let mut version = Samples::default();
    // Timed commands export no spans, as a user's do (the exporter's flush at exit would be
    // counted otherwise); the same cycle, traced and untimed, then gives the services' shares.
    let untraced = |args: &[&str]| {
        let mut c = bench.banger(args);
        c.env_remove(OTLP_ENDPOINT);
        c
    };
    // One untimed cycle first: a fresh stack makes its work-disk template and its buckets on
    // the first create, once per stack, which would otherwise be every row's p99.
    for args in [
        &["vm", "create", "warmup", "--no-start"][..],
        &["vm", "start", "warmup"],
        &["vm", "stop", "warmup"],
        &["vm", "delete", "warmup"],
    ] {
        let _ = time(&mut untraced(args));
    }
    for i in 0..reps {
        let name = format!("lat{i}");
        let tap = format!("bnref{i}");
        let root = bench.scratch.join(format!("root-{i}.ext4"));
        let work = bench.scratch.join(format!("work-{i}.ext4"));
        let (root, work, rootfs) = (root.display(), work.display(), bench.rootfs.display());
        let steps: [(&[&str], String); 4] = [
            (
                &["vm", "create", &name, "--no-start"],
                format!(
                    "cp {copy} {rootfs} {root} && truncate -s {WORK_DISK_MIB}M {work} \
                     && mkfs.ext4 -q -F {work}"
                ),
            ),
            (
                &["vm", "start", &name],
                format!(
                    "ip tuntap add dev {tap} mode tap && ip link set {tap} master {} up",
                    bench.bridge
                ),
            ),
            (&["vm", "stop", &name], format!("ip link del {tap}")),
            (&["vm", "delete", &name], format!("rm -f {root} {work}")),
        ];
        let mut failed = false;
        for ((args, script), op) in steps.iter().zip(ops.iter_mut()) {
            if failed {
                break;
            }
            let run = time(&mut untraced(args));
            failed = run.is_err();
            op.ours.push(run);
            op.reference.push(time(&mut bench.sh(script)));
        }
        if failed {
            // Leave nothing behind for the next cycle: untimed.
            let _ = time(&mut bench.banger(&["vm", "delete", &name]));
            let _ = time(&mut bench.sh(&format!("ip link del {tap}; rm -f {root} {work}")));
        }
        let traced = format!("tr{i}");
        for args in [
            &["vm", "create", &traced, "--no-start"][..],
            &["vm", "start", &traced],
            &["vm", "stop", &traced],
            &["vm", "delete", &traced],
        ] {
            let _ = time(&mut bench.banger(args));
        }
        // Create to a healthy guest agent, then an untimed delete, both untraced.
        let healthy = format!("hl{i}");
        ops[4]
            .ours
            .push(time(&mut untraced(&["vm", "create", &healthy, "--wait"])));
        let _ = time(&mut untraced(&["vm", "delete", &healthy]));
        version.push(time(&mut bench.banger(&["--version"])));
    }
    Latency {
        ops,
        version,
        backend,
    }
}
