//! The build's scratch directory: `<state_dir>/images/.build-<name>-<pid>`, holding the root
//! tree and the image until it is renamed into place. Removed when dropped, on success, error,
//! cancel or panic; a directory left by a build that was SIGKILLed is removed by the next build
//! (its pid no longer runs).

use std::path::{Path, PathBuf};

/// Prefix of scratch directories.
pub const SCRATCH_PREFIX: &str = ".build-";

/// A scratch directory, removed on drop.
#[derive(Debug)]
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates `<images_dir>/.build-<name>-<pid>`.
    pub fn create(images_dir: &Path, name: &str) -> std::io::Result<Self> {
        let dir = images_dir.join(format!("{SCRATCH_PREFIX}{name}-{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The root tree.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("root")
    }

    /// The image being made (renamed into place at the end).
    pub fn image(&self) -> PathBuf {
        self.dir.join("rootfs.ext4.partial")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Every mount a tool made lived in a private mount namespace that died with it, so this
        // never descends into a mounted /proc or /dev.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes scratch directories of builds whose process is gone.
pub fn sweep_stale(images_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(images_dir) else {
        return;
    };
    for e in entries.filter_map(Result::ok) {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(SCRATCH_PREFIX)
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The scratch directories under `images_dir` (tests check none is left).
pub fn leftovers(images_dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(images_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(SCRATCH_PREFIX))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_is_removed_on_drop_and_stale_ones_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let s = Scratch::create(dir.path(), "deb").unwrap();
        std::fs::create_dir_all(s.tree().join("etc")).unwrap();
        assert_eq!(leftovers(dir.path()), vec![s.path().to_owned()]);
        drop(s);
        assert!(leftovers(dir.path()).is_empty());
        // A dead build's directory goes; a live one's stays.
        let dead = dir
            .path()
            .join(format!("{SCRATCH_PREFIX}deb-{}", u32::MAX - 1));
        let live = dir
            .path()
            .join(format!("{SCRATCH_PREFIX}deb-{}", std::process::id()));
        std::fs::create_dir_all(&dead).unwrap();
        std::fs::create_dir_all(&live).unwrap();
        sweep_stale(dir.path());
        assert!(!dead.exists());
        assert!(live.exists());
    }
}
