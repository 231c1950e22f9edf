//! The directories at the top of an ext4 image, read straight from the image file.
//!
//! Every `vm start` asks whether the work disk has a stale nested `/root/root` (see
//! [`crate::flatten`]); spawning `debugfs` for that cost more than the rest of the start's disk
//! work together. This reads the same answer in a few small reads: the superblock, group 0's
//! descriptor, the root inode (inode 2) and the root directory's blocks.
//!
//! Only the common layout is read: a revision-1 superblock with the `filetype` feature, a root
//! directory held in direct extents (extent depth 0) or in the twelve direct block pointers of
//! an ext2/3-style inode. Anything else (inline data, encryption, case folding, `meta_bg`, a
//! deeper extent tree, a malformed entry) is `None`: the caller then asks `debugfs`, so an
//! unusual file system is still answered correctly, only more slowly. Like `debugfs`, it reads
//! the image as it is on disk (no journal replay); the VM is stopped while it runs.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

/// Where the superblock starts.
const SUPERBLOCK_AT: u64 = 1024;
/// `s_magic`.
const EXT4_MAGIC: u16 = 0xEF53;
/// `INCOMPAT_FILETYPE`: directory entries carry the file type.
const INCOMPAT_FILETYPE: u32 = 0x2;
/// `INCOMPAT_META_BG`: group descriptors are spread over the disk.
const INCOMPAT_META_BG: u32 = 0x10;
/// `INCOMPAT_64BIT`: block numbers and descriptors are 64-bit.
const INCOMPAT_64BIT: u32 = 0x80;
/// `INCOMPAT_INLINE_DATA`, `INCOMPAT_ENCRYPT`, `INCOMPAT_CASEFOLD`: directory layouts not read
/// here.
const INCOMPAT_UNREAD: u32 = 0x8000 | 0x1_0000 | 0x2_0000;
/// The root directory's inode number.
const ROOT_INODE: u64 = 2;
/// `S_IFMT` and `S_IFDIR`.
const S_IFMT: u16 = 0o170_000;
const S_IFDIR: u16 = 0o040_000;
/// `EXT4_EXTENTS_FL`, `EXT4_INLINE_DATA_FL` (inode flags).
const EXTENTS_FL: u32 = 0x8_0000;
const INLINE_DATA_FL: u32 = 0x1000_0000;
/// The extent header's magic.
const EXTENT_MAGIC: u16 = 0xF30A;
/// An extent longer than this is uninitialised (reads as zeros: no entries).
const EXTENT_INIT_MAX: u16 = 32_768;
/// Directory entry type of a directory.
const FT_DIR: u8 = 2;
/// The largest root directory read (bigger ones go to `debugfs`).
const MAX_DIR_BYTES: u64 = 16 << 20;

/// The names of the directories at the top of the ext4 file system in `image` (without `.`
/// and `..`), or `None` when its layout is not one this module reads (see the module doc) or
/// it cannot be read.
pub fn top_level_dirs(image: &Path) -> Option<Vec<String>> {
    let file = File::open(image).ok()?;
    read_root(&file).ok().flatten()
}

fn read_root(f: &File) -> io::Result<Option<Vec<String>>> {
    let sb = read_at(f, SUPERBLOCK_AT, 1024)?;
    if le16(&sb, 0x38) != EXT4_MAGIC || le32(&sb, 0x4C) < 1 {
        return Ok(None);
    }
    let incompat = le32(&sb, 0x60);
    if incompat & INCOMPAT_FILETYPE == 0 || incompat & (INCOMPAT_META_BG | INCOMPAT_UNREAD) != 0 {
        return Ok(None);
    }
    let log_block = le32(&sb, 0x18);
    if log_block > 6 {
        return Ok(None);
    }
    let block_size = 1024u64 << log_block;
    let inodes_per_group = u64::from(le32(&sb, 0x28));
    let inode_size = u64::from(le16(&sb, 0x58));
    if inodes_per_group < ROOT_INODE || inode_size < 128 {
        return Ok(None);
    }
    let wide = incompat & INCOMPAT_64BIT != 0;
    let desc_size = if wide { u64::from(le16(&sb, 0xFE)) } else { 32 };
    // Group 0's descriptor: the first one, in the block after the superblock's.
    let first_data_block = u64::from(le32(&sb, 0x14));
    let desc = read_at(f, (first_data_block + 1) * block_size, desc_size.max(32))?;
    let mut inode_table = u64::from(le32(&desc, 0x08));
    if wide && desc_size >= 64 {
        inode_table |= u64::from(le32(&desc, 0x28)) << 32;
    }
    let inode = read_at(
        f,
        inode_table * block_size + (ROOT_INODE - 1) * inode_size,
        128,
    )?;
    if le16(&inode, 0x00) & S_IFMT != S_IFDIR {
        return Ok(None);
    }
    let flags = le32(&inode, 0x20);
    if flags & INLINE_DATA_FL != 0 {
        return Ok(None);
    }
    let size = u64::from(le32(&inode, 0x04)) | (u64::from(le32(&inode, 0x6C)) << 32);
    if size > MAX_DIR_BYTES {
        return Ok(None);
    }
    let i_block = &inode[0x28..0x28 + 60];
    let count = size.div_ceil(block_size);
    let Some(blocks) = data_blocks(f, block_size, i_block, flags, wide, count)? else {
        return Ok(None);
    };
    let mut dirs = Vec::new();
    for block in blocks {
        let data = read_at(f, block * block_size, block_size)?;
        if !entries(&data, &mut dirs) {
            return Ok(None);
        }
    }
    Ok(Some(dirs))
}

/// The physical blocks holding the first `count` logical blocks of a directory whose inode
/// has `i_block` and `flags`; `None` for a layout not read here.
fn data_blocks(
    f: &File,
    block_size: u64,
    i_block: &[u8],
    flags: u32,
    wide: bool,
    count: u64,
) -> io::Result<Option<Vec<u64>>> {
    let mut blocks = Vec::new();
    if flags & EXTENTS_FL == 0 {
        // Twelve direct pointers; a directory needing indirect blocks is not read here.
        if count > 12 {
            return Ok(None);
        }
        for i in 0..usize::try_from(count).map_err(io::Error::other)? {
            match le32(i_block, i * 4) {
                0 => {}
                b => blocks.push(u64::from(b)),
            }
        }
        return Ok(Some(blocks));
    }
    let reader = Extents {
        f,
        block_size,
        wide,
        count,
    };
    if reader.walk(i_block, MAX_EXTENT_DEPTH, &mut blocks)? {
        Ok(Some(blocks))
    } else {
        Ok(None)
    }
}

/// How deep an extent tree may be (ext4 itself allows 5).
const MAX_EXTENT_DEPTH: u16 = 5;

/// Walks an extent tree for the blocks of the first `count` logical blocks.
struct Extents<'a> {
    f: &'a File,
    block_size: u64,
    wide: bool,
    count: u64,
}

impl Extents<'_> {
    /// Adds the blocks under `node` (an extent header and its entries) to `blocks`; `false`
    /// when the tree is malformed.
    fn walk(&self, node: &[u8], depth_left: u16, blocks: &mut Vec<u64>) -> io::Result<bool> {
        if node.len() < 12 || le16(node, 0) != EXTENT_MAGIC {
            return Ok(false);
        }
        let depth = le16(node, 6);
        if depth > depth_left {
            return Ok(false);
        }
        let entries = usize::from(le16(node, 2)).min((node.len() - 12) / 12);
        for e in 0..entries {
            let at = 12 + e * 12;
            if depth > 0 {
                // An index entry: ei_block, ei_leaf_lo, ei_leaf_hi.
                let mut leaf = u64::from(le32(node, at + 4));
                if self.wide {
                    leaf |= u64::from(le16(node, at + 8)) << 32;
                }
                let child = read_at(self.f, leaf * self.block_size, self.block_size)?;
                if !self.walk(&child, depth - 1, blocks)? {
                    return Ok(false);
                }
                continue;
            }
            let logical = u64::from(le32(node, at));
            let len = le16(node, at + 4);
            if len > EXTENT_INIT_MAX {
                continue;
            }
            let mut start = u64::from(le32(node, at + 8));
            if self.wide {
                start |= u64::from(le16(node, at + 6)) << 32;
            }
            for i in 0..u64::from(len) {
                if logical + i < self.count {
                    blocks.push(start + i);
                }
            }
        }
        Ok(true)
    }
}

/// Adds the directory names of one directory block to `dirs`; `false` when an entry is
/// malformed.
fn entries(block: &[u8], dirs: &mut Vec<String>) -> bool {
    let mut at = 0;
    while at + 8 <= block.len() {
        let inode = le32(block, at);
        let rec_len = usize::from(le16(block, at + 4));
        let name_len = usize::from(block[at + 6]);
        let file_type = block[at + 7];
        if rec_len < 8 || at + rec_len > block.len() || 8 + name_len > rec_len {
            return false;
        }
        if inode != 0 && file_type == FT_DIR {
            let name = &block[at + 8..at + 8 + name_len];
            if name != b"." && name != b".." {
                dirs.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        at += rec_len;
    }
    true
}

fn read_at(f: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; usize::try_from(len).map_err(io::Error::other)?];
    f.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    /// An ext4 image made by `mkfs.ext4 -d tree` with `options`, or `None` (with the reason
    /// printed) when mkfs.ext4 is missing.
    fn image(dir: &Path, name: &str, tree: &Path, options: &[&str]) -> Option<std::path::PathBuf> {
        let path = dir.join(name);
        let made = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(tree)
            .args(options)
            .arg(&path)
            .arg("64M")
            .status();
        match made {
            Ok(s) if s.success() => Some(path),
            Ok(s) => panic!("mkfs.ext4 {options:?} failed: {s}"),
            Err(e) => {
                eprintln!("skipped: mkfs.ext4 cannot run here: {e}");
                None
            }
        }
    }

    /// What `debugfs` lists, the reference the native read must agree with.
    fn debugfs_dirs(image: &Path) -> Vec<String> {
        crate::workdisk::top_level_dirs(image, Path::new("/")).unwrap()
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
                let native = top_level_dirs(&img);
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
    fn what_is_not_ext4_is_not_answered() {
        let tmp = tempfile::tempdir().unwrap();
        let junk = tmp.path().join("junk");
        std::fs::write(&junk, vec![0u8; 8192]).unwrap();
        assert_eq!(top_level_dirs(&junk), None);
        assert_eq!(top_level_dirs(&tmp.path().join("missing")), None);
        std::fs::write(&junk, b"short").unwrap();
        assert_eq!(top_level_dirs(&junk), None);
    }
}
