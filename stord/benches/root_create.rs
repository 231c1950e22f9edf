//! Root create/delete latency per back-end for a 1 GiB image holding 128 MiB of data, with the
//! time of the equivalent `cp` as a reference.
//!
//! - sparse copy: in a temporary directory on the local file system (`$TMPDIR`);
//! - reflink: on a loop-mounted xfs (`mkfs.xfs -m reflink=1`) made here (needs root), unmounted
//!   and detached at the end;
//! - device-mapper: only where `/dev/mapper/control` exists (this says why it did not run).
//!
//! Run: `cargo bench -p banger-stord --bench root_create` (as root for reflink). Set
//! `ROOT_BENCH_ITERS` to change the iteration count (default 20).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use banger_proto::VmId;
use banger_stord::backend::dm::{BlockDevices as _, DmSnapshot};
use banger_stord::backend::reflink::Reflink;
use banger_stord::backend::sparse::SparseCopy;
use banger_stord::backend::{RootBackend, RootSpec};
use banger_stord::retry::Backoff;
use banger_stord::sys::devmapper::LinuxBlockDevices;

const IMAGE_MIB: u64 = 1024;
const DATA_MIB: usize = 128;

fn run(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{program} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A 1 GiB ext4 image with `DATA_MIB` of incompressible data in one file.
fn make_image(dir: &Path) -> Result<PathBuf, String> {
    let src = dir.join("src");
    std::fs::create_dir_all(&src).map_err(|e| e.to_string())?;
    let mut data = vec![0u8; DATA_MIB << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(src.join("data.bin"), &data).map_err(|e| e.to_string())?;
    let image = dir.join("rootfs.ext4");
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-d",
            src.to_str().unwrap_or_default(),
            image.to_str().unwrap_or_default(),
            &format!("{IMAGE_MIB}M"),
        ],
    )?;
    std::fs::remove_dir_all(&src).map_err(|e| e.to_string())?;
    Ok(image)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let last = sorted.len() - 1;
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "an index into a short list of samples"
    )]
    let i = ((last as f64) * p).round() as usize;
    sorted[i.min(last)]
}

fn summary(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{label:<34} n={:<3} p50 {:>9.3} ms   p99 {:>9.3} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
    );
}

fn vm(n: usize) -> VmId {
    VmId::new(format!("{n:032x}")).unwrap_or_else(|e| panic!("{e}"))
}

fn bench_backend(
    label: &str,
    backend: &dyn RootBackend,
    image: &Path,
    dir: &Path,
    iters: usize,
) -> Result<(), String> {
    let (mut create, mut delete) = (Vec::new(), Vec::new());
    for n in 0..iters {
        let id = vm(n);
        let vm_dir = dir.join(id.as_str());
        std::fs::create_dir_all(&vm_dir).map_err(|e| e.to_string())?;
        let spec = RootSpec {
            vm: &id,
            image_rootfs: image,
            dir: &vm_dir,
        };
        let t = Instant::now();
        let root = backend.create(&spec).map_err(|e| e.to_string())?;
        create.push(t.elapsed());
        if n == 0 {
            println!("  ({label}: roots made as {})", root.backend);
        }
        let t = Instant::now();
        backend
            .remove(&spec, Backoff::REMOVAL)
            .map_err(|e| e.to_string())?;
        delete.push(t.elapsed());
        std::fs::remove_dir(&vm_dir).map_err(|e| e.to_string())?;
    }
    summary(&format!("{label} create"), create);
    summary(&format!("{label} delete"), delete);
    Ok(())
}

fn bench_cp(label: &str, flag: &str, image: &Path, dir: &Path, iters: usize) -> Result<(), String> {
    let mut samples = Vec::new();
    let dst = dir.join("cp-reference.ext4");
    for _ in 0..iters {
        let t = Instant::now();
        run(
            "cp",
            &[
                flag,
                image.to_str().unwrap_or_default(),
                dst.to_str().unwrap_or_default(),
            ],
        )?;
        // cp does not sync; the back-ends do (a root must survive a crash), so sync here too.
        std::fs::File::open(&dst)
            .and_then(|f| f.sync_all())
            .map_err(|e| e.to_string())?;
        samples.push(t.elapsed());
        std::fs::remove_file(&dst).map_err(|e| e.to_string())?;
    }
    summary(label, samples);
    Ok(())
}

/// A loop-mounted xfs with reflink, removed on drop.
struct Xfs {
    point: PathBuf,
    dev: String,
}

impl Xfs {
    fn new(dir: &Path) -> Result<Self, String> {
        let img = dir.join("xfs.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(4 << 30))
            .map_err(|e| e.to_string())?;
        let img_s = img.to_str().unwrap_or_default();
        run("mkfs.xfs", &["-q", "-m", "reflink=1", img_s])?;
        let dev = run("losetup", &["--find", "--show", img_s])?
            .trim()
            .to_owned();
        let point = dir.join("mnt");
        std::fs::create_dir_all(&point).map_err(|e| e.to_string())?;
        let x = Self { point, dev };
        run("mount", &[&x.dev, x.point.to_str().unwrap_or_default()])?;
        Ok(x)
    }
}

impl Drop for Xfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.point).status();
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn main() {
    let iters: usize = std::env::var("ROOT_BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    println!(
        "root create/delete, {IMAGE_MIB} MiB ext4 image with {DATA_MIB} MiB of data, {iters} \
         iterations each"
    );
    let tmp = match tempfile::tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("temporary directory: {e}");
            return;
        }
    };

    // Sparse copy on the local file system.
    let local = (|| -> Result<(), String> {
        let image = make_image(tmp.path())?;
        let roots = tmp.path().join("roots");
        std::fs::create_dir_all(&roots).map_err(|e| e.to_string())?;
        bench_backend("sparse-copy (local fs)", &SparseCopy, &image, &roots, iters)?;
        bench_cp(
            "reference: cp --sparse=always",
            "--sparse=always",
            &image,
            &roots,
            iters,
        )
    })();
    if let Err(e) = local {
        eprintln!("sparse-copy: {e}");
    }

    // Reflink on a loop-mounted xfs.
    if !nix::unistd::geteuid().is_root() {
        println!("reflink: not run (needs root to loop-mount an xfs)");
    } else {
        let reflink = (|| -> Result<(), String> {
            let xfs = Xfs::new(tmp.path())?;
            let image = make_image(&xfs.point)?;
            let roots = xfs.point.join("roots");
            std::fs::create_dir_all(&roots).map_err(|e| e.to_string())?;
            bench_backend("reflink (loop xfs)", &Reflink, &image, &roots, iters)?;
            bench_cp(
                "reference: cp --reflink=always",
                "--reflink=always",
                &image,
                &roots,
                iters,
            )?;
            // On xfs, copy_file_range may share extents instead of copying: this row shows
            // what the sparse-copy back-end costs there, not what a byte copy costs.
            bench_backend(
                "sparse-copy (loop xfs, cfr)",
                &SparseCopy,
                &image,
                &roots,
                iters,
            )?;
            drop(xfs);
            Ok(())
        })();
        if let Err(e) = reflink {
            eprintln!("reflink: {e}");
        }
    }

    // Device-mapper snapshots over loop devices, where the kernel has them.
    let devices = Arc::new(LinuxBlockDevices::open());
    match devices.dm_unavailable() {
        Some(why) => println!("dm-snapshot: not run ({why})"),
        None => {
            let dm = (|| -> Result<(), String> {
                let image = make_image(tmp.path())?;
                let roots = tmp.path().join("dm-roots");
                std::fs::create_dir_all(&roots).map_err(|e| e.to_string())?;
                let backend = DmSnapshot::new(devices.clone(), "benchdm0".into());
                bench_backend(
                    "dm-snapshot (loop devices)",
                    &backend,
                    &image,
                    &roots,
                    iters,
                )
            })();
            if let Err(e) = dm {
                eprintln!("dm-snapshot: {e}");
            }
        }
    }
}
