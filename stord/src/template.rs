//! Pre-formatted work-disk templates: a new work disk is a clone of one, not a `mkfs.ext4`.
//!
//! A template is an ext4 made exactly as [`workdisk::create`] makes a work disk (label, no
//! reserved blocks, seeded with the image's `/root`), kept in `<state>/stord/templates/` as
//! `<image key>-<MiB>.f3.ext4` (0600, stord's umask). `f3` is the format: since the second one
//! the journal is not written out (a hole, not 64 MiB of zeros per 8 GiB to copy), and since the
//! third the zero blocks mkfs writes (those reserved for growing the file system online, 4 MiB
//! per 8 GiB) are holes too. Templates of an earlier format (`<key>-<MiB>.ext4`,
//! `<key>-<MiB>.f<N>.ext4`) are never cloned, and are removed when a template is next made. The
//! image key hashes the rootfs path, size and modification time, so an image registered again
//! with other content gets new templates.
//!
//! A disk of `N` MiB is cloned from the template of exactly `N` MiB when there is one, else from
//! the largest smaller one of the same image, then grown (`resize2fs`); when there is none, the
//! template of `N` MiB is made first. The clone is a reflink (FICLONE) where the file system
//! can, else a sparse copy (holes kept), written under a staging name and renamed into place.
//!
//! A template is checked (`e2fsck -f -n`, its size) the first time this process uses it, and
//! remade when it is missing or fails the check.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::sys::files;
use crate::sys::tool;
use crate::workdisk::{self, MIB, WorkDiskError};

/// Deadline of the template check and of growing a clone.
const TOOL_TIMEOUT: Duration = Duration::from_secs(600);
/// The key of templates made without a seed image.
const EMPTY_KEY: &str = "empty";

/// The templates of one stord.
#[derive(Debug)]
pub struct Templates {
    dir: PathBuf,
    scratch: PathBuf,
    /// Templates checked by this process (file names); the lock also serialises making them.
    checked: Mutex<HashSet<String>>,
}

impl Templates {
    /// Templates kept in `dir` (created on first use); `scratch` is for temporary files.
    pub fn new(dir: PathBuf, scratch: PathBuf) -> Self {
        Self {
            dir,
            scratch,
            checked: Mutex::new(HashSet::new()),
        }
    }

    /// The directory the templates live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the work disk `path` of `mib` MiB, seeded with `/root` of the ext4 image `seed`,
    /// from a template. Nothing is left at `path` on failure.
    pub fn create_work_disk(
        &self,
        path: &Path,
        mib: u64,
        seed: Option<&Path>,
    ) -> Result<(), WorkDiskError> {
        let key = match seed {
            Some(image) => image_key(image)?,
            None => EMPTY_KEY.to_owned(),
        };
        let (template, template_mib) = self.template_for(&key, mib, seed)?;
        let staging = crate::backend::staging_path(path);
        let result = (|| {
            clone_file(&template, &staging)?;
            if template_mib < mib {
                grow_fresh(&staging, mib)?;
            }
            std::fs::rename(&staging, path).map_err(|source| WorkDiskError::Io {
                step: "renaming into place",
                path: path.to_owned(),
                source,
            })
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&staging);
        }
        result
    }

    /// The template to clone for a disk of `mib` MiB and its size: the exact size, else the
    /// largest smaller one, else a new one of `mib` MiB.
    fn template_for(
        &self,
        key: &str,
        mib: u64,
        seed: Option<&Path>,
    ) -> Result<(PathBuf, u64), WorkDiskError> {
        let mut checked = self.checked.lock().unwrap_or_else(PoisonError::into_inner);
        std::fs::create_dir_all(&self.dir).map_err(|source| WorkDiskError::Io {
            step: "creating",
            path: self.dir.clone(),
            source,
        })?;
        let mut sizes = self.sizes_of(key);
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        let candidates = sizes.into_iter().filter(|&s| s <= mib).collect::<Vec<_>>();
        for size in candidates {
            let name = file_name(key, size);
            let path = self.dir.join(&name);
            if checked.contains(&name) && path.is_file() {
                return Ok((path, size));
            }
            if is_sound(&path, size) {
                checked.insert(name);
                return Ok((path, size));
            }
            tracing::warn!(template = %path.display(), "removing a work-disk template that fails its check");
            let _ = std::fs::remove_file(&path);
            checked.remove(&name);
        }
        let name = file_name(key, mib);
        let path = self.dir.join(&name);
        self.remove_old_formats();
        workdisk::create(&path, mib, seed, &self.scratch)?;
        tracing::info!(template = %path.display(), mib, "made a work-disk template");
        checked.insert(name);
        Ok((path, mib))
    }

    /// Removes the templates of earlier formats, which are never cloned again. Called with the
    /// lock held, so no clone of one of them can be starting.
    fn remove_old_formats(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            if name.to_str().is_some_and(is_old_format) {
                match std::fs::remove_file(e.path()) {
                    Ok(()) => {
                        tracing::info!(template = %e.path().display(), "removed a work-disk template of an earlier format")
                    }
                    Err(err) => {
                        tracing::warn!(template = %e.path().display(), error = %err, "removing a work-disk template of an earlier format")
                    }
                }
            }
        }
    }

    /// The sizes of the templates of `key` on disk.
    fn sizes_of(&self, key: &str) -> Vec<u64> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let prefix = format!("{key}-");
        entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_prefix(&prefix)?
                    .strip_suffix(FORMAT_SUFFIX)?
                    .parse::<u64>()
                    .ok()
            })
            .collect()
    }
}

/// The suffix of templates of the current format (see the module doc).
const FORMAT_SUFFIX: &str = ".f3.ext4";

/// `<key>-<mib>.f3.ext4`.
fn file_name(key: &str, mib: u64) -> String {
    format!("{key}-{mib}{FORMAT_SUFFIX}")
}

/// Whether `name` is a template of an earlier format: `<key>-<mib>.ext4` (the first) or
/// `<key>-<mib>.f<N>.ext4` with another `N`.
fn is_old_format(name: &str) -> bool {
    if name.ends_with(FORMAT_SUFFIX) {
        return false;
    }
    let Some(stem) = name.strip_suffix(".ext4") else {
        return false;
    };
    let stem = match stem.rsplit_once(".f") {
        Some((before, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => before,
        _ => stem,
    };
    stem.rsplit_once('-')
        .is_some_and(|(_, mib)| !mib.is_empty() && mib.bytes().all(|b| b.is_ascii_digit()))
}

/// A key naming an image's content as registered: its path, size and modification time.
fn image_key(image: &Path) -> Result<String, WorkDiskError> {
    let (len, mtime) = crate::image::mtime_ns(image).map_err(|source| WorkDiskError::Io {
        step: "reading the size and time of",
        path: image.to_owned(),
        source,
    })?;
    let mut id = image.as_os_str().as_encoded_bytes().to_vec();
    id.extend_from_slice(&len.to_le_bytes());
    id.extend_from_slice(&mtime.to_le_bytes());
    Ok(format!("{:016x}", fnv1a64(&id)))
}

/// FNV-1a, 64 bits.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Whether the template at `path` has `mib` MiB and a clean ext4 (`e2fsck -f -n`).
fn is_sound(path: &Path, mib: u64) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    if meta.len() != mib.saturating_mul(MIB) {
        return false;
    }
    tool::run_ok(
        "e2fsck",
        &tool::args(&[&"-f", &"-n", &path]),
        &[0],
        TOOL_TIMEOUT,
    )
    .is_ok()
}

/// Clones `src` into the new file `dst` (0600): a reflink where possible, else a sparse copy;
/// synced.
fn clone_file(src: &Path, dst: &Path) -> Result<(), WorkDiskError> {
    let io = |step: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| WorkDiskError::Io { step, path, source }
    };
    let from = File::open(src).map_err(io("opening", src))?;
    let to = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dst)
        .map_err(io("creating", dst))?;
    if files::reflink(&from, &to).is_err() {
        to.set_len(0).map_err(io("truncating", dst))?;
        files::sparse_copy(&from, &to).map_err(io("copying the template into", dst))?;
    }
    to.sync_all().map_err(io("syncing", dst))
}

/// Grows a clone that was never mounted to `mib` MiB (no `e2fsck` first: the template was
/// checked and the clone is untouched).
fn grow_fresh(path: &Path, mib: u64) -> Result<(), WorkDiskError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|source| WorkDiskError::Io {
            step: "opening",
            path: path.to_owned(),
            source,
        })?;
    file.set_len(mib.saturating_mul(MIB))
        .map_err(|source| WorkDiskError::Io {
            step: "growing",
            path: path.to_owned(),
            source,
        })?;
    tool::run_ok("resize2fs", &tool::args(&[&path]), &[0], TOOL_TIMEOUT).map_err(|source| {
        WorkDiskError::Tool {
            step: "growing the file system of",
            path: path.to_owned(),
            source,
        }
    })?;
    file.sync_all().map_err(|source| WorkDiskError::Io {
        step: "syncing",
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_names_carry_key_size_and_format() {
        assert_eq!(file_name("abc", 64), "abc-64.f3.ext4");
        assert!(is_old_format("abc-64.ext4"));
        assert!(is_old_format("abc-64.f2.ext4"));
        assert!(!is_old_format("abc-64.f3.ext4"));
        assert!(!is_old_format("abc-64.fx.ext4"));
        assert!(!is_old_format("abc-64.ext4.staging"));
        assert!(!is_old_format("notes.ext4"));
        assert_ne!(fnv1a64(b"a"), fnv1a64(b"b"));
    }
}
