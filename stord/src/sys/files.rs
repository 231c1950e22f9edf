//! File-level primitives: the ext4 superblock check, reflink clones (FICLONE), hole-preserving
//! sparse copies (SEEK_DATA/SEEK_HOLE + copy_file_range), free space and a stable short hash.

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Where the ext4 superblock's magic number lives: the superblock starts at byte 1024 and
/// `s_magic` is at offset 0x38 in it.
pub const EXT4_MAGIC_OFFSET: u64 = 1080;
/// `EXT4_SUPER_MAGIC` (also ext2/ext3, which share the layout).
pub const EXT4_MAGIC: u16 = 0xEF53;

/// Whether `file` starts with an ext2/3/4 superblock.
pub fn has_ext4_magic(file: &mut File) -> io::Result<bool> {
    let mut magic = [0u8; 2];
    file.seek(SeekFrom::Start(EXT4_MAGIC_OFFSET))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(u16::from_le_bytes(magic) == EXT4_MAGIC),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(e) => Err(e),
    }
}

/// Makes `dst` share `src`'s extents (FICLONE). Fails with `EOPNOTSUPP`/`EINVAL` where the file
/// system cannot, and `EXDEV` across file systems.
pub fn reflink(src: &File, dst: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // for the duration of the call and the kernel keeps no reference to them.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE, src.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Copies `src` into `dst` (a new, empty file), preserving holes: only the data ranges that
/// `SEEK_DATA`/`SEEK_HOLE` report are copied, then the length is set. Returns the bytes copied.
pub fn sparse_copy(src: &File, dst: &File) -> io::Result<u64> {
    let len = src.metadata()?.len();
    dst.set_len(len)?;
    let mut copied = 0u64;
    let mut pos = 0u64;
    while pos < len {
        let Some(data) = seek(src, pos, libc::SEEK_DATA)? else {
            break; // only a hole remains
        };
        let hole = seek(src, data, libc::SEEK_HOLE)?.unwrap_or(len).min(len);
        copy_range(src, dst, data, hole - data)?;
        copied += hole - data;
        pos = hole;
    }
    Ok(copied)
}

/// `lseek(fd, offset, whence)`; `None` for ENXIO (no more data past `offset`).
fn seek(file: &File, offset: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
    // SAFETY: lseek on a valid descriptor has no memory-safety preconditions.
    let rc = unsafe { libc::lseek(file.as_raw_fd(), off, whence) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENXIO) {
            return Ok(None);
        }
        return Err(err);
    }
    Ok(u64::try_from(rc).ok())
}

/// Copies `len` bytes at `offset` from `src` to the same offset in `dst`, in the kernel
/// (copy_file_range), falling back to read/write where that is not supported.
fn copy_range(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut off_in = libc::loff_t::try_from(offset + done)
            .map_err(|_| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        let mut off_out = off_in;
        let chunk = usize::try_from((len - done).min(1 << 30)).unwrap_or(1 << 30);
        // SAFETY: both descriptors are valid; the offset pointers point to live locals that the
        // kernel updates and does not keep.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &raw mut off_in,
                dst.as_raw_fd(),
                &raw mut off_out,
                chunk,
                0,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => {
                    copy_range_userspace(src, dst, offset + done, len - done)
                }
                _ => Err(err),
            };
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source file shrank while it was being copied",
            ));
        }
        done += u64::try_from(n).unwrap_or(0);
    }
    Ok(())
}

fn copy_range_userspace(src: &File, dst: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt as _;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    while done < len {
        let want = usize::try_from((len - done).min(buf.len() as u64)).unwrap_or(buf.len());
        let n = src.read_at(&mut buf[..want], offset + done)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "source file shrank while it was being copied",
            ));
        }
        dst.write_all_at(&buf[..n], offset + done)?;
        done += n as u64;
    }
    Ok(())
}

/// Free bytes available to an unprivileged writer in the file system holding `path`.
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    Ok(st.blocks_available().saturating_mul(st.fragment_size()))
}

/// Bytes actually allocated to `path` (holes excluded).
pub fn allocated_bytes(path: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt as _;
    Ok(std::fs::metadata(path)?.blocks() * 512)
}

/// FNV-1a, 32 bits: a short hash that is stable across Rust versions and runs (the standard
/// library's hasher is not), used to tag the devices of one state directory.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in bytes {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::os::unix::fs::FileExt as _;

    use super::*;

    #[test]
    fn ext4_magic_is_recognised_and_other_files_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fake.ext4");
        let f = File::create(&p).unwrap();
        f.set_len(4096).unwrap();
        f.write_all_at(&EXT4_MAGIC.to_le_bytes(), EXT4_MAGIC_OFFSET)
            .unwrap();
        assert!(has_ext4_magic(&mut File::open(&p).unwrap()).unwrap());

        let q = dir.path().join("text");
        File::create(&q).unwrap().write_all(b"hello").unwrap();
        assert!(!has_ext4_magic(&mut File::open(&q).unwrap()).unwrap());
    }

    #[test]
    fn sparse_copy_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src_p = dir.path().join("src");
        let src = File::create(&src_p).unwrap();
        let len = 64 << 20;
        src.set_len(len).unwrap();
        src.write_all_at(b"head", 0).unwrap();
        src.write_all_at(b"middle", 32 << 20).unwrap();
        src.write_all_at(b"tail", len - 4).unwrap();
        src.sync_all().unwrap();
        drop(src);

        let dst_p = dir.path().join("dst");
        let dst = File::create(&dst_p).unwrap();
        let copied = sparse_copy(&File::open(&src_p).unwrap(), &dst).unwrap();
        dst.sync_all().unwrap();
        assert!(
            copied < len / 4,
            "copied {copied} of {len} bytes: holes were filled"
        );
        assert_eq!(
            std::fs::read(&src_p).unwrap(),
            std::fs::read(&dst_p).unwrap()
        );
        let allocated = allocated_bytes(&dst_p).unwrap();
        assert!(allocated < len / 4, "copy allocates {allocated} bytes");
    }

    #[test]
    fn fnv_is_stable() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
    }
}
