//! Removing the guest directory when the VMM is gone, without ever crossing into a mount: what
//! `rm -rf --one-file-system` does. A mount that could not be detached (so an image's whole
//! tree would be under the directory) is left alone, with the directories above it.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// Removes `dir` and everything under it that is on the same file system as `dir`; what is on
/// another one (a mount point and all below it) stays, and so do its parents.
///
/// # Errors
/// When `dir` cannot be read; a part that cannot be removed is skipped.
pub fn remove_on_one_file_system(dir: &Path) -> io::Result<()> {
    let dev = std::fs::symlink_metadata(dir)?.dev();
    remove_below(dir, dev);
    let _ = std::fs::remove_dir(dir);
    Ok(())
}

fn remove_below(dir: &Path, dev: u64) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.dev() != dev {
            continue;
        }
        if meta.is_dir() {
            remove_below(&path, dev);
            let _ = std::fs::remove_dir(&path);
        } else {
            let _ = std::fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_on_one_file_system_goes_whole() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("guest");
        std::fs::create_dir_all(dir.join("rootfs/etc")).unwrap();
        std::fs::write(dir.join("rootfs/etc/hostname"), b"web").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("link")).unwrap();
        remove_on_one_file_system(&dir).unwrap();
        assert!(!dir.exists());
        // The symlink went, not what it pointed to.
        assert!(Path::new("/etc").is_dir());
        assert!(remove_on_one_file_system(&dir).is_err());
    }

    #[test]
    fn what_is_mounted_below_stays() {
        if !banger_testkit::require_root() {
            return;
        }
        // A private mount namespace on a thread of its own, so the host never sees the mount.
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("guest");
        let kept = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).unwrap();
            nix::mount::mount(
                None::<&str>,
                "/",
                None::<&str>,
                nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .unwrap();
            let mnt = dir.join("rootfs");
            std::fs::create_dir_all(&mnt).unwrap();
            std::fs::write(dir.join("fstab"), b"x").unwrap();
            nix::mount::mount(
                Some("tmpfs"),
                &mnt,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            std::fs::write(mnt.join("precious"), b"image data").unwrap();
            remove_on_one_file_system(&dir).unwrap();
            (
                mnt.join("precious").exists(),
                dir.join("fstab").exists(),
                dir.exists(),
            )
        })
        .join()
        .unwrap();
        assert_eq!(kept, (true, false, true), "(precious, fstab, dir)");
    }
}
