//! The VFIO backend: a real device behind an IOMMU (cargo feature `vfio`,
//! Linux only).
//!
//! [`VfioMapper::open`] opens the VFIO container `/dev/vfio/vfio` and attaches
//! the device (its sysfs path, for example `/sys/bus/pci/devices/0000:01:00.0`)
//! through its IOMMU group `/dev/vfio/<group>`; attaching the first group is
//! what sets the container's IOMMU type (type-1 v2), without which no DMA
//! mapping can be made. Before calling into `vfio-ioctls`, `open` checks each
//! of those paths itself, so a machine without VFIO gets a message naming what
//! is missing and how to fix it ([`MapError::Unavailable`]).
//!
//! A mapping is a range of I/O virtual addresses from the mapper's
//! [`IovaAllocator`] (first fit, whole pages, configurable range), mapped to
//! the region's host address. The region's host address and length must be
//! multiples of the page size (checked, [`MapError::NotPageAligned`]). The
//! returned [`DeviceAddr::Iova`] is the IOVA of the region's first byte;
//! [`VfioMapper::unmap`] removes the IOMMU mapping and frees the range.
//!
//! # Access
//!
//! `vfio-ioctls` 0.10 always maps with read *and* write permission, so only
//! `READ | WRITE` is accepted; a read-only or write-only request is refused
//! rather than silently widened, and INTERRUPT has no meaning for an IOMMU
//! (a real device raises MSI-X interrupts itself).
//!
//! # Safety of the mapping
//!
//! `VFIO_IOMMU_MAP_DMA` is the one `unsafe` call of host-lib (this module
//! is, with `snet_fabric::memory`, one of the two memory-mapping modules
//! allowed `unsafe`). Once mapped, the device may read and write the pages
//! at any time. The kernel pins the pages for as long as the mapping lives,
//! so the device can never reach memory the process gave back; and the
//! host library's ownership protocol keeps Rust code off the bytes the
//! device owns: a buffer is either the application's (borrowed through the
//! pool, not posted) or the device's (posted in a ring, no reference to it
//! held) — never both.
//!
//! Closing the container (dropping the mapper) removes every mapping it holds.

#![allow(unsafe_code)]

use std::fmt;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use vfio_ioctls::{VfioContainer, VfioDevice, VfioError, VfioOps};

use super::{Access, DeviceAddr, DmaMapper, HostRegion, IovaAllocator, MapError};
use super::{DEFAULT_IOVA_RANGE, DEFAULT_PAGE_SIZE};

/// Backend name used in messages.
const BACKEND: &str = "vfio";

/// The directory of VFIO's character devices.
const VFIO_DIR: &str = "/dev/vfio";

/// How to open a [`VfioMapper`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioConfig {
    /// The device's sysfs directory, for example
    /// `/sys/bus/pci/devices/0000:01:00.0`. The device must be bound to
    /// `vfio-pci`.
    pub device: PathBuf,
    /// The I/O virtual addresses to hand out (page-aligned ends).
    pub iova_range: Range<u64>,
    /// The IOMMU page size (a power of two).
    pub page_size: u64,
}

impl VfioConfig {
    /// The device at `device` with [`DEFAULT_IOVA_RANGE`] and
    /// [`DEFAULT_PAGE_SIZE`].
    pub fn new(device: impl Into<PathBuf>) -> Self {
        Self {
            device: device.into(),
            iova_range: DEFAULT_IOVA_RANGE,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

/// Maps regions of host memory into a VFIO container's IOVA space for one
/// device.
pub struct VfioMapper {
    // Field order is drop order: the device is released before the container,
    // which detaches its group from the container first.
    device: VfioDevice,
    container: Arc<VfioContainer>,
    group: u32,
    iova: IovaAllocator,
}

impl fmt::Debug for VfioMapper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VfioMapper")
            .field("group", &self.group)
            .field("iova", &self.iova)
            .finish_non_exhaustive()
    }
}

impl VfioMapper {
    /// Opens the VFIO container and attaches `config.device` to it.
    ///
    /// Fails with [`MapError::Unavailable`] naming the first missing piece:
    /// `/dev/vfio/vfio` (VFIO not loaded), the device's sysfs directory, its
    /// `iommu_group` link (IOMMU off), `/dev/vfio/<group>` (device not bound
    /// to `vfio-pci`), or a file that cannot be opened (permissions). A bad
    /// IOVA range or page size is [`MapError::Iova`].
    pub fn open(config: VfioConfig) -> Result<Self, MapError> {
        let iova = IovaAllocator::new(config.iova_range.clone(), config.page_size)?;
        let group = preflight(Path::new(VFIO_DIR), &config.device)?;
        let container = VfioContainer::new(None).map_err(|e| match e {
            VfioError::OpenContainer(err) => cannot_open(Path::new(VFIO_DIR).join("vfio"), &err),
            other => backend_error("opening the VFIO container", other),
        })?;
        let container = Arc::new(container);
        let ops: Arc<dyn VfioOps> = container.clone();
        let device = VfioDevice::new(&config.device, ops, false).map_err(|e| match e {
            VfioError::OpenGroup(err, _) => {
                cannot_open(Path::new(VFIO_DIR).join(group.to_string()), &err)
            }
            other => backend_error(
                format!(
                    "attaching {} (IOMMU group {group})",
                    config.device.display()
                ),
                other,
            ),
        })?;
        Ok(Self {
            device,
            container,
            group,
            iova,
        })
    }

    /// The device's IOMMU group number.
    pub fn group(&self) -> u32 {
        self.group
    }

    /// The IOVA allocator (what is mapped where).
    pub fn iova(&self) -> &IovaAllocator {
        &self.iova
    }

    /// The attached device (for its regions and interrupts).
    pub fn device(&self) -> &VfioDevice {
        &self.device
    }
}

impl DmaMapper for VfioMapper {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// Validates `region` and `access` ([`check_request`]), allocates an IOVA
    /// range for it and maps it in the container (`VFIO_IOMMU_MAP_DMA`). If
    /// the kernel refuses, the range is freed and the error returned.
    fn map(&mut self, region: HostRegion, access: Access) -> Result<DeviceAddr, MapError> {
        check_request(&region, access, self.iova.page_size())?;
        let size = usize::try_from(region.len).map_err(|_| MapError::TooLong {
            backend: BACKEND,
            len: region.len,
            max: usize::MAX as u64,
        })?;
        let iova = self.iova.alloc(region.len)?;
        let user_addr: *mut u8 = std::ptr::with_exposed_provenance_mut(region.host_addr as usize);
        // SAFETY: `check_request` verified that the host range is non-empty,
        // page-aligned and does not wrap; the kernel checks that it is mapped
        // in this process and pins its pages for the life of the mapping, so
        // the device never reaches memory the process no longer owns. Rust
        // code does not hold references to bytes while the device owns them:
        // host-lib hands a buffer either to the application or to the device
        // (see the module docs), and unmaps before the memory is released.
        let r = unsafe { self.container.vfio_dma_map(iova, size, user_addr) };
        match r {
            Ok(()) => Ok(DeviceAddr::Iova(iova)),
            Err(e) => {
                let _ = self.iova.free(iova);
                Err(backend_error(
                    format!(
                        "mapping {:#x}+{:#x} at IOVA {iova:#x}",
                        region.host_addr, region.len
                    ),
                    e,
                ))
            }
        }
    }

    /// Removes the IOMMU mapping that starts at the IOVA `map` returned and
    /// frees its range. If the kernel refuses, the range stays allocated (it
    /// may still be mapped) and the error is returned.
    fn unmap(&mut self, addr: DeviceAddr) -> Result<(), MapError> {
        let DeviceAddr::Iova(iova) = addr else {
            return Err(MapError::WrongBackend {
                backend: BACKEND,
                addr,
            });
        };
        let len = self.iova.len_of(iova).ok_or(MapError::UnknownMapping {
            backend: BACKEND,
            addr,
        })?;
        let size = usize::try_from(len).map_err(|_| MapError::TooLong {
            backend: BACKEND,
            len,
            max: usize::MAX as u64,
        })?;
        self.container
            .vfio_dma_unmap(iova, size)
            .map_err(|e| backend_error(format!("unmapping IOVA {iova:#x}+{len:#x}"), e))?;
        self.iova.free(iova)?;
        Ok(())
    }
}

/// The checks `map` makes before touching the IOVA space: a non-empty region
/// whose host address and length are multiples of `page_size`, whose host
/// range does not wrap and whose length fits `usize`, and `access` exactly
/// `READ | WRITE` (see the module docs).
pub fn check_request(region: &HostRegion, access: Access, page_size: u64) -> Result<(), MapError> {
    if access != Access::READ | Access::WRITE {
        return Err(MapError::UnsupportedAccess {
            backend: BACKEND,
            requested: access,
            allowed: "exactly READ | WRITE (vfio-ioctls 0.10 maps every range read-write; \
                      INTERRUPT has no IOMMU meaning)",
        });
    }
    if region.len == 0 {
        return Err(MapError::ZeroLength);
    }
    region.check_page_aligned(page_size)?;
    if region.host_addr.checked_add(region.len).is_none() {
        return Err(MapError::HostRangeOverflow {
            host_addr: region.host_addr,
            len: region.len,
        });
    }
    if usize::try_from(region.len).is_err() {
        return Err(MapError::TooLong {
            backend: BACKEND,
            len: region.len,
            max: usize::MAX as u64,
        });
    }
    Ok(())
}

/// Checks, with plain file-system calls, everything `open` needs before
/// `vfio-ioctls` is called, and returns the device's IOMMU group. `vfio_dir`
/// is `/dev/vfio` outside tests.
fn preflight(vfio_dir: &Path, device: &Path) -> Result<u32, MapError> {
    let container = vfio_dir.join("vfio");
    if !exists(&container) {
        return Err(MapError::Unavailable {
            path: container,
            problem: "does not exist".into(),
            hint: "VFIO is not available on this machine: enable the IOMMU (intel_iommu=on or \
                   amd_iommu=on on the kernel command line), load the vfio-pci module \
                   (`modprobe vfio-pci`) and bind a device to it"
                .into(),
        });
    }
    if !device.is_dir() {
        return Err(MapError::Unavailable {
            path: device.to_path_buf(),
            problem: "does not exist or is not a directory".into(),
            hint: "give the sysfs directory of a PCI device, for example \
                   /sys/bus/pci/devices/0000:01:00.0 (see `lspci -D`)"
                .into(),
        });
    }
    let link = device.join("iommu_group");
    let target = fs::read_link(&link).map_err(|_| MapError::Unavailable {
        path: link.clone(),
        problem: "does not exist".into(),
        hint: "the device is in no IOMMU group, so the IOMMU is off or does not cover it: \
               enable it (intel_iommu=on or amd_iommu=on, and VT-d / AMD-Vi in the firmware)"
            .into(),
    })?;
    let group = target
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse::<u32>().ok())
        .ok_or_else(|| MapError::Unavailable {
            path: link.clone(),
            problem: format!(
                "points to {}, not to an IOMMU group number",
                target.display()
            ),
            hint: "expected a link like ../../../kernel/iommu_groups/<number>".into(),
        })?;
    let group_dev = vfio_dir.join(group.to_string());
    if !exists(&group_dev) {
        return Err(MapError::Unavailable {
            path: group_dev,
            problem: "does not exist".into(),
            hint: format!(
                "IOMMU group {group} has no VFIO device node, so {} is not bound to vfio-pci: \
                 unbind it from its driver and bind it to vfio-pci (for example \
                 `echo vfio-pci > {dev}/driver_override` and \
                 `echo {bdf} > /sys/bus/pci/drivers_probe`); every device of the group must \
                 be bound to vfio-pci or to no driver",
                device.display(),
                dev = device.display(),
                bdf = device
                    .file_name()
                    .map_or("<bdf>".into(), |n| n.to_string_lossy()),
            ),
        });
    }
    Ok(group)
}

/// `true` if `path` exists (an error while checking counts as missing).
fn exists(path: &Path) -> bool {
    path.try_exists().unwrap_or(false)
}

fn cannot_open(path: PathBuf, err: &io::Error) -> MapError {
    let hint = if err.kind() == io::ErrorKind::PermissionDenied {
        "run as root, or give this user read/write access to /dev/vfio/vfio and /dev/vfio/<group> \
         (and a high enough memlock limit for the mapped memory)"
    } else {
        "check that the device is bound to vfio-pci and not in use by another process"
    };
    MapError::Unavailable {
        path,
        problem: format!("cannot be opened ({err})"),
        hint: hint.into(),
    }
}

fn backend_error(op: impl Into<String>, err: VfioError) -> MapError {
    MapError::Backend {
        backend: BACKEND,
        op: op.into(),
        source: Box::new(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snet_fabric::memory::ProcAddr;

    /// A scratch directory under the system's temp dir, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let p =
                std::env::temp_dir().join(format!("snet-vfio-test-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            Scratch(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn unavailable_path(e: &MapError) -> &Path {
        match e {
            MapError::Unavailable { path, .. } => path,
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[test]
    fn open_names_what_is_missing_on_this_machine() {
        let e = VfioMapper::open(VfioConfig::new("/sys/bus/pci/devices/snet-no-such-device"))
            .unwrap_err();
        let msg = e.to_string();
        if !Path::new("/dev/vfio/vfio").exists() {
            // The usual case for CI and development machines.
            assert_eq!(unavailable_path(&e), Path::new("/dev/vfio/vfio"));
            assert!(msg.starts_with("/dev/vfio/vfio does not exist: "), "{msg}");
            assert!(msg.contains("vfio-pci"), "{msg}");
        } else {
            // VFIO is loaded here: the next thing checked is the device path,
            // which does not exist.
            assert_eq!(
                unavailable_path(&e),
                Path::new("/sys/bus/pci/devices/snet-no-such-device")
            );
            assert!(msg.contains("snet-no-such-device"), "{msg}");
        }
    }

    #[test]
    fn open_checks_the_iova_configuration_first() {
        let mut cfg = VfioConfig::new("/nonexistent");
        cfg.page_size = 3000;
        assert!(matches!(
            VfioMapper::open(cfg),
            Err(MapError::Iova(crate::mapper::IovaError::BadPageSize { .. }))
        ));
        let mut cfg = VfioConfig::new("/nonexistent");
        cfg.iova_range = 0x1000..0x1800;
        assert!(matches!(
            VfioMapper::open(cfg),
            Err(MapError::Iova(crate::mapper::IovaError::BadRange { .. }))
        ));
    }

    #[test]
    fn preflight_walks_every_step() {
        let s = Scratch::new("preflight");
        let vfio = s.0.join("dev-vfio");
        let sys = s.0.join("sys");
        let dev = sys.join("devices").join("0000:01:00.0");
        fs::create_dir_all(&vfio).unwrap();

        // 1. No container node.
        let e = preflight(&vfio, &dev).unwrap_err();
        assert_eq!(unavailable_path(&e), vfio.join("vfio"));
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(e.to_string().contains("modprobe vfio-pci"), "{e}");

        // 2. No device directory.
        fs::write(vfio.join("vfio"), b"").unwrap();
        let e = preflight(&vfio, &dev).unwrap_err();
        assert_eq!(unavailable_path(&e), dev);
        assert!(
            e.to_string().contains("sysfs directory of a PCI device"),
            "{e}"
        );

        // 3. Device without an IOMMU group.
        fs::create_dir_all(&dev).unwrap();
        let e = preflight(&vfio, &dev).unwrap_err();
        assert_eq!(unavailable_path(&e), dev.join("iommu_group"));
        assert!(e.to_string().contains("intel_iommu=on"), "{e}");

        // 4. A group link that names no number.
        let groups = sys.join("kernel").join("iommu_groups");
        fs::create_dir_all(groups.join("seven")).unwrap();
        std::os::unix::fs::symlink(groups.join("seven"), dev.join("iommu_group")).unwrap();
        let e = preflight(&vfio, &dev).unwrap_err();
        assert!(
            e.to_string().contains("not to an IOMMU group number"),
            "{e}"
        );
        fs::remove_file(dev.join("iommu_group")).unwrap();

        // 5. Group 7, not bound to vfio-pci (no /dev/vfio/7).
        fs::create_dir_all(groups.join("7")).unwrap();
        std::os::unix::fs::symlink(groups.join("7"), dev.join("iommu_group")).unwrap();
        let e = preflight(&vfio, &dev).unwrap_err();
        assert_eq!(unavailable_path(&e), vfio.join("7"));
        let msg = e.to_string();
        assert!(msg.contains("IOMMU group 7"), "{msg}");
        assert!(
            msg.contains("echo 0000:01:00.0 > /sys/bus/pci/drivers_probe"),
            "{msg}"
        );

        // 6. Everything in place.
        fs::write(vfio.join("7"), b"").unwrap();
        assert_eq!(preflight(&vfio, &dev).unwrap(), 7);
    }

    #[test]
    fn requests_are_validated() {
        let rw = Access::READ | Access::WRITE;
        let r = |host_addr, len| HostRegion {
            offset: ProcAddr(0),
            len,
            host_addr,
        };
        assert!(check_request(&r(0x7f00_0000_0000, 0x1_0000), rw, 4096).is_ok());
        for access in [
            Access::READ,
            Access::WRITE,
            rw | Access::INTERRUPT,
            Access::empty(),
        ] {
            let e = check_request(&r(0x1000, 0x1000), access, 4096).unwrap_err();
            assert!(matches!(e, MapError::UnsupportedAccess { .. }), "{e:?}");
            assert!(e.to_string().contains("exactly READ | WRITE"), "{e}");
        }
        assert!(matches!(
            check_request(&r(0x1000, 0), rw, 4096),
            Err(MapError::ZeroLength)
        ));
        assert!(matches!(
            check_request(&r(0x1010, 0x1000), rw, 4096),
            Err(MapError::NotPageAligned {
                what: "host address",
                ..
            })
        ));
        assert!(matches!(
            check_request(&r(0x1000, 1514), rw, 4096),
            Err(MapError::NotPageAligned { what: "length", .. })
        ));
        let top = u64::MAX - 4095;
        assert!(matches!(
            check_request(&r(top, 0x2000), rw, 4096),
            Err(MapError::HostRangeOverflow { .. })
        ));
    }
}
