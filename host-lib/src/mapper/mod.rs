//! DMA mapping: which parts of a processor's memory a device may reach.
//!
//! # Descriptors carry offsets, not pointers
//!
//! host-lib shares memory with the adapter the way AF_XDP shares its UMEM:
//! the processor registers a few regions once (its rings and its buffer
//! pool), and everything that travels through the rings afterwards names
//! memory by **offset** inside those regions, never by host pointer. An RX
//! descriptor says "chunk at offset `0x4_2000`, 1514 bytes", and the adapter
//! turns that into a device address by adding the offset to the region's
//! [`DeviceAddr`] ([`DeviceAddr::checked_add`]). So:
//!
//! - descriptors are position-independent: the same bytes mean the same thing
//!   whether the device reaches the memory over the fabric or through an IOMMU;
//! - no host virtual address ever reaches the device;
//! - a wrong or hostile offset is caught by bounds (`offset + len` past the
//!   region) and at worst names another byte of the *same* region, never any
//!   other memory.
//!
//! # Exactly the rings and buffers
//!
//! A [`DmaMapper`] makes one [`HostRegion`] reachable for one device
//! ([`DmaMapper::map`]) and unreachable again ([`DmaMapper::unmap`]). host-lib
//! maps its rings and its buffer pool and nothing else: the rest of the
//! processor's memory (protocol state, application data) is not reachable by
//! the device at all. Each mapping also carries the access the device needs
//! ([`Access`]): the adapter only reads TX buffers, only writes RX buffers.
//! A device that strays outside its mappings is stopped by the hardware that
//! checks them: the target's AVT NACKs the request (fabric), the IOMMU faults
//! it (VFIO).
//!
//! # The two backends
//!
//! - [`FabricMapper`] (`"fabric-avt"`, always built): the emulated adapter
//!   reaches the processor over the snet fabric, so a mapping is an AVT window
//!   of the processor's endpoint ([`snet_fabric::avt`]), registered for the
//!   adapter's endpoint only, and the device address is the window's
//!   [`FabricAddr`]. Windows are at most 4 GiB (32-bit offsets); READ, WRITE
//!   and INTERRUPT are enforced per window; an unmapped window's key goes
//!   stale, so an adapter that kept it is NACKed.
//! - `VfioMapper` (`"vfio"`, cargo feature `vfio`, Linux): a real device behind
//!   an IOMMU, driven through a VFIO container. A mapping is a range of I/O
//!   virtual addresses chosen by an [`IovaAllocator`] (first fit, whole pages)
//!   and mapped to the region's host address; regions must be page-aligned.
//!   See that module for what works today.

pub mod fabric;
pub mod iova;
#[cfg(all(feature = "vfio", target_os = "linux"))]
pub mod vfio;

use std::fmt;
use std::path::PathBuf;

use snet_fabric::FabricAddr;
use snet_fabric::memory::{MemoryError, ProcAddr, ProcessorMemory};
use snet_fabric::network::FabricError;

pub use fabric::FabricMapper;
pub use iova::{DEFAULT_IOVA_RANGE, DEFAULT_PAGE_SIZE, IovaAllocator, IovaError};
pub use snet_fabric::avt::Access;
#[cfg(all(feature = "vfio", target_os = "linux"))]
pub use vfio::{VfioConfig, VfioMapper};

/// A range of a processor's mapped memory to expose to a device.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct HostRegion {
    /// Offset of the first byte in the processor's memory.
    pub offset: ProcAddr,
    /// Length in bytes (> 0).
    pub len: u64,
    /// The host virtual address of the first byte (what VFIO needs).
    pub host_addr: u64,
}

impl HostRegion {
    /// The `len` bytes at `offset` of `memory`, with the host address taken
    /// from the memory's mapping. Fails if the range is empty or leaves the
    /// memory.
    pub fn in_memory(
        memory: &ProcessorMemory,
        offset: ProcAddr,
        len: u64,
    ) -> Result<Self, MapError> {
        if len == 0 {
            return Err(MapError::ZeroLength);
        }
        let bytes = memory.slice(offset, len).map_err(|e| match e {
            MemoryError::OutOfBounds { addr, len, size } => MapError::OutsideMemory {
                offset: addr,
                len,
                memory_len: size,
            },
            other => MapError::Config {
                backend: "host-lib",
                reason: other.to_string(),
            },
        })?;
        Ok(Self {
            offset,
            len,
            host_addr: bytes.as_ptr().addr() as u64,
        })
    }

    /// `Ok` if the host address and the length are both multiples of
    /// `page_size`, which an IOMMU mapping needs (it translates whole pages);
    /// otherwise [`MapError::NotPageAligned`] naming the first that is not.
    pub fn check_page_aligned(&self, page_size: u64) -> Result<(), MapError> {
        for (what, value) in [("host address", self.host_addr), ("length", self.len)] {
            if page_size == 0 || value % page_size != 0 {
                return Err(MapError::NotPageAligned {
                    what,
                    value,
                    page_size,
                });
            }
        }
        Ok(())
    }
}

/// How a device reaches a mapped region.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
pub enum DeviceAddr {
    /// A fabric window (emulated adapter reaching the processor over the
    /// fabric): the [`FabricAddr`] of byte 0 of the window.
    Fabric(FabricAddr),
    /// An I/O virtual address in a VFIO container (real device).
    Iova(u64),
}

impl DeviceAddr {
    /// The device address of byte `n` of the region, or `None` if that leaves
    /// the address space (a fabric window's 32-bit offsets, or `u64`). Whether
    /// byte `n` is inside the region is the caller's bounds check.
    pub fn checked_add(self, n: u64) -> Option<DeviceAddr> {
        match self {
            DeviceAddr::Fabric(a) => a.checked_add(n).map(DeviceAddr::Fabric),
            DeviceAddr::Iova(a) => a.checked_add(n).map(DeviceAddr::Iova),
        }
    }
}

impl fmt::Display for DeviceAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceAddr::Fabric(a) => write!(f, "fabric address {a}"),
            DeviceAddr::Iova(a) => write!(f, "IOVA {a:#x}"),
        }
    }
}

/// Why a mapping, an unmapping or opening a mapper failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// A region of zero bytes.
    #[error("a DMA mapping needs at least 1 byte, got a region of length 0")]
    ZeroLength,
    /// The region is longer than the backend can map at once.
    #[error(
        "{backend}: a region of {len} bytes is too long; this backend maps at most {max} bytes at once"
    )]
    TooLong {
        /// The backend.
        backend: &'static str,
        /// The region's length.
        len: u64,
        /// The longest mapping the backend supports.
        max: u64,
    },
    /// The region runs past the end of the processor's memory.
    #[error(
        "region of {len} bytes at offset {offset} runs past the end of processor memory ({memory_len} bytes)"
    )]
    OutsideMemory {
        /// The region's offset.
        offset: ProcAddr,
        /// The region's length.
        len: u64,
        /// The size of the processor's memory.
        memory_len: u64,
    },
    /// The backend cannot enforce the requested access exactly.
    #[error("{backend}: access {requested:?} is not supported; allowed: {allowed}")]
    UnsupportedAccess {
        /// The backend.
        backend: &'static str,
        /// The access asked for.
        requested: Access,
        /// What the backend accepts.
        allowed: &'static str,
    },
    /// An IOMMU mapping needs whole pages.
    #[error(
        "{what} {value:#x} is not a multiple of the {page_size}-byte page size (an IOMMU maps whole pages)"
    )]
    NotPageAligned {
        /// What is misaligned: `"host address"` or `"length"`.
        what: &'static str,
        /// The misaligned value.
        value: u64,
        /// The page size.
        page_size: u64,
    },
    /// `host_addr + len` overflows.
    #[error("host range {host_addr:#x}+{len:#x} wraps around the address space")]
    HostRangeOverflow {
        /// The region's host address.
        host_addr: u64,
        /// The region's length.
        len: u64,
    },
    /// The address is not a live mapping made by this mapper (never mapped,
    /// already unmapped, not the address `map` returned, or mapped for
    /// another device).
    #[error("{backend}: {addr} is not a live mapping of this mapper")]
    UnknownMapping {
        /// The backend.
        backend: &'static str,
        /// The address given.
        addr: DeviceAddr,
    },
    /// The address names a window that was unmapped and whose slot has been
    /// reused since.
    #[error(
        "{backend}: {addr} is stale: its window was unmapped and the slot now holds generation {current_generation}"
    )]
    StaleMapping {
        /// The backend.
        backend: &'static str,
        /// The address given.
        addr: DeviceAddr,
        /// The generation the slot holds now.
        current_generation: u16,
    },
    /// The address belongs to another kind of backend.
    #[error("{backend}: {addr} is not an address of this backend")]
    WrongBackend {
        /// The backend.
        backend: &'static str,
        /// The address given.
        addr: DeviceAddr,
    },
    /// The mapper was set up wrongly.
    #[error("{backend}: invalid configuration: {reason}")]
    Config {
        /// The backend.
        backend: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The IOVA allocator refused.
    #[error(transparent)]
    Iova(#[from] IovaError),
    /// The fabric refused (for example, the AVT is full).
    #[error("fabric-avt: {0}")]
    Fabric(#[from] FabricError),
    /// Something the backend needs on this machine is missing or unusable.
    #[error("{} {problem}: {hint}", path.display())]
    Unavailable {
        /// The file or device that is missing or unusable.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        hint: String,
    },
    /// The backend's system call failed.
    #[error("{backend}: {op} failed: {source}")]
    Backend {
        /// The backend.
        backend: &'static str,
        /// What was being done.
        op: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Makes regions of processor memory reachable by a device, and unreachable
/// again.
pub trait DmaMapper {
    /// Name of the backend, for messages (`"fabric-avt"`, `"vfio"`).
    fn backend(&self) -> &'static str;

    /// Maps `region` with `access` (READ / WRITE / INTERRUPT of
    /// [`snet_fabric::avt::Access`]) and returns the device address of its
    /// first byte. A backend that cannot enforce `access` exactly refuses it
    /// ([`MapError::UnsupportedAccess`]) rather than grant more.
    fn map(&mut self, region: HostRegion, access: Access) -> Result<DeviceAddr, MapError>;

    /// Removes a mapping made by `map`, given the address `map` returned.
    fn unmap(&mut self, addr: DeviceAddr) -> Result<(), MapError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use snet_fabric::WindowKey;

    #[test]
    fn host_region_in_memory() {
        let mem = ProcessorMemory::anonymous(64 * 1024).unwrap();
        let a = HostRegion::in_memory(&mem, ProcAddr(0), 4096).unwrap();
        let b = HostRegion::in_memory(&mem, ProcAddr(0x3000), 0x1000).unwrap();
        assert_eq!(b.host_addr - a.host_addr, 0x3000);
        // An anonymous mapping starts on a page boundary.
        assert!(a.check_page_aligned(DEFAULT_PAGE_SIZE).is_ok());
        assert!(b.check_page_aligned(DEFAULT_PAGE_SIZE).is_ok());
        assert!(matches!(
            HostRegion::in_memory(&mem, ProcAddr(0), 0),
            Err(MapError::ZeroLength)
        ));
        let e = HostRegion::in_memory(&mem, ProcAddr(0xF000), 0x1001).unwrap_err();
        assert!(matches!(
            e,
            MapError::OutsideMemory {
                offset: ProcAddr(0xF000),
                len: 0x1001,
                memory_len: 0x10000
            }
        ));
        assert!(HostRegion::in_memory(&mem, ProcAddr(u64::MAX), 2).is_err());
    }

    #[test]
    fn page_alignment_is_checked_and_named() {
        let r = |host_addr, len| HostRegion {
            offset: ProcAddr(0),
            len,
            host_addr,
        };
        assert!(r(0x7000, 0x2000).check_page_aligned(4096).is_ok());
        let e = r(0x7010, 0x2000).check_page_aligned(4096).unwrap_err();
        assert_eq!(
            e.to_string(),
            "host address 0x7010 is not a multiple of the 4096-byte page size (an IOMMU maps whole pages)"
        );
        let e = r(0x7000, 1514).check_page_aligned(4096).unwrap_err();
        assert!(matches!(
            e,
            MapError::NotPageAligned {
                what: "length",
                value: 1514,
                page_size: 4096
            }
        ));
        assert!(r(0, 4096).check_page_aligned(0).is_err());
    }

    #[test]
    fn device_addr_offsets_and_display() {
        let k = WindowKey::new(3, 2).unwrap();
        let f = DeviceAddr::Fabric(FabricAddr::new(k, 0));
        assert_eq!(
            f.checked_add(0x40),
            Some(DeviceAddr::Fabric(FabricAddr::new(k, 0x40)))
        );
        assert_eq!(f.checked_add(1 << 32), None);
        assert_eq!(f.to_string(), "fabric address key3.g2+0x0");
        let i = DeviceAddr::Iova(0x1_0000_0000);
        assert_eq!(i.checked_add(0x10), Some(DeviceAddr::Iova(0x1_0000_0010)));
        assert_eq!(DeviceAddr::Iova(u64::MAX).checked_add(1), None);
        assert_eq!(i.to_string(), "IOVA 0x100000000");
    }
}
