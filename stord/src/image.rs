//! Checking the files of an image before it is registered.
//!
//! A path in a request is only a name until it is checked: each one is canonicalised (symlinks
//! and `..` resolved), must be a regular file stord can open for reading, must not lie inside
//! stord's own state directory (otherwise a request could register another VM's root or the
//! registry itself as an "image" and have stord read it), and the root filesystem must carry
//! the ext4 superblock magic. Only canonical paths are stored.

use std::fs::File;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::sys::files;

/// A checked image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedFile {
    /// Canonical path.
    pub path: PathBuf,
    /// Size in bytes.
    pub bytes: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
}

/// Why a file cannot be part of an image.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// No path was given.
    #[error("the {role} path is empty")]
    Empty {
        /// Kernel, initrd or rootfs.
        role: &'static str,
    },
    /// The path is relative: it would depend on stord's working directory.
    #[error("the {role} path {path:?} must be absolute")]
    Relative {
        /// Role.
        role: &'static str,
        /// The path.
        path: String,
    },
    /// It does not exist or cannot be resolved.
    #[error("the {role} {path:?} cannot be found")]
    Missing {
        /// Role.
        role: &'static str,
        /// The path.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is a directory, device or other non-regular file.
    #[error("the {role} {path} is not a regular file (it is a {kind})")]
    NotRegular {
        /// Role.
        role: &'static str,
        /// The canonical path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// It cannot be opened for reading.
    #[error("the {role} {path} cannot be read")]
    Unreadable {
        /// Role.
        role: &'static str,
        /// The canonical path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It lies in stord's state directory.
    #[error(
        "the {role} {path} is inside stord's state directory {state}; register files kept elsewhere"
    )]
    InsideStateDir {
        /// Role.
        role: &'static str,
        /// The canonical path.
        path: PathBuf,
        /// The state directory.
        state: PathBuf,
    },
    /// The root filesystem is not ext4.
    #[error("the rootfs {path} is not an ext4 image (no ext4 superblock magic at byte 1080)")]
    NotExt4 {
        /// The canonical path.
        path: PathBuf,
    },
}

fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if ft.is_dir() {
        "directory"
    } else if ft.is_block_device() {
        "block device"
    } else if ft.is_char_device() {
        "character device"
    } else if ft.is_fifo() {
        "fifo"
    } else if ft.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Checks one image file; `ext4` additionally requires the ext4 magic. `state_dir` must be
/// canonical.
pub fn check_file(
    role: &'static str,
    raw: &str,
    state_dir: &Path,
    ext4: bool,
) -> Result<CheckedFile, FileError> {
    if raw.trim().is_empty() {
        return Err(FileError::Empty { role });
    }
    if !Path::new(raw).is_absolute() {
        return Err(FileError::Relative {
            role,
            path: raw.to_owned(),
        });
    }
    let path = std::fs::canonicalize(raw).map_err(|source| FileError::Missing {
        role,
        path: raw.to_owned(),
        source,
    })?;
    if path.starts_with(state_dir) {
        return Err(FileError::InsideStateDir {
            role,
            path,
            state: state_dir.to_owned(),
        });
    }
    let meta = std::fs::metadata(&path).map_err(|source| FileError::Missing {
        role,
        path: raw.to_owned(),
        source,
    })?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular {
            role,
            path,
            kind: kind_of(meta.file_type()),
        });
    }
    let mut file = File::open(&path).map_err(|source| FileError::Unreadable {
        role,
        path: path.clone(),
        source,
    })?;
    if ext4 {
        let magic = files::has_ext4_magic(&mut file).map_err(|source| FileError::Unreadable {
            role,
            path: path.clone(),
            source,
        })?;
        if !magic {
            return Err(FileError::NotExt4 { path });
        }
    }
    Ok(CheckedFile {
        bytes: meta.len(),
        mtime_ns: meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
        path,
    })
}

/// The modification time `check_file` would record for `path` now.
pub fn mtime_ns(path: &Path) -> std::io::Result<(u64, i64)> {
    let meta = std::fs::metadata(path)?;
    Ok((
        meta.len(),
        meta.mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec()),
    ))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::FileExt as _;

    use super::*;

    fn ext4_file(dir: &Path) -> PathBuf {
        let p = dir.join("rootfs.ext4");
        let f = File::create(&p).unwrap();
        f.set_len(8192).unwrap();
        f.write_all_at(&files::EXT4_MAGIC.to_le_bytes(), files::EXT4_MAGIC_OFFSET)
            .unwrap();
        p
    }

    #[test]
    fn a_good_rootfs_is_canonicalised() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let p = ext4_file(dir.path());
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let twisty = format!("{}/../rootfs.ext4", sub.display());
        let c = check_file("rootfs", &twisty, state.path(), true).unwrap();
        assert_eq!(c.path, std::fs::canonicalize(p).unwrap());
        assert_eq!(c.bytes, 8192);
    }

    #[test]
    fn bad_paths_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let s = state.path();
        let missing = dir.path().join("missing");
        let cases: Vec<(String, &str)> = vec![
            (String::new(), "is empty"),
            ("relative/kernel".into(), "must be absolute"),
            (missing.display().to_string(), "cannot be found"),
            (
                dir.path().display().to_string(),
                "is not a regular file (it is a directory)",
            ),
            ("/dev/null".into(), "character device"),
        ];
        for (raw, want) in cases {
            let err = check_file("kernel", &raw, s, false)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{raw:?}: {err}");
        }
    }

    #[test]
    fn a_file_inside_the_state_dir_is_refused() {
        let state = tempfile::tempdir().unwrap();
        let p = ext4_file(state.path());
        let canon = std::fs::canonicalize(state.path()).unwrap();
        let err = check_file("rootfs", p.to_str().unwrap(), &canon, true).unwrap_err();
        assert!(matches!(err, FileError::InsideStateDir { .. }), "{err}");
    }

    #[test]
    fn a_rootfs_that_is_not_ext4_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let p = dir.path().join("kernel");
        std::fs::write(&p, b"not a file system").unwrap();
        let raw = p.to_str().unwrap();
        assert!(check_file("kernel", raw, state.path(), false).is_ok());
        let err = check_file("rootfs", raw, state.path(), true).unwrap_err();
        assert!(err.to_string().contains("not an ext4 image"), "{err}");
    }
}
