//! Control-plane latency: each VM operation through the CLI, interleaved with the kernel and
//! disk work that operation cannot avoid, done directly in the same namespace.
//!
//! | operation | reference |
//! |---|---|
//! | `vm create --no-start` | `cp --sparse=always` of the image's rootfs + `truncate` + `mkfs.ext4` of the work disk |
//! | `vm start` | `ip tuntap add mode tap` + `ip link set master <bridge> up` |
//! | `vm stop` | `ip link del` of that tap |
//! | `vm delete` | `rm` of the two disk files |
//! | `banger --version` | none: the CLI's process start, the floor of every row |

use super::{Samples, compare};
use crate::fixture::{Bench, WORK_DISK_MIB, time};
use crate::table::Row;

/// The samples of one latency run.
pub(crate) struct Latency {
    ops: [(&'static str, Samples, Samples); 4],
    /// `banger --version`: the floor.
    pub(crate) version: Samples,
}

impl Latency {
    /// One row per operation, then the floor.
    pub(crate) fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self
            .ops
            .iter()
            .map(|(what, ours, reference)| compare(what, ours, reference))
            .collect();
        rows.push(compare(
            "banger --version (CLI floor, no ref)",
            &self.version,
            &Samples::default(),
        ));
        rows
    }
}

/// Runs `reps` create/start/stop/delete cycles of one VM, each step followed by its reference.
pub(crate) fn measure(bench: &Bench, reps: usize) -> Latency {
    let mut ops = [
        (
            "vm create --no-start (ref: cp+mkfs)",
            Samples::default(),
            Samples::default(),
        ),
        (
            "vm start (ref: tap add+enslave)",
            Samples::default(),
            Samples::default(),
        ),
        (
            "vm stop (ref: tap del)",
            Samples::default(),
            Samples::default(),
        ),
        (
            "vm delete (ref: rm disks)",
            Samples::default(),
            Samples::default(),
        ),
    ];
    let mut version = Samples::default();
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
                    "cp --sparse=always {rootfs} {root} && truncate -s {WORK_DISK_MIB}M {work} \
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
        for ((args, script), (_, ours, reference)) in steps.iter().zip(ops.iter_mut()) {
            if failed {
                break;
            }
            let run = time(&mut bench.banger(args));
            failed = run.is_err();
            ours.push(run);
            reference.push(time(&mut bench.sh(script)));
        }
        if failed {
            // Leave nothing behind for the next cycle: untimed.
            let _ = time(&mut bench.banger(&["vm", "delete", &name]));
            let _ = time(&mut bench.sh(&format!("ip link del {tap}; rm -f {root} {work}")));
        }
        version.push(time(&mut bench.banger(&["--version"])));
    }
    Latency { ops, version }
}
