//! The emulated backend: mappings are AVT windows of the processor's fabric
//! endpoint, open to the adapter's endpoint only.
//!
//! [`FabricMapper::map`] registers a window with
//! [`Fabric::avt_register`] and returns the [`FabricAddr`] of its byte 0; the
//! adapter adds descriptor offsets to it. The target endpoint checks every
//! request against the window (requester, permission, bounds, key generation)
//! and NACKs anything else, so the adapter reaches exactly the mapped bytes.
//! [`FabricMapper::unmap`] unregisters the window: the key stops working at
//! once (NACK `no_window`), and once the slot is reused its old key is refused
//! as `stale_key`.
//!
//! The mapper borrows the fabric and its scheduler for as long as it lives
//! (registration may split a transaction-level train, which schedules
//! events), so make one, map or unmap, and drop it before running the engine.
//! The fabric addresses memory by offset, so [`HostRegion::host_addr`] is not
//! used here.

use snet_fabric::avt::{Access, AvtError};
use snet_fabric::engine::Scheduler;
use snet_fabric::network::{Fabric, FabricError, FabricEvent};
use snet_fabric::{EndpointId, FabricAddr};

use super::{DeviceAddr, DmaMapper, HostRegion, MapError};

/// Backend name used in messages.
const BACKEND: &str = "fabric-avt";

/// Maps regions of `owner`'s memory as AVT windows that only `device` may use.
pub struct FabricMapper<'a, S: Scheduler<FabricEvent>> {
    fabric: &'a mut Fabric,
    sched: &'a mut S,
    owner: EndpointId,
    device: EndpointId,
}

impl<S: Scheduler<FabricEvent>> std::fmt::Debug for FabricMapper<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FabricMapper")
            .field("owner", &self.owner)
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

impl<'a, S: Scheduler<FabricEvent>> FabricMapper<'a, S> {
    /// A mapper for the memory of processor `owner`, whose windows only the
    /// adapter `device` may use. Both must be endpoints of `fabric`, and they
    /// must differ (an endpoint does not DMA into itself).
    pub fn new(
        fabric: &'a mut Fabric,
        sched: &'a mut S,
        owner: EndpointId,
        device: EndpointId,
    ) -> Result<Self, MapError> {
        fabric.memory(owner)?;
        fabric.memory(device)?;
        if owner == device {
            return Err(MapError::Config {
                backend: BACKEND,
                reason: format!(
                    "owner and device are both {owner}; the device must be another endpoint"
                ),
            });
        }
        Ok(Self {
            fabric,
            sched,
            owner,
            device,
        })
    }

    /// The processor whose memory is mapped.
    pub fn owner(&self) -> EndpointId {
        self.owner
    }

    /// The adapter allowed to use the windows.
    pub fn device(&self) -> EndpointId {
        self.device
    }
}

impl<S: Scheduler<FabricEvent>> DmaMapper for FabricMapper<'_, S> {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// Registers a window of `region.len` bytes (1 to `u32::MAX`) at
    /// `region.offset` of the owner's memory for the device. `access` must
    /// include READ or WRITE; INTERRUPT makes writes into the window queue an
    /// interrupt at the owner.
    fn map(&mut self, region: HostRegion, access: Access) -> Result<DeviceAddr, MapError> {
        if region.len == 0 {
            return Err(MapError::ZeroLength);
        }
        let len = u32::try_from(region.len).map_err(|_| MapError::TooLong {
            backend: BACKEND,
            len: region.len,
            max: u64::from(u32::MAX),
        })?;
        if !access.intersects(Access::READ | Access::WRITE) {
            return Err(MapError::UnsupportedAccess {
                backend: BACKEND,
                requested: access,
                allowed: "READ and/or WRITE, optionally with INTERRUPT",
            });
        }
        let key = self
            .fabric
            .avt_register(
                self.sched,
                self.owner,
                self.device,
                region.offset,
                len,
                access,
            )
            .map_err(|e| match e {
                FabricError::Avt(AvtError::WindowOutsideMemory {
                    local,
                    len,
                    memory_len,
                }) => MapError::OutsideMemory {
                    offset: local,
                    len: u64::from(len),
                    memory_len,
                },
                other => MapError::Fabric(other),
            })?;
        Ok(DeviceAddr::Fabric(FabricAddr::new(key, 0)))
    }

    /// Unregisters the window whose byte-0 address `map` returned. Refuses,
    /// changing nothing: an IOVA ([`MapError::WrongBackend`]); an address
    /// with a non-zero offset, an unknown or already unmapped key, or a window
    /// of another device ([`MapError::UnknownMapping`]); a key whose slot was
    /// reused since ([`MapError::StaleMapping`]).
    fn unmap(&mut self, addr: DeviceAddr) -> Result<(), MapError> {
        let DeviceAddr::Fabric(fa) = addr else {
            return Err(MapError::WrongBackend {
                backend: BACKEND,
                addr,
            });
        };
        let unknown = MapError::UnknownMapping {
            backend: BACKEND,
            addr,
        };
        if fa.offset() != 0 {
            return Err(unknown);
        }
        let key = fa.key();
        // Only windows of this mapper's device: another mapper's window on
        // the same processor is not ours to close.
        if let Some(entry) = self.fabric.avt(self.owner)?.get(key) {
            if entry.requester != self.device {
                return Err(unknown);
            }
        }
        match self.fabric.avt_unregister(self.sched, self.owner, key) {
            Ok(_) => Ok(()),
            Err(FabricError::Avt(AvtError::UnknownKey(_))) => Err(unknown),
            Err(FabricError::Avt(AvtError::StaleKey {
                current_generation, ..
            })) => Err(MapError::StaleMapping {
                backend: BACKEND,
                addr,
                current_generation,
            }),
            Err(other) => Err(MapError::Fabric(other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snet_fabric::Plane;
    use snet_fabric::ids::NackReason;
    use snet_fabric::memory::ProcAddr;
    use snet_fabric::network::{DmaError, DmaRequest, FabricConfig, FabricSim};
    use snet_fabric::topology::{EndpointKind, LinkParams, shapes};

    fn ep(n: u32) -> EndpointId {
        EndpointId::new(n).unwrap()
    }

    /// The processor whose memory is mapped.
    const CPU: u32 = 1;
    /// The adapter allowed to use the windows.
    const NIC: u32 = 9;
    /// Another endpoint, not allowed to use them.
    const OTHER: u32 = 2;

    const MEM: u64 = 1 << 20;

    fn sim() -> FabricSim {
        let topo = shapes::single_router(
            &Plane::BOTH,
            &[
                (ep(CPU), EndpointKind::Processor),
                (ep(NIC), EndpointKind::Adapter),
                (ep(OTHER), EndpointKind::Processor),
            ],
            6,
            LinkParams::default(),
        )
        .unwrap();
        let cfg = FabricConfig {
            memory_size: MEM,
            ..FabricConfig::default()
        };
        FabricSim::new(topo, cfg, 7).unwrap()
    }

    fn mapper(s: &mut FabricSim) -> FabricMapper<'_, snet_fabric::engine::Engine<FabricEvent>> {
        FabricMapper::new(&mut s.fabric, &mut s.engine, ep(CPU), ep(NIC)).unwrap()
    }

    fn region(offset: u64, len: u64) -> HostRegion {
        HostRegion {
            offset: ProcAddr(offset),
            len,
            host_addr: 0,
        }
    }

    fn fabric_addr(a: DeviceAddr) -> FabricAddr {
        match a {
            DeviceAddr::Fabric(f) => f,
            DeviceAddr::Iova(_) => panic!("fabric mapper returned an IOVA"),
        }
    }

    /// `from` writes `data` (staged at 0x8_0000 of its own memory) to `to`.
    fn write(s: &mut FabricSim, from: u32, to: FabricAddr, data: &[u8]) -> Result<(), DmaError> {
        s.fabric
            .memory_mut(ep(from))
            .unwrap()
            .write(ProcAddr(0x8_0000), data)
            .unwrap();
        s.dma(
            ep(from),
            DmaRequest::write(ep(CPU), ProcAddr(0x8_0000), to, data.len() as u64),
        )
        .unwrap()
        .result
    }

    fn nacked(r: Result<(), DmaError>) -> Option<NackReason> {
        match r {
            Err(DmaError::Nacked { reason, .. }) => Some(reason),
            _ => None,
        }
    }

    #[test]
    fn a_device_write_lands_in_the_window_and_nowhere_else() {
        let mut s = sim();
        let mut m = mapper(&mut s);
        assert_eq!(m.backend(), "fabric-avt");
        assert_eq!((m.owner(), m.device()), (ep(CPU), ep(NIC)));
        let win = m
            .map(region(0x1_0000, 4096), Access::READ | Access::WRITE)
            .unwrap();
        let base = fabric_addr(win);
        assert_eq!(base.offset(), 0);

        // A write at offset 16 of the window lands at 0x1_0010.
        let data: Vec<u8> = (0..100u8).collect();
        let at16 = win.checked_add(16).map(fabric_addr).unwrap();
        assert_eq!(write(&mut s, NIC, at16, &data), Ok(()));
        let mem = s.fabric.memory(ep(CPU)).unwrap();
        assert_eq!(mem.slice(ProcAddr(0x1_0010), 100).unwrap(), &data[..]);
        assert!(
            mem.slice(ProcAddr(0), 0x1_0010)
                .unwrap()
                .iter()
                .all(|&b| b == 0)
        );
        assert!(
            mem.slice(ProcAddr(0x1_0010 + 100), MEM - 0x1_0010 - 100)
                .unwrap()
                .iter()
                .all(|&b| b == 0)
        );

        // The last byte of the window is reachable, one more is not.
        let last = base.checked_add(4095).unwrap();
        assert_eq!(write(&mut s, NIC, last, &[0xAA]), Ok(()));
        assert_eq!(
            nacked(write(&mut s, NIC, last, &[0xAA, 0xBB])),
            Some(NackReason::OutsideWindow)
        );
        let past = base.checked_add(4096).unwrap();
        assert_eq!(
            nacked(write(&mut s, NIC, past, &[1])),
            Some(NackReason::OutsideWindow)
        );
        // Nothing beyond the window was touched by the refused writes.
        let mem = s.fabric.memory(ep(CPU)).unwrap();
        assert_eq!(mem.slice(ProcAddr(0x1_0000 + 4095), 2).unwrap(), &[0xAA, 0]);

        // Only the mapper's device may use the window.
        assert_eq!(
            nacked(write(&mut s, OTHER, base, &[1])),
            Some(NackReason::WrongRequester)
        );
    }

    #[test]
    fn access_is_enforced_and_interrupt_windows_interrupt() {
        let mut s = sim();
        let mut m = mapper(&mut s);
        let tx = fabric_addr(m.map(region(0x2_0000, 2048), Access::READ).unwrap());
        let rx = fabric_addr(
            m.map(region(0x3_0000, 2048), Access::WRITE | Access::INTERRUPT)
                .unwrap(),
        );
        // The adapter only reads TX buffers and only writes RX buffers.
        assert_eq!(
            nacked(write(&mut s, NIC, tx, &[1, 2, 3])),
            Some(NackReason::NotWritable)
        );
        let read = s
            .dma(ep(NIC), DmaRequest::read(ep(CPU), ProcAddr(0), rx, 4))
            .unwrap();
        assert_eq!(nacked(read.result), Some(NackReason::NotReadable));
        assert_eq!(write(&mut s, NIC, rx, &[5; 64]), Ok(()));
        let irq = s.fabric.pop_interrupt(ep(CPU)).unwrap().unwrap();
        assert_eq!((irq.requester, irq.key), (ep(NIC), rx.key()));
    }

    #[test]
    fn after_unmap_the_old_key_is_refused() {
        let mut s = sim();
        let old = mapper(&mut s)
            .map(region(0x1_0000, 4096), Access::WRITE)
            .unwrap();
        assert_eq!(write(&mut s, NIC, fabric_addr(old), &[1]), Ok(()));
        mapper(&mut s).unmap(old).unwrap();
        // The window is gone: the slot is empty.
        assert_eq!(
            nacked(write(&mut s, NIC, fabric_addr(old), &[2])),
            Some(NackReason::NoWindow)
        );
        // The slot is reused for a new window: the old key is stale.
        let new = mapper(&mut s)
            .map(region(0x5_0000, 4096), Access::WRITE)
            .unwrap();
        assert_eq!(
            fabric_addr(new).key().index(),
            fabric_addr(old).key().index()
        );
        assert_ne!(new, old);
        assert_eq!(
            nacked(write(&mut s, NIC, fabric_addr(old), &[3])),
            Some(NackReason::StaleKey)
        );
        assert_eq!(write(&mut s, NIC, fabric_addr(new), &[4]), Ok(()));
        let mem = s.fabric.memory(ep(CPU)).unwrap();
        assert_eq!(mem.slice(ProcAddr(0x1_0000), 1).unwrap(), &[1]);
        assert_eq!(mem.slice(ProcAddr(0x5_0000), 1).unwrap(), &[4]);

        // Unmapping the old key again is a typed error and leaves the new window.
        let mut m = mapper(&mut s);
        let e = m.unmap(old).unwrap_err();
        assert!(
            matches!(e, MapError::StaleMapping { current_generation, .. } if current_generation == fabric_addr(new).key().generation()),
            "{e:?}"
        );
        assert!(e.to_string().contains("is stale"), "{e}");
        m.unmap(new).unwrap();
        assert!(matches!(m.unmap(new), Err(MapError::UnknownMapping { .. })));
        assert!(s.fabric.avt(ep(CPU)).unwrap().is_empty());
    }

    #[test]
    fn bad_requests_are_typed_errors() {
        let mut s = sim();
        // Endpoints are checked.
        assert!(matches!(
            FabricMapper::new(&mut s.fabric, &mut s.engine, ep(CPU), ep(77)),
            Err(MapError::Fabric(FabricError::UnknownEndpoint(_)))
        ));
        let e = FabricMapper::new(&mut s.fabric, &mut s.engine, ep(CPU), ep(CPU)).unwrap_err();
        assert!(matches!(e, MapError::Config { .. }), "{e:?}");

        let mut m = mapper(&mut s);
        assert!(matches!(
            m.map(region(0, 0), Access::READ),
            Err(MapError::ZeroLength)
        ));
        let e = m
            .map(region(0, u64::from(u32::MAX) + 1), Access::READ)
            .unwrap_err();
        assert!(
            matches!(e, MapError::TooLong { len, max, .. } if len == 1 << 32 && max == u64::from(u32::MAX))
        );
        assert!(e.to_string().contains("at most 4294967295 bytes"), "{e}");
        assert!(matches!(
            m.map(region(0, 64), Access::INTERRUPT),
            Err(MapError::UnsupportedAccess { .. })
        ));
        assert!(matches!(
            m.map(region(0, 64), Access::empty()),
            Err(MapError::UnsupportedAccess { .. })
        ));
        let e = m.map(region(MEM - 8, 16), Access::READ).unwrap_err();
        assert!(
            matches!(e, MapError::OutsideMemory { offset: ProcAddr(o), len: 16, memory_len: MEM } if o == MEM - 8),
            "{e:?}"
        );
        // Unmap: an IOVA, an offset inside a window, a key never handed out.
        let win = m.map(region(0, 64), Access::READ).unwrap();
        assert!(matches!(
            m.unmap(DeviceAddr::Iova(0x1000)),
            Err(MapError::WrongBackend { .. })
        ));
        assert!(matches!(
            m.unmap(win.checked_add(8).unwrap()),
            Err(MapError::UnknownMapping { .. })
        ));
        let never = FabricAddr::new(snet_fabric::WindowKey::new(100, 1).unwrap(), 0);
        assert!(matches!(
            m.unmap(DeviceAddr::Fabric(never)),
            Err(MapError::UnknownMapping { .. })
        ));
        assert_eq!(
            s.fabric.avt(ep(CPU)).unwrap().len(),
            1,
            "nothing was removed"
        );
    }

    #[test]
    fn a_mapper_closes_only_its_own_device_windows() {
        let mut s = sim();
        let theirs = FabricMapper::new(&mut s.fabric, &mut s.engine, ep(CPU), ep(OTHER))
            .unwrap()
            .map(region(0, 4096), Access::READ)
            .unwrap();
        let e = mapper(&mut s).unmap(theirs).unwrap_err();
        assert!(matches!(e, MapError::UnknownMapping { .. }), "{e:?}");
        assert_eq!(s.fabric.avt(ep(CPU)).unwrap().len(), 1);
        FabricMapper::new(&mut s.fabric, &mut s.engine, ep(CPU), ep(OTHER))
            .unwrap()
            .unmap(theirs)
            .unwrap();
        assert!(s.fabric.avt(ep(CPU)).unwrap().is_empty());
    }

    #[test]
    fn a_full_avt_is_reported() {
        let topo = shapes::single_router(
            &Plane::BOTH,
            &[
                (ep(CPU), EndpointKind::Processor),
                (ep(NIC), EndpointKind::Adapter),
            ],
            6,
            LinkParams::default(),
        )
        .unwrap();
        let cfg = FabricConfig {
            memory_size: MEM,
            avt_capacity: 2,
            ..FabricConfig::default()
        };
        let mut s = FabricSim::new(topo, cfg, 1).unwrap();
        let mut m = mapper(&mut s);
        m.map(region(0, 64), Access::READ).unwrap();
        m.map(region(64, 64), Access::READ).unwrap();
        let e = m.map(region(128, 64), Access::READ).unwrap_err();
        assert!(
            matches!(
                e,
                MapError::Fabric(FabricError::Avt(AvtError::Full { capacity: 2 }))
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("AVT is full"), "{e}");
    }
}
