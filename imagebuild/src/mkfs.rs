//! Making the ext4 image from the tree with `mkfs.ext4 -d` (no mount needed), after checking
//! the tree fits.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::process::Command;

use crate::run::{Cancel, run};
use crate::spec::{ImageSize, format_mib};
use crate::{BuildError, Stage};

/// Room ext4 needs beyond the files (inode tables, journal, reserved blocks), in percent of
/// the tree plus a fixed part, in MiB. Measured: a 269 MiB minimal Debian tree fills 330 MiB of
/// a 1 GiB image (with the 64 MiB journal of that size).
const OVERHEAD_PERCENT: u64 = 15;
const OVERHEAD_FIXED_MIB: u64 = 80;

/// The space the files of `tree` take on disk, in MiB (hard links counted once).
pub fn tree_mib(tree: &Path) -> std::io::Result<u64> {
    let mut seen = std::collections::HashSet::new();
    let mut bytes: u64 = 0;
    let mut stack = vec![tree.to_owned()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let m = e.path().symlink_metadata()?;
            if m.nlink() > 1 && !m.is_dir() && !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            bytes = bytes.saturating_add(m.blocks().saturating_mul(512).max(4096));
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(bytes.div_ceil(1 << 20))
}

/// The smallest image that holds a tree of `tree_mib`.
pub fn needed_mib(tree_mib: u64) -> u64 {
    tree_mib + tree_mib * OVERHEAD_PERCENT / 100 + OVERHEAD_FIXED_MIB
}

/// Checks that a tree of `tree_mib` fits an image of `size`.
pub fn check_fits(tree_mib: u64, size: ImageSize) -> Result<(), BuildError> {
    let need = needed_mib(tree_mib);
    if size.mib() < need {
        return Err(BuildError::Invalid(format!(
            "image size {size} is too small for the packages: the root tree takes {}, so the \
             image needs at least {}; build again with --size {} or more",
            format_mib(tree_mib),
            format_mib(need),
            format_mib(need.next_multiple_of(256))
        )));
    }
    Ok(())
}

/// Makes `image` (sparse, `size`) an ext4 file system holding `tree`.
pub(crate) fn mkfs(
    cancel: &Cancel,
    tree: &Path,
    image: &Path,
    size: ImageSize,
    label: &str,
) -> Result<(), BuildError> {
    let f = std::fs::File::create(image).map_err(|e| {
        BuildError::stage(Stage::Mkfs, format!("creating {}: {e}", image.display()))
    })?;
    f.set_len(size.mib() << 20)
        .map_err(|e| BuildError::stage(Stage::Mkfs, format!("sizing the image: {e}")))?;
    drop(f);
    // Firecracker's guest kernels (5.10, 6.1) predate ext4's orphan_file; newer e2fsprogs turn
    // it on by default. Older e2fsprogs do not know the name: then plain defaults are right.
    let attempt = |features: Option<&str>| {
        let mut c = Command::new("mkfs.ext4");
        c.args(["-q", "-F", "-L"]).arg(label);
        if let Some(f) = features {
            c.args(["-O", f]);
        }
        c.arg("-d").arg(tree).arg(image);
        run(cancel, Stage::Mkfs, &mut c)
    };
    match attempt(Some("^orphan_file")) {
        Ok(_) => Ok(()),
        Err(BuildError::Stage { message, .. }) if message.contains("orphan_file") => {
            attempt(None).map(drop)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_too_big_for_the_size_is_refused_with_the_size_to_use() {
        let size: ImageSize = "300M".parse().unwrap();
        let e = check_fits(269, size).unwrap_err().to_string();
        assert!(e.contains("too small for the packages"), "{e}");
        assert!(e.contains("--size 512M"), "{e}");
        check_fits(269, "1G".parse().unwrap()).unwrap();
        assert!(needed_mib(269) > 269);
    }

    #[test]
    fn tree_size_counts_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![1u8; 3 << 20]).unwrap();
        let mib = tree_mib(dir.path()).unwrap();
        assert!((3..=4).contains(&mib), "{mib}");
    }
}
