//! An I/O virtual address (IOVA) allocator: which ranges of a VFIO
//! container's device address space are in use.
//!
//! A device behind an IOMMU sees memory only at the IOVAs the host maps for
//! it. The kernel does not choose those addresses: the caller of
//! `VFIO_IOMMU_MAP_DMA` does. [`IovaAllocator`] hands them out.
//!
//! - Everything is in whole pages ([`DEFAULT_PAGE_SIZE`], 4 KiB, unless
//!   configured): the IOMMU translates pages, so a length or an address that
//!   is not a multiple of the page size is refused with
//!   [`IovaError::NotAligned`], never rounded silently.
//! - Addresses come from one configurable range ([`DEFAULT_IOVA_RANGE`] unless
//!   configured), chosen to avoid what platforms reserve (see there).
//! - Allocation is *first fit*: the lowest free range that is long enough.
//!   Freed ranges are merged with free neighbours at once, so the free list
//!   never holds two touching ranges and a fully freed allocator is one range
//!   again.
//! - Allocations never overlap; a range is freed by the address
//!   [`IovaAllocator::alloc`] returned, as a whole.
//!
//! This is plain safe Rust with no dependency on VFIO, so it is compiled and
//! tested whether or not the `vfio` feature is on.

use std::collections::BTreeMap;
use std::ops::Range;

/// The page size used unless configured otherwise: 4 KiB, the smallest page
/// of every IOMMU snet cares about (x86 VT-d and AMD-Vi, Arm SMMU with 4 KiB
/// granules).
pub const DEFAULT_PAGE_SIZE: u64 = 4096;

/// The IOVA range used unless configured otherwise: 4 GiB up to 512 GiB.
///
/// Starting at 4 GiB keeps clear of what x86 platforms reserve below it (the
/// MSI doorbell window at `0xfee0_0000`, firmware RMRR regions) and of IOVA 0
/// (a zeroed descriptor then never names valid memory). Ending at 2^39 stays
/// within the narrowest address width of common IOMMUs (VT-d's 39-bit, 3-level
/// tables). On a real machine, check
/// `/sys/kernel/iommu_groups/<group>/reserved_regions` and configure a range
/// that avoids every region listed there.
pub const DEFAULT_IOVA_RANGE: Range<u64> = (1 << 32)..(1 << 39);

/// Why the allocator refused a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IovaError {
    /// The page size is not a power of two.
    #[error("IOVA page size must be a power of two (4096 is usual), got {page_size}")]
    BadPageSize {
        /// The page size given.
        page_size: u64,
    },
    /// The managed range is empty or its ends are not page-aligned.
    #[error(
        "IOVA range {start:#x}..{end:#x} is invalid: it must be non-empty and both ends must be multiples of the {page_size}-byte page size"
    )]
    BadRange {
        /// First address of the range.
        start: u64,
        /// One past the last address of the range.
        end: u64,
        /// The page size.
        page_size: u64,
    },
    /// A zero-length allocation.
    #[error("an IOVA allocation needs at least one page, got a length of 0")]
    ZeroLength,
    /// A length or an address that is not a multiple of the page size.
    #[error(
        "{what} {value:#x} is not a multiple of the {page_size}-byte IOVA page size (the IOMMU maps whole pages)"
    )]
    NotAligned {
        /// What was misaligned: `"length"` or `"IOVA"`.
        what: &'static str,
        /// The misaligned value.
        value: u64,
        /// The page size.
        page_size: u64,
    },
    /// No free range is long enough.
    #[error(
        "IOVA space exhausted: no free range of {len:#x} bytes (largest free range: {largest_free:#x} bytes, {total_free:#x} bytes free in all)"
    )]
    Exhausted {
        /// The requested length.
        len: u64,
        /// The longest free range.
        largest_free: u64,
        /// All free bytes (possibly fragmented).
        total_free: u64,
    },
    /// The address is not the start of a live allocation.
    #[error("IOVA {iova:#x} is not the start of a live allocation")]
    UnknownMapping {
        /// The address given.
        iova: u64,
    },
}

/// First-fit allocator of page-aligned IOVA ranges with coalescing free list.
///
/// Costs: `alloc` is O(free ranges) (first fit scans in address order),
/// `free` is O(log n). Ranges are kept in `BTreeMap`s, so iteration order (and
/// thus every decision) is deterministic.
#[derive(Clone, Debug)]
pub struct IovaAllocator {
    range: Range<u64>,
    page_size: u64,
    /// Free ranges, start → end (exclusive). Disjoint and never touching.
    free: BTreeMap<u64, u64>,
    /// Live allocations, start → length.
    used: BTreeMap<u64, u64>,
}

impl Default for IovaAllocator {
    /// [`DEFAULT_IOVA_RANGE`] in [`DEFAULT_PAGE_SIZE`] pages.
    fn default() -> Self {
        Self {
            free: BTreeMap::from([(DEFAULT_IOVA_RANGE.start, DEFAULT_IOVA_RANGE.end)]),
            used: BTreeMap::new(),
            range: DEFAULT_IOVA_RANGE,
            page_size: DEFAULT_PAGE_SIZE,
        }
    }
}

impl IovaAllocator {
    /// An allocator handing out addresses in `range`, in pages of
    /// `page_size` bytes (a power of two). Both ends of `range` must be
    /// page-aligned and the range non-empty.
    pub fn new(range: Range<u64>, page_size: u64) -> Result<Self, IovaError> {
        if !page_size.is_power_of_two() {
            return Err(IovaError::BadPageSize { page_size });
        }
        if range.start >= range.end || range.start % page_size != 0 || range.end % page_size != 0 {
            return Err(IovaError::BadRange {
                start: range.start,
                end: range.end,
                page_size,
            });
        }
        Ok(Self {
            free: BTreeMap::from([(range.start, range.end)]),
            used: BTreeMap::new(),
            range,
            page_size,
        })
    }

    /// The page size in bytes.
    pub fn page_size(&self) -> u64 {
        self.page_size
    }

    /// The managed range.
    pub fn range(&self) -> Range<u64> {
        self.range.clone()
    }

    /// Reserves `len` bytes (a non-zero multiple of the page size) at the
    /// lowest free address where they fit, and returns that address.
    pub fn alloc(&mut self, len: u64) -> Result<u64, IovaError> {
        if len == 0 {
            return Err(IovaError::ZeroLength);
        }
        if len % self.page_size != 0 {
            return Err(IovaError::NotAligned {
                what: "length",
                value: len,
                page_size: self.page_size,
            });
        }
        let Some((&start, &end)) = self.free.iter().find(|&(&s, &e)| e - s >= len) else {
            return Err(IovaError::Exhausted {
                len,
                largest_free: self.free.iter().map(|(&s, &e)| e - s).max().unwrap_or(0),
                total_free: self.free_bytes(),
            });
        };
        self.free.remove(&start);
        // start + len <= end: no overflow.
        if start + len < end {
            self.free.insert(start + len, end);
        }
        self.used.insert(start, len);
        Ok(start)
    }

    /// Releases the allocation that starts at `iova` and returns its length.
    /// The range is merged with free neighbours. An address that is not the
    /// start of a live allocation changes nothing.
    pub fn free(&mut self, iova: u64) -> Result<u64, IovaError> {
        if iova % self.page_size != 0 {
            return Err(IovaError::NotAligned {
                what: "IOVA",
                value: iova,
                page_size: self.page_size,
            });
        }
        let len = self
            .used
            .remove(&iova)
            .ok_or(IovaError::UnknownMapping { iova })?;
        let mut start = iova;
        let mut end = iova + len;
        // The free range just below, if it ends where this one starts.
        if let Some((&s, &e)) = self.free.range(..start).next_back() {
            if e == start {
                self.free.remove(&s);
                start = s;
            }
        }
        // The free range just above, if it starts where this one ends.
        if let Some(e) = self.free.remove(&end) {
            end = e;
        }
        self.free.insert(start, end);
        Ok(len)
    }

    /// The length of the live allocation starting at `iova`, if any.
    pub fn len_of(&self, iova: u64) -> Option<u64> {
        self.used.get(&iova).copied()
    }

    /// Live allocations as `start..end`, in address order.
    pub fn allocations(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.used.iter().map(|(&s, &l)| s..s + l)
    }

    /// Free ranges as `start..end`, in address order (never two touching).
    pub fn free_ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.free.iter().map(|(&s, &e)| s..e)
    }

    /// Number of live allocations.
    pub fn live(&self) -> usize {
        self.used.len()
    }

    /// Bytes not allocated.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|(&s, &e)| e - s).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u64 = DEFAULT_PAGE_SIZE;

    fn small() -> IovaAllocator {
        IovaAllocator::new(0x10_000..0x10_000 + 16 * P, P).unwrap()
    }

    #[test]
    fn configuration_is_checked() {
        assert_eq!(
            IovaAllocator::new(0..P, 3000).unwrap_err(),
            IovaError::BadPageSize { page_size: 3000 }
        );
        assert_eq!(
            IovaAllocator::new(0..P, 0).unwrap_err(),
            IovaError::BadPageSize { page_size: 0 }
        );
        for (start, end) in [(P, P), (2 * P, P), (1, P), (0, P + 1)] {
            assert!(matches!(
                IovaAllocator::new(start..end, P),
                Err(IovaError::BadRange { .. })
            ));
        }
        let d = IovaAllocator::default();
        assert_eq!((d.range(), d.page_size()), (DEFAULT_IOVA_RANGE, P));
        assert_eq!(
            d.free_bytes(),
            DEFAULT_IOVA_RANGE.end - DEFAULT_IOVA_RANGE.start
        );
        // 64 KiB pages work too.
        let mut big = IovaAllocator::new(0..1 << 20, 1 << 16).unwrap();
        assert_eq!(big.alloc(1 << 16), Ok(0));
        assert!(matches!(
            big.alloc(P),
            Err(IovaError::NotAligned { what: "length", .. })
        ));
    }

    #[test]
    fn first_fit_and_errors() {
        let mut a = small();
        let base = a.range().start;
        assert_eq!(a.alloc(0), Err(IovaError::ZeroLength));
        assert_eq!(
            a.alloc(100).unwrap_err().to_string(),
            "length 0x64 is not a multiple of the 4096-byte IOVA page size (the IOMMU maps whole pages)"
        );
        let x = a.alloc(2 * P).unwrap();
        let y = a.alloc(P).unwrap();
        let z = a.alloc(4 * P).unwrap();
        assert_eq!((x, y, z), (base, base + 2 * P, base + 3 * P));
        // Free the first: a 1-page request fits in the 2-page hole (first fit),
        // a 3-page request does not and goes after z.
        a.free(x).unwrap();
        assert_eq!(a.alloc(P), Ok(base));
        assert_eq!(a.alloc(3 * P), Ok(base + 7 * P));
        assert_eq!(a.alloc(P), Ok(base + P));
        // 6 pages left at the end; 7 do not fit.
        assert_eq!(
            a.alloc(7 * P),
            Err(IovaError::Exhausted {
                len: 7 * P,
                largest_free: 6 * P,
                total_free: 6 * P
            })
        );
        assert!(
            a.alloc(7 * P)
                .unwrap_err()
                .to_string()
                .starts_with("IOVA space exhausted")
        );
        assert_eq!(a.alloc(6 * P), Ok(base + 10 * P));
        assert_eq!(a.free_bytes(), 0);
        assert_eq!(a.free_ranges().count(), 0);
    }

    #[test]
    fn free_checks_and_coalesces() {
        let mut a = small();
        let base = a.range().start;
        let v: Vec<u64> = (0..4).map(|_| a.alloc(4 * P).unwrap()).collect();
        assert_eq!(a.live(), 4);
        assert_eq!(
            a.free(v[1] + 1),
            Err(IovaError::NotAligned {
                what: "IOVA",
                value: v[1] + 1,
                page_size: P
            })
        );
        // Inside an allocation but not its start: unknown, nothing freed.
        assert_eq!(
            a.free(v[1] + P),
            Err(IovaError::UnknownMapping { iova: v[1] + P })
        );
        assert_eq!(a.len_of(v[1]), Some(4 * P));
        assert_eq!(a.free(v[1]), Ok(4 * P));
        assert_eq!(
            a.free(v[1]),
            Err(IovaError::UnknownMapping { iova: v[1] }),
            "double free"
        );
        assert_eq!(a.len_of(v[1]), None);
        // Freeing v[3] then v[2] merges all three into one range.
        a.free(v[3]).unwrap();
        let free: Vec<_> = a.free_ranges().collect();
        assert_eq!(free, [v[1]..v[2], v[3]..v[3] + 4 * P]);
        a.free(v[2]).unwrap();
        let free: Vec<_> = a.free_ranges().collect();
        assert_eq!(free, vec![v[1]..base + 16 * P]);
        // A 12-page request now fits only because of the merge.
        assert_eq!(a.alloc(12 * P), Ok(v[1]));
        a.free(v[1]).unwrap();
        a.free(v[0]).unwrap();
        assert_eq!(a.free_ranges().collect::<Vec<_>>(), vec![a.range()]);
        assert_eq!(a.live(), 0);
    }

    #[test]
    fn range_at_the_top_of_the_address_space() {
        let top = u64::MAX - (P - 1); // the last page boundary
        let mut a = IovaAllocator::new(top - 2 * P..top, P).unwrap();
        let x = a.alloc(2 * P).unwrap();
        assert_eq!(a.allocations().collect::<Vec<_>>(), vec![x..top]);
        assert!(matches!(a.alloc(P), Err(IovaError::Exhausted { .. })));
        a.free(x).unwrap();
        assert_eq!(a.free_bytes(), 2 * P);
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        const PAGES: u64 = 64;

        #[derive(Clone, Debug)]
        enum Op {
            /// Allocate this many bytes (mostly whole pages, sometimes not).
            Alloc(u64),
            /// Free the n-th live allocation (modulo their count).
            FreeLive(usize),
            /// Free an arbitrary address of the range.
            FreeRaw(u64),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                5 => (1u64..=12).prop_map(|p| Op::Alloc(p * P)),
                1 => (0u64..=3 * P).prop_map(Op::Alloc),
                4 => any::<usize>().prop_map(Op::FreeLive),
                1 => (0u64..PAGES * P + 2 * P).prop_map(Op::FreeRaw),
            ]
        }

        /// Checks every invariant of the allocator's state.
        fn check(a: &IovaAllocator) -> Result<(), TestCaseError> {
            let r = a.range();
            let used: Vec<_> = a.allocations().collect();
            let free: Vec<_> = a.free_ranges().collect();
            // Allocations and free ranges together tile the whole range,
            // without overlap or gap; free ranges never touch each other.
            let mut all: Vec<(Range<u64>, bool)> = used
                .iter()
                .map(|x| (x.clone(), true))
                .chain(free.iter().map(|x| (x.clone(), false)))
                .collect();
            all.sort_by_key(|(x, _)| x.start);
            let mut at = r.start;
            let mut prev_free = false;
            for (x, is_used) in &all {
                prop_assert_eq!(x.start, at, "gap or overlap at {:#x}", at);
                prop_assert!(x.start < x.end);
                prop_assert_eq!(x.start % P, 0);
                prop_assert_eq!(x.end % P, 0);
                prop_assert!(
                    *is_used || !prev_free,
                    "two touching free ranges at {:#x}",
                    at
                );
                prev_free = !is_used;
                at = x.end;
            }
            prop_assert_eq!(at, r.end);
            let used_bytes: u64 = used.iter().map(|x| x.end - x.start).sum();
            prop_assert_eq!(used_bytes + a.free_bytes(), r.end - r.start);
            Ok(())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            #[test]
            fn random_sequences_never_overlap_and_free_everything(
                ops in proptest::collection::vec(op(), 1..200)
            ) {
                let base = 0x4000_0000u64;
                let mut a = IovaAllocator::new(base..base + PAGES * P, P).unwrap();
                for op in ops {
                    match op {
                        Op::Alloc(len) => {
                            let free_before: Vec<_> = a.free_ranges().collect();
                            let got = a.alloc(len);
                            if len == 0 {
                                prop_assert_eq!(got, Err(IovaError::ZeroLength));
                            } else if len % P != 0 {
                                let is_not_aligned = matches!(got, Err(IovaError::NotAligned { .. }));
                                prop_assert!(is_not_aligned);
                            } else {
                                // First fit: the lowest free range that is long enough.
                                let fit = free_before.iter().find(|x| x.end - x.start >= len);
                                match (got, fit) {
                                    (Ok(iova), Some(x)) => {
                                        prop_assert_eq!(iova, x.start);
                                        prop_assert_eq!(a.len_of(iova), Some(len));
                                    }
                                    (Err(IovaError::Exhausted { len: l, largest_free, total_free }), None) => {
                                        prop_assert_eq!(l, len);
                                        prop_assert!(largest_free < len);
                                        prop_assert_eq!(total_free, a.free_bytes());
                                    }
                                    (got, fit) => prop_assert!(false, "alloc gave {:?}, first fit is {:?}", got, fit),
                                }
                            }
                        }
                        Op::FreeLive(i) => {
                            let live: Vec<_> = a.allocations().collect();
                            if live.is_empty() {
                                continue;
                            }
                            let x = &live[i % live.len()];
                            prop_assert_eq!(a.free(x.start), Ok(x.end - x.start));
                        }
                        Op::FreeRaw(off) => {
                            let iova = base + off;
                            let len = a.len_of(iova);
                            let before = a.live();
                            match a.free(iova) {
                                Ok(l) => prop_assert_eq!(Some(l), len),
                                Err(_) => {
                                    prop_assert!(len.is_none());
                                    prop_assert_eq!(a.live(), before);
                                }
                            }
                        }
                    }
                    check(&a)?;
                }
                // Free everything that is left: one free range, the whole range.
                let live: Vec<_> = a.allocations().collect();
                for x in live {
                    a.free(x.start).unwrap();
                    check(&a)?;
                }
                prop_assert_eq!(a.live(), 0);
                prop_assert_eq!(a.free_ranges().collect::<Vec<_>>(), vec![a.range()]);
            }
        }
    }
}
