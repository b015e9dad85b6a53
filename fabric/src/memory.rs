// The one module allowed `unsafe` (the workspace denies it): see `map_file`.
#![allow(unsafe_code)]
//! Processor memories: one flat, bounds-checked byte region per processor.
//!
//! snet processors share no memory. Each one owns a [`ProcessorMemory`], and
//! adapters and other processors reach it only by DMA through the target's
//! access-validation table ([`crate::avt`]). Every access here is checked with
//! [`ProcessorMemory::check_range`] first: an address or length that comes off
//! the fabric is untrusted input, so a bad one yields a [`MemoryError`], never
//! a panic, and `addr + len` is computed with checked arithmetic.
//!
//! Memory is a `memmap2` mapping:
//!
//! - [`Backing::Anonymous`] (the default) is a private anonymous mapping. The
//!   operating system hands out zeroed pages lazily on first touch, so a large
//!   cluster (hundreds of processors with tens of MiB each) costs only the pages
//!   that are actually written.
//! - [`Backing::File`] maps a file that this module creates (or truncates) to
//!   the memory's size, so the bytes outlive the run for post-mortem
//!   inspection. Read the contract on [`Backing::File`] before using it.
//!
//! This is the only module of the project that contains `unsafe` code, and it
//! has exactly one `unsafe` block: the call that maps the backing file.

use std::fmt;
use std::fs::OpenOptions;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use memmap2::{MmapMut, MmapOptions};

/// A byte offset in one processor's memory (like vm-memory's `GuestAddress`).
///
/// It is only an offset: whether it is inside a given memory is decided by
/// [`ProcessorMemory::check_range`].
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProcAddr(pub u64);

impl ProcAddr {
    /// The first byte of every memory.
    pub const ZERO: ProcAddr = ProcAddr(0);

    /// The raw offset.
    pub const fn raw(self) -> u64 {
        self.0
    }

    /// `self + n`, or `None` if that overflows `u64`.
    pub const fn checked_add(self, n: u64) -> Option<ProcAddr> {
        match self.0.checked_add(n) {
            Some(a) => Some(ProcAddr(a)),
            None => None,
        }
    }
}

impl fmt::Display for ProcAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

/// What a [`ProcessorMemory`] is mapped from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Backing {
    /// Private anonymous memory, zero-filled and touched lazily by the OS.
    #[default]
    Anonymous,
    /// A shared mapping of a file at this path, created (or truncated) to the
    /// memory's size when the memory is built. The file is left in place when
    /// the memory is dropped, so its bytes can be inspected after the run.
    ///
    /// # Contract
    ///
    /// While the [`ProcessorMemory`] is alive, the file belongs to it: *no other
    /// process or thread may write to the file or change its length*, through a
    /// mapping or through `write`/`truncate`. Rust hands out `&[u8]` and
    /// `&mut [u8]` into the mapping; a byte changed underneath such a reference
    /// by someone else would be a data race, which is undefined behaviour, and
    /// shrinking the file would turn later accesses into `SIGBUS`. This module
    /// cannot enforce the contract (no OS primitive can stop another process
    /// that ignores it); it only guarantees that *this* process never touches the
    /// file except through this one mapping.
    ///
    /// What the contract allows: another process may map or read the file
    /// *read-only* (for example a file under `/dev/shm` watched by a debugger or
    /// a post-mortem dump tool). It then sees our writes as they happen, with no
    /// ordering or atomicity guarantees beyond single bytes; coping with torn
    /// values is that reader's business. Do not use a file-backed memory to
    /// share memory *writably* between processes.
    File(PathBuf),
}

/// Why a memory could not be built or an access was refused.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// A memory must have at least one byte.
    #[error("processor memory size must be at least 1 byte, got 0")]
    ZeroSize,
    /// The size does not fit this host's address space.
    #[error("processor memory size {size} bytes exceeds this host's address space ({max} bytes)")]
    TooLarge {
        /// The requested size.
        size: u64,
        /// The largest size this host can map (`usize::MAX`).
        max: u64,
    },
    /// An access reaches outside the memory, or `addr + len` overflows.
    #[error("access of {len} bytes at {addr} is outside processor memory of {size} bytes")]
    OutOfBounds {
        /// Start of the access.
        addr: ProcAddr,
        /// Length of the access in bytes.
        len: u64,
        /// Size of the memory in bytes.
        size: u64,
    },
    /// Two ranges asked for at once overlap.
    #[error("the ranges at {a} and {b} overlap")]
    Overlap {
        /// Start of the first range.
        a: ProcAddr,
        /// Start of the second range.
        b: ProcAddr,
    },
    /// Mapping anonymous memory failed.
    #[error("mapping {size} bytes of anonymous memory failed: {source}")]
    MapAnonymous {
        /// The requested size.
        size: u64,
        /// The OS error.
        source: io::Error,
    },
    /// Creating, sizing, mapping or flushing the backing file failed.
    #[error("{action} backing file {path} ({size} bytes) failed: {source}")]
    BackingFile {
        /// What was being done ("creating", "sizing", "mapping", "flushing").
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The memory size.
        size: u64,
        /// The OS error.
        source: io::Error,
    },
}

/// One processor's memory: a flat byte region with bounds-checked access.
pub struct ProcessorMemory {
    map: MmapMut,
    size: u64,
    backing: Backing,
}

impl fmt::Debug for ProcessorMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessorMemory")
            .field("size", &self.size)
            .field("backing", &self.backing)
            .finish_non_exhaustive()
    }
}

impl ProcessorMemory {
    /// Maps a memory of `len` bytes, zero-filled.
    ///
    /// `len == 0` is rejected with [`MemoryError::ZeroSize`] (a zero-length
    /// mapping is not portable and a processor without memory is a
    /// configuration mistake). For [`Backing::File`], the file is created, or
    /// truncated if it exists, and then extended to `len` bytes; see the
    /// contract documented there.
    pub fn new(len: u64, backing: Backing) -> Result<Self, MemoryError> {
        if len == 0 {
            return Err(MemoryError::ZeroSize);
        }
        let map_len = usize::try_from(len).map_err(|_| MemoryError::TooLarge {
            size: len,
            max: usize::MAX as u64,
        })?;
        let map = match &backing {
            Backing::Anonymous => MmapMut::map_anon(map_len)
                .map_err(|source| MemoryError::MapAnonymous { size: len, source })?,
            Backing::File(path) => map_file(path, len, map_len)?,
        };
        debug_assert_eq!(map.len(), map_len);
        Ok(Self {
            map,
            size: len,
            backing,
        })
    }

    /// Shorthand for `new(len, Backing::Anonymous)`.
    pub fn anonymous(len: u64) -> Result<Self, MemoryError> {
        Self::new(len, Backing::Anonymous)
    }

    /// The size in bytes (never zero).
    pub fn len(&self) -> u64 {
        self.size
    }

    /// Always `false`: zero-sized memories are rejected at construction.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// What the memory is mapped from.
    pub fn backing(&self) -> &Backing {
        &self.backing
    }

    /// `Ok` if the `len` bytes starting at `addr` all lie inside the memory.
    ///
    /// A zero-length access is fine anywhere in `0..=len()`. An access whose
    /// end `addr + len` overflows `u64` is out of bounds.
    pub fn check_range(&self, addr: ProcAddr, len: u64) -> Result<(), MemoryError> {
        self.range(addr, len).map(|_| ())
    }

    /// The checked index range of an access.
    fn range(&self, addr: ProcAddr, len: u64) -> Result<Range<usize>, MemoryError> {
        match addr.checked_add(len) {
            Some(end) if end.0 <= self.size => {
                // Both ends are <= self.size, which fits usize (checked in `new`).
                Ok(addr.0 as usize..end.0 as usize)
            }
            _ => Err(MemoryError::OutOfBounds {
                addr,
                len,
                size: self.size,
            }),
        }
    }

    /// Copies `buf.len()` bytes starting at `addr` into `buf`.
    pub fn read(&self, addr: ProcAddr, buf: &mut [u8]) -> Result<(), MemoryError> {
        let r = self.range(addr, buf.len() as u64)?;
        buf.copy_from_slice(&self.map[r]);
        Ok(())
    }

    /// Copies `data` into memory starting at `addr`.
    pub fn write(&mut self, addr: ProcAddr, data: &[u8]) -> Result<(), MemoryError> {
        let r = self.range(addr, data.len() as u64)?;
        self.map[r].copy_from_slice(data);
        Ok(())
    }

    /// The `len` bytes starting at `addr`, borrowed.
    pub fn slice(&self, addr: ProcAddr, len: u64) -> Result<&[u8], MemoryError> {
        let r = self.range(addr, len)?;
        Ok(&self.map[r])
    }

    /// The `len` bytes starting at `addr`, mutably borrowed.
    pub fn slice_mut(&mut self, addr: ProcAddr, len: u64) -> Result<&mut [u8], MemoryError> {
        let r = self.range(addr, len)?;
        Ok(&mut self.map[r])
    }

    /// Two disjoint ranges at once: `a` borrowed, `b` mutably (for a
    /// processor that reads one buffer in place while building another).
    /// Fails if either range leaves the memory or they overlap.
    pub fn split_pair(
        &mut self,
        a: (ProcAddr, u64),
        b: (ProcAddr, u64),
    ) -> Result<(&[u8], &mut [u8]), MemoryError> {
        let ra = self.range(a.0, a.1)?;
        let rb = self.range(b.0, b.1)?;
        if ra.start < rb.end && rb.start < ra.end {
            return Err(MemoryError::Overlap { a: a.0, b: b.0 });
        }
        let map: &mut [u8] = &mut self.map[..];
        if ra.end <= rb.start {
            let (lo, hi) = map.split_at_mut(rb.start);
            Ok((&lo[ra], &mut hi[..rb.end - rb.start]))
        } else {
            let (lo, hi) = map.split_at_mut(ra.start);
            Ok((&hi[..ra.end - ra.start], &mut lo[rb]))
        }
    }

    /// Sets the `len` bytes starting at `addr` to `byte`.
    pub fn fill(&mut self, addr: ProcAddr, len: u64, byte: u8) -> Result<(), MemoryError> {
        self.slice_mut(addr, len)?.fill(byte);
        Ok(())
    }

    /// For [`Backing::File`], writes dirty pages back to the file (`msync`);
    /// a no-op for anonymous memory.
    pub fn flush(&self) -> Result<(), MemoryError> {
        match &self.backing {
            Backing::Anonymous => Ok(()),
            Backing::File(path) => self.map.flush().map_err(|source| MemoryError::BackingFile {
                action: "flushing",
                path: path.clone(),
                size: self.size,
                source,
            }),
        }
    }
}

/// Creates/truncates `path`, sizes it to `len` bytes and maps it shared.
fn map_file(path: &Path, len: u64, map_len: usize) -> Result<MmapMut, MemoryError> {
    let err = |action: &'static str| {
        move |source: io::Error| MemoryError::BackingFile {
            action,
            path: path.to_path_buf(),
            size: len,
            source,
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(err("creating"))?;
    file.set_len(len).map_err(err("sizing"))?;
    // SAFETY: `map_mut` is unsafe because the mapping's bytes can change, or
    // vanish (SIGBUS), if the file is modified or truncated behind our back,
    // while Rust code holds `&[u8]`/`&mut [u8]` into it. Here:
    // - we just created or truncated the file and set its length to exactly
    //   `map_len` bytes, so the whole mapping is backed by the file;
    // - this process never accesses the file except through this mapping (the
    //   `File` handle is dropped right after mapping; the mapping keeps the
    //   file alive), and all access to the mapping goes through
    //   `ProcessorMemory`, whose `&self`/`&mut self` borrows serialize it;
    // - other processes must not write or resize the file while this memory is
    //   alive: that is the documented contract of `Backing::File`, which the
    //   caller accepts by choosing it (read-only observers are allowed).
    let map = unsafe { MmapOptions::new().len(map_len).map_mut(&file) }.map_err(err("mapping"))?;
    Ok(map)
}

/// Copies `len` bytes from `src` at `src_addr` to `dst` at `dst_addr` (one
/// `memcpy`; the borrow rules guarantee `src` and `dst` are different memories).
///
/// Both ranges are checked before any byte moves; on error nothing is copied.
pub fn copy_between(
    src: &ProcessorMemory,
    src_addr: ProcAddr,
    dst: &mut ProcessorMemory,
    dst_addr: ProcAddr,
    len: u64,
) -> Result<(), MemoryError> {
    let s = src.range(src_addr, len)?;
    let d = dst.range(dst_addr, len)?;
    dst.map[d].copy_from_slice(&src.map[s]);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn split_pair_lends_two_disjoint_ranges_and_refuses_overlap() {
        let mut m = ProcessorMemory::anonymous(1 << 16).unwrap();
        m.write(ProcAddr(100), &[1, 2, 3]).unwrap();
        for (a, b) in [
            (ProcAddr(100), ProcAddr(4096)),
            (ProcAddr(100), ProcAddr(0)),
        ] {
            let (r, w) = m.split_pair((a, 3), (b, 50)).unwrap();
            assert_eq!(r.len(), 3);
            assert_eq!(w.len(), 50);
            w[0] = 9;
        }
        assert_eq!(m.slice(ProcAddr(100), 3).unwrap(), &[1, 2, 3]);
        assert_eq!(m.slice(ProcAddr(0), 1).unwrap(), &[9]);
        assert!(matches!(
            m.split_pair((ProcAddr(100), 10), (ProcAddr(105), 10)),
            Err(MemoryError::Overlap { .. })
        ));
        assert!(
            m.split_pair((ProcAddr(100), 10), (ProcAddr(1 << 16), 1))
                .is_err()
        );
    }

    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    fn oob(r: Result<(), MemoryError>) -> bool {
        matches!(r, Err(MemoryError::OutOfBounds { .. }))
    }

    #[test]
    fn proc_addr_checked_add_and_display() {
        assert_eq!(ProcAddr(10).checked_add(5), Some(ProcAddr(15)));
        assert_eq!(ProcAddr(u64::MAX).checked_add(1), None);
        assert_eq!(
            ProcAddr(u64::MAX - 1).checked_add(1),
            Some(ProcAddr(u64::MAX))
        );
        assert_eq!(ProcAddr(0x1f00).to_string(), "0x1f00");
    }

    #[test]
    fn zero_size_is_rejected() {
        assert!(matches!(
            ProcessorMemory::anonymous(0),
            Err(MemoryError::ZeroSize)
        ));
    }

    #[test]
    fn bounds_at_the_edges() {
        let mut m = ProcessorMemory::anonymous(4 * KIB).unwrap();
        let size = m.len();
        assert!(!m.is_empty());
        // Last byte is fine, one past is not.
        assert!(m.check_range(ProcAddr(size - 1), 1).is_ok());
        assert!(oob(m.check_range(ProcAddr(size), 1)));
        assert!(oob(m.check_range(ProcAddr(size - 1), 2)));
        assert!(m.check_range(ProcAddr(0), size).is_ok());
        assert!(oob(m.check_range(ProcAddr(0), size + 1)));
        // Zero-length accesses up to and including the end are fine.
        assert!(m.check_range(ProcAddr(size), 0).is_ok());
        assert!(oob(m.check_range(ProcAddr(size + 1), 0)));
        // addr + len overflowing u64 is an error, not a panic.
        assert!(oob(m.check_range(ProcAddr(u64::MAX), 1)));
        assert!(oob(m.check_range(ProcAddr(2), u64::MAX)));
        assert!(oob(m.check_range(ProcAddr(u64::MAX), u64::MAX)));
        // The accessors check too.
        let mut b = [0u8; 2];
        assert!(oob(m.read(ProcAddr(size - 1), &mut b)));
        assert!(oob(m.write(ProcAddr(size - 1), &b)));
        assert!(oob(m.fill(ProcAddr(u64::MAX), 2, 0)));
        assert!(m.slice(ProcAddr(size), 1).is_err());
        assert!(m.slice_mut(ProcAddr(1), u64::MAX).is_err());
        assert_eq!(m.slice(ProcAddr(size), 0).unwrap().len(), 0);
        m.write(ProcAddr(size - 1), &[0xAB]).unwrap();
        assert_eq!(m.slice(ProcAddr(size - 1), 1).unwrap(), &[0xAB]);
    }

    #[test]
    fn error_messages_name_the_numbers() {
        let m = ProcessorMemory::anonymous(4096).unwrap();
        let e = m.check_range(ProcAddr(0x1000), 8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "access of 8 bytes at 0x1000 is outside processor memory of 4096 bytes"
        );
    }

    #[test]
    fn read_write_round_trip() {
        let mut m = ProcessorMemory::anonymous(64 * KIB).unwrap();
        let mut buf = [0xFFu8; 16];
        m.read(ProcAddr(100), &mut buf).unwrap();
        assert_eq!(buf, [0u8; 16], "fresh memory is zeroed");
        let data: Vec<u8> = (0..=255u8).collect();
        m.write(ProcAddr(1000), &data).unwrap();
        let mut back = vec![0u8; data.len()];
        m.read(ProcAddr(1000), &mut back).unwrap();
        assert_eq!(back, data);
        assert_eq!(m.slice(ProcAddr(1000), 256).unwrap(), &data[..]);
        m.slice_mut(ProcAddr(1000), 2)
            .unwrap()
            .copy_from_slice(&[7, 8]);
        assert_eq!(m.slice(ProcAddr(999), 4).unwrap(), &[0, 7, 8, 2]);
        m.fill(ProcAddr(2000), 10, 0x5A).unwrap();
        assert_eq!(
            m.slice(ProcAddr(1999), 12).unwrap(),
            &[
                0, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0x5A, 0
            ]
        );
    }

    #[test]
    fn file_backed_round_trip() {
        let path = std::env::temp_dir().join(format!(
            "snet-memory-test-{}-{:?}.bin",
            std::process::id(),
            std::thread::current().id()
        ));
        // A stale file of another size is truncated and resized.
        std::fs::write(&path, vec![0xEEu8; 10]).unwrap();
        {
            let mut m = ProcessorMemory::new(8 * KIB, Backing::File(path.clone())).unwrap();
            assert_eq!(m.backing(), &Backing::File(path.clone()));
            assert_eq!(
                m.slice(ProcAddr(0), 10).unwrap(),
                &[0u8; 10],
                "old contents truncated"
            );
            m.write(ProcAddr(4096), b"servernet").unwrap();
            m.write(ProcAddr(8 * KIB - 1), &[0x42]).unwrap();
            m.flush().unwrap();
            let mut back = [0u8; 9];
            m.read(ProcAddr(4096), &mut back).unwrap();
            assert_eq!(&back, b"servernet");
        }
        // The bytes outlive the memory, for post-mortem inspection.
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes.len() as u64, 8 * KIB);
        assert_eq!(&bytes[4096..4105], b"servernet");
        assert_eq!(bytes[8 * 1024 - 1], 0x42);
    }

    #[test]
    fn file_backed_reports_the_path() {
        let path = std::env::temp_dir()
            .join("snet-no-such-dir-for-memory-test")
            .join("mem.bin");
        let e = ProcessorMemory::new(4096, Backing::File(path.clone())).unwrap_err();
        assert!(
            matches!(&e, MemoryError::BackingFile { action: "creating", path: p, .. } if *p == path)
        );
        assert!(e.to_string().contains("snet-no-such-dir-for-memory-test"));
    }

    #[test]
    fn copy_between_memories() {
        let mut a = ProcessorMemory::anonymous(4 * KIB).unwrap();
        let mut b = ProcessorMemory::anonymous(8 * KIB).unwrap();
        a.write(ProcAddr(10), b"hello fabric").unwrap();
        copy_between(&a, ProcAddr(10), &mut b, ProcAddr(8 * KIB - 12), 12).unwrap();
        assert_eq!(
            b.slice(ProcAddr(8 * KIB - 12), 12).unwrap(),
            b"hello fabric"
        );
        // Either range out of bounds: error, and nothing copied.
        b.fill(ProcAddr(0), 8 * KIB, 0).unwrap();
        assert!(copy_between(&a, ProcAddr(4 * KIB - 4), &mut b, ProcAddr(0), 5).is_err());
        assert!(copy_between(&a, ProcAddr(10), &mut b, ProcAddr(8 * KIB - 4), 5).is_err());
        assert!(copy_between(&a, ProcAddr(10), &mut b, ProcAddr(u64::MAX), 5).is_err());
        assert!(
            b.slice(ProcAddr(0), 8 * KIB)
                .unwrap()
                .iter()
                .all(|&x| x == 0)
        );
        // Zero-length copies at the very end are fine.
        copy_between(&a, ProcAddr(4 * KIB), &mut b, ProcAddr(8 * KIB), 0).unwrap();
    }

    /// Resident set size of this process in bytes, from /proc (Linux only).
    #[cfg(target_os = "linux")]
    fn rss_bytes() -> Option<u64> {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * 4096)
    }

    #[test]
    fn many_large_memories_are_touched_lazily() {
        // A full-size cluster: 384 processors x 64 MiB = 24 GiB of address
        // space. Only the pages written become resident.
        #[cfg(target_os = "linux")]
        let before = rss_bytes();
        let mut mems: Vec<ProcessorMemory> = (0..384)
            .map(|_| ProcessorMemory::anonymous(64 * MIB).unwrap())
            .collect();
        for (i, m) in mems.iter_mut().enumerate() {
            let addr = ProcAddr((i as u64 * 4099) % (64 * MIB));
            m.write(addr, &[i as u8 ^ 0x5A]).unwrap();
        }
        for (i, m) in mems.iter().enumerate() {
            let addr = ProcAddr((i as u64 * 4099) % (64 * MIB));
            assert_eq!(m.slice(addr, 1).unwrap(), &[i as u8 ^ 0x5A]);
            assert_eq!(m.slice(ProcAddr(64 * MIB - 1), 1).unwrap(), &[0]);
        }
        #[cfg(target_os = "linux")]
        if let (Some(before), Some(after)) = (before, rss_bytes()) {
            // Eager touching would be 24 GiB; lazy is ~2 pages per memory.
            // The bound is loose because other tests run in parallel.
            let grown = after.saturating_sub(before);
            assert!(grown < 1024 * MIB, "RSS grew by {grown} bytes");
        }
    }
}
