//! Per-VM work disks: sparse ext4 images mounted at `/root` in the guest.
//!
//! - **create**: a sparse file of the requested size, formatted with `mkfs.ext4`. It is seeded
//!   with the image's own `/root` (read out of the image with `debugfs rdump`, never by
//!   mounting the image), so the guest keeps a normal root environment (dotfiles, SSH keys)
//!   even though the disk shadows the image's `/root`. Written under a staging name and renamed
//!   into place when complete.
//! - **resize**: grow only: `e2fsck -f -p`, extend the file, `resize2fs`. A failure after the
//!   file grew shrinks it back, leaving the old, intact file system.
//! - **repair**: see [`crate::flatten`]. Detection is read-only: the root directory is read
//!   straight from the image ([`banger_ext4probe`]), with `debugfs ls` for a layout that module
//!   does not read; only a disk that has the stale layout is mounted, briefly, in a private
//!   mount namespace ([`crate::sys::mount`]).
//!
//! Everything here blocks and runs external tools with deadlines.

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::flatten::{self, FlattenError, FlattenReport};
use crate::sys::mount::{self, MountError};
use crate::sys::tool::{self, ToolError};

/// The work disk's file name in a VM's volume directory.
pub const WORK_FILE: &str = "work.ext4";
/// The file system label of work disks (`LABEL=banger-work` in a guest's fstab).
pub const LABEL: &str = "banger-work";
/// `mkfs.ext4 -E` options of every work disk: see [`create`].
const LAZY_INIT: &str = "lazy_itable_init=1,lazy_journal_init=1";
/// How far a work disk can grow online (mounted, inside a guest) before the kernel has to
/// convert it to `meta_bg`: this many times its size. See [`mkfs_layout`].
const ONLINE_GROWTH: u64 = 64;
/// The smallest disk mke2fs formats with 4 KiB blocks by default (smaller ones get 1 KiB).
const FOUR_K_FROM_MIB: u64 = 512;
/// Deadline of `mkfs.ext4` (lazy inode tables make it fast even for large disks).
const MKFS_TIMEOUT: Duration = Duration::from_secs(120);
/// Deadline of `e2fsck` and `resize2fs`.
const RESIZE_TIMEOUT: Duration = Duration::from_secs(600);
/// Deadline of a `debugfs` read.
const DEBUGFS_TIMEOUT: Duration = Duration::from_secs(60);
/// One MiB.
pub const MIB: u64 = 1 << 20;

/// Why a work disk operation failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkDiskError {
    /// A file operation failed.
    #[error("{step} {path}")]
    Io {
        /// What was being done.
        step: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A tool failed.
    #[error("{step} {path}")]
    Tool {
        /// What was being done.
        step: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: ToolError,
    },
    /// The requested size is smaller than the disk.
    #[error("the work disk is {current} MiB; shrinking it to {requested} MiB is not supported")]
    Shrink {
        /// Current size.
        current: u64,
        /// Requested size.
        requested: u64,
    },
    /// Mounting for the repair failed.
    #[error("mounting the work disk to repair its nested home")]
    Mount(#[from] MountError),
    /// The repair itself failed.
    #[error("repairing the nested home")]
    Flatten(#[from] FlattenError),
}

fn io_err<'a>(
    step: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> WorkDiskError + 'a {
    move |source| WorkDiskError::Io {
        step,
        path: path.to_owned(),
        source,
    }
}

fn tool_err<'a>(
    step: &'static str,
    path: &'a Path,
) -> impl FnOnce(ToolError) -> WorkDiskError + 'a {
    move |source| WorkDiskError::Tool {
        step,
        path: path.to_owned(),
        source,
    }
}

/// Creates the work disk `path` of `mib` MiB, seeded with `/root` of the ext4 image `seed`.
/// `scratch` is a directory of stord's own for temporary files. Nothing is left behind on
/// failure.
pub fn create(
    path: &Path,
    mib: u64,
    seed: Option<&Path>,
    scratch: &Path,
) -> Result<(), WorkDiskError> {
    let staging = crate::backend::staging_path(path);
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&staging)
            .map_err(io_err("creating", &staging))?;
        file.set_len(mib.saturating_mul(MIB))
            .map_err(io_err("sizing", &staging))?;
        drop(file);
        let seed_dir = tempfile::Builder::new()
            .prefix("seed-")
            .tempdir_in(scratch)
            .map_err(io_err("creating a scratch directory in", scratch))?;
        let home = match seed {
            Some(image) => extract_home(image, seed_dir.path())?,
            None => None,
        };
        // The journal and inode tables are not written out: the file is new and sparse, so
        // they read back as zeros, exactly what writing them would have left. A written
        // journal was 64 MiB of zeros in every 8 GiB disk, copied into every VM's disk on a
        // file system without reflink, and freed again at every delete.
        let (block, extended) = mkfs_layout(mib);
        let mut args: Vec<&std::ffi::OsStr> = ["-F", "-q", "-m", "0", "-L", LABEL, "-E"]
            .iter()
            .map(std::convert::AsRef::as_ref)
            .collect();
        args.push(extended.as_ref());
        if let Some(b) = block {
            args.push("-b".as_ref());
            args.push(b.as_ref());
        }
        if let Some(h) = &home {
            args.push("-d".as_ref());
            args.push(h.as_os_str());
        }
        args.push(staging.as_os_str());
        tool::run_ok("mkfs.ext4", &args, &[0], MKFS_TIMEOUT)
            .map_err(tool_err("formatting", &staging))?;
        OpenOptions::new()
            .write(true)
            .open(&staging)
            .and_then(|f| f.sync_all())
            .map_err(io_err("syncing", &staging))?;
        std::fs::rename(&staging, path).map_err(io_err("renaming into place", path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&staging);
    }
    result
}

/// The block size (`-b`) and extended options (`-E`) of a work disk of `mib` MiB.
///
/// mke2fs reserves room for the group descriptors of a file system grown online to 1,024 times
/// its size (`resize_inode`), and writes out those reserved blocks: 4 MiB of every 8 GiB disk,
/// which every VM's sparse copy of a template copied and synced again, and some 20 times more
/// than the rest of the empty file system. A disk of 512 MiB or more reserves for
/// [`ONLINE_GROWTH`] times its size instead (an 8 GiB disk then holds 0.44 MiB, and grows online
/// to 512 GiB). Past that, the kernel's online resize converts the file system to `meta_bg` and
/// goes on; offline growth (`banger vm set --disk`, [`grow`] at the next start) needs no
/// reservation. The block size is said explicitly, because the reservation is counted in
/// blocks.
fn mkfs_layout(mib: u64) -> (Option<&'static str>, String) {
    if mib < FOUR_K_FROM_MIB {
        return (None, LAZY_INIT.to_owned());
    }
    let blocks = mib.saturating_mul(MIB / 4096);
    let resize = blocks
        .saturating_mul(ONLINE_GROWTH)
        .min(u64::from(u32::MAX));
    if resize <= blocks {
        return (Some("4096"), LAZY_INIT.to_owned());
    }
    (Some("4096"), format!("{LAZY_INIT},resize={resize}"))
}

/// Copies `/root` out of the ext4 image `image` into `into/root`; `None` when the image has no
/// `/root` directory.
fn extract_home(image: &Path, into: &Path) -> Result<Option<PathBuf>, WorkDiskError> {
    if !top_level_dirs(image, Path::new("/"))?
        .iter()
        .any(|d| d == "root")
    {
        return Ok(None);
    }
    let cmd = format!("rdump /root {}", into.display());
    tool::run_ok(
        "debugfs",
        &tool::args(&[&"-R", &cmd, &image]),
        &[0],
        DEBUGFS_TIMEOUT,
    )
    .map_err(tool_err("reading /root out of", image))?;
    let home = into.join("root");
    Ok(home.is_dir().then_some(home))
}

/// The names of the directories directly under `dir` in the ext4 image `image`, read with
/// `debugfs ls -p` (lines `/inode/mode/uid/gid/name/size/`), without mounting it.
pub fn top_level_dirs(image: &Path, dir: &Path) -> Result<Vec<String>, WorkDiskError> {
    let cmd = format!("ls -p {}", dir.display());
    let out = tool::run_ok(
        "debugfs",
        &tool::args(&[&"-R", &cmd, &image]),
        &[0],
        DEBUGFS_TIMEOUT,
    )
    .map_err(tool_err("listing", image))?;
    Ok(parse_ls_dirs(&out.stdout))
}

/// Parses `debugfs ls -p` output into directory names (without `.` and `..`).
fn parse_ls_dirs(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|line| {
            let mut f = line.strip_prefix('/')?.split('/');
            let _inode = f.next()?;
            let mode = f.next()?;
            let _uid = f.next()?;
            let _gid = f.next()?;
            let name = f.next()?;
            (mode.starts_with("04") && name != "." && name != "..").then(|| name.to_owned())
        })
        .collect()
}

/// Grows the work disk `path` to `mib` MiB; returns whether anything changed.
pub fn grow(path: &Path, mib: u64) -> Result<bool, WorkDiskError> {
    let old_len = std::fs::metadata(path)
        .map_err(io_err("reading the size of", path))?
        .len();
    let new_len = mib.saturating_mul(MIB);
    if new_len < old_len {
        return Err(WorkDiskError::Shrink {
            current: old_len / MIB,
            requested: mib,
        });
    }
    if new_len == old_len {
        return Ok(false);
    }
    // resize2fs insists on a freshly checked file system. -p repairs only what is safe;
    // exit 1 means "errors corrected".
    tool::run_ok(
        "e2fsck",
        &tool::args(&[&"-f", &"-p", &path]),
        &[0, 1],
        RESIZE_TIMEOUT,
    )
    .map_err(tool_err("checking", path))?;
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("opening", path))?;
    file.set_len(new_len).map_err(io_err("growing", path))?;
    if let Err(e) = tool::run_ok("resize2fs", &tool::args(&[&path]), &[0], RESIZE_TIMEOUT) {
        // The file system was not grown: give the file its old size back.
        if let Err(undo) = file.set_len(old_len) {
            tracing::warn!(path = %path.display(), error = %undo, "shrinking the file back after a failed resize");
        }
        return Err(tool_err("growing the file system of", path)(e));
    }
    file.sync_all().map_err(io_err("syncing", path))?;
    Ok(true)
}

/// Repairs a stale nested `/root/root` layout on the work disk `path` (see [`crate::flatten`]).
/// `tag` names the loop device used while it is mounted.
pub fn repair_nested_home(
    path: &Path,
    scratch: &Path,
    tag: &str,
) -> Result<FlattenReport, WorkDiskError> {
    // Read natively when the layout allows (every start asks), else with debugfs.
    let top = match banger_ext4probe::top_level_dirs(path) {
        Some(dirs) => dirs,
        None => top_level_dirs(path, Path::new("/"))?,
    };
    if !top.iter().any(|d| d == flatten::NESTED) {
        return Ok(FlattenReport::default());
    }
    let report = mount::with_mounted_ext4(path, scratch, tag, flatten::flatten_nested_home)??;
    Ok(report)
}

#[cfg(test)]
mod tests {
    #[test]
    fn large_disks_reserve_for_64_times_their_size_and_small_ones_keep_mkfs_defaults() {
        use super::mkfs_layout;
        assert_eq!(
            mkfs_layout(8192),
            (
                Some("4096"),
                format!("{},resize={}", super::LAZY_INIT, 8192u64 * 256 * 64)
            )
        );
        assert_eq!(mkfs_layout(64), (None, super::LAZY_INIT.to_owned()));
        // 16 TiB is already the most a resize inode can describe: mkfs's own choice stays.
        assert_eq!(
            mkfs_layout(16 << 20),
            (Some("4096"), super::LAZY_INIT.to_owned())
        );
        // In between, the reservation is capped at what mkfs accepts.
        assert_eq!(
            mkfs_layout(1 << 20).1,
            format!("{},resize={}", super::LAZY_INIT, u32::MAX)
        );
    }

    use super::*;

    /// An ext4 image made by `mkfs.ext4 -d tree` with `options`, or `None` (announced as a
    /// skip) when mkfs.ext4 cannot run here.
    fn image(dir: &Path, name: &str, tree: &Path, options: &[&str]) -> Option<std::path::PathBuf> {
        banger_testkit::ext4_image_of(tree, &dir.join(name), "64M", options)
    }

    /// What `debugfs` lists, the reference the native read must agree with.
    fn debugfs_dirs(image: &Path) -> Vec<String> {
        top_level_dirs(image, Path::new("/")).unwrap()
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    #[test]
    fn the_native_listing_agrees_with_debugfs_on_every_layout_mkfs_makes() {
        let tmp = tempfile::tempdir().unwrap();
        let small = tmp.path().join("small");
        for d in ["root", "etc", ".ssh"] {
            std::fs::create_dir_all(small.join(d).join("inner")).unwrap();
        }
        std::fs::write(small.join("file"), "x").unwrap();
        std::fs::write(small.join("root2"), "a file, not a directory").unwrap();
        // Enough entries for a multi-block, hash-indexed root directory.
        let big = tmp.path().join("big");
        for i in 0..600 {
            std::fs::create_dir_all(big.join(format!("directory-with-a-long-name-{i:04}")))
                .unwrap();
            std::fs::write(big.join(format!("file-with-a-long-name-{i:04}")), "").unwrap();
        }
        let layouts: [(&str, &[&str]); 4] = [
            ("default", &[]),
            ("1k-blocks", &["-b", "1024"]),
            ("no-64bit", &["-O", "^64bit"]),
            (
                "ext2-style",
                &["-O", "^extent,^64bit,^flex_bg,^metadata_csum"],
            ),
        ];
        for (tree, tag) in [(&small, "small"), (&big, "big")] {
            for (layout, options) in layouts {
                let name = format!("{tag}-{layout}.ext4");
                let Some(img) = image(tmp.path(), &name, tree, options) else {
                    return;
                };
                let native = banger_ext4probe::top_level_dirs(&img);
                let reference = sorted(debugfs_dirs(&img));
                if tag == "big" && layout == "ext2-style" && native.is_none() {
                    // A root directory beyond the direct pointers: left to debugfs.
                    continue;
                }
                let native = native.unwrap_or_else(|| panic!("{name}: not read natively"));
                assert_eq!(sorted(native), reference, "{name}");
                if tag == "small" {
                    assert!(reference.contains(&"root".to_owned()), "{reference:?}");
                    assert!(!reference.contains(&"root2".to_owned()), "{reference:?}");
                } else {
                    assert_eq!(reference.len(), 601, "{name}: 600 + lost+found");
                }
            }
        }
    }

    #[test]
    fn debugfs_listings_parse_into_directories() {
        let out = "/2/040755/0/0/.//\n/2/040755/0/0/..//\n/11/040700/0/0/lost+found//\n\
                   /13/100644/0/0/file/2/\n/14/040700/0/0/root//\n\n";
        assert_eq!(parse_ls_dirs(out), vec!["lost+found", "root"]);
        assert!(parse_ls_dirs("debugfs 1.47.0\n").is_empty());
    }
}
