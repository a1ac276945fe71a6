//! `SimHost`: an in-process host IOMMU that answers like the real kernel.
//!
//! Semantics follow the measured behaviour in `shared/reference/real-kernel.md` §5 and the
//! kernel source tables in `anchors-s390-vfio.md` Part B (B.2–B.4 type1, B.7 iommufd, B.9
//! differences). Every call is recorded so tests can assert on the exact sequence.

use super::{HostDma, HostError, PinBudget};
use crate::addr::AddrRange;
use crate::perm::Perm;
use std::collections::BTreeMap;

/// Which kernel interface the simulated host behaves like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostFlavour {
    /// VFIO type1 v2 (`VFIO_TYPE1v2_IOMMU`): unmaps that cut a mapping fail with `EINVAL`.
    Type1v2,
    /// VFIO type1 v1 (`VFIO_TYPE1_IOMMU`): an unmap removes every mapping whose first IOVA it
    /// covers, whole; one that starts inside a mapping succeeds with size 0 and removes
    /// nothing, not even later mappings it covers.
    Type1v1,
    /// iommufd IOAS: no entry limit; partial or empty unmaps fail with `ENOENT`.
    Iommufd,
}

/// Configuration of a [`SimHost`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimHostConfig {
    /// Kernel interface to mimic.
    pub flavour: HostFlavour,
    /// `dma_entry_limit` of the container (type1 only; ignored by iommufd).
    pub entry_limit: u32,
    /// Valid IOVA ranges (the IOVA_RANGE capability; MSI window and apertures excluded).
    pub iova_ranges: Vec<AddrRange>,
    /// Supported page sizes; the lowest bit is the alignment for iova, size and address.
    pub page_sizes: u64,
    /// Guest-physical ranges backed by host memory; a map outside them fails `EFAULT`, ahead
    /// of every check but READ/WRITE, size 0 and wrap of the guest-physical range (like
    /// `VfioContainerBackend`, which translates to a host address before calling the kernel).
    /// `None` means all guest-physical addresses are backed.
    pub backed: Option<Vec<AddrRange>>,
    /// Whether the simulated IOMMU enforces cache coherency (snoop control) for no-snoop
    /// requests, what [`HostDma::enforces_coherency`] answers. Default `false`.
    pub coherent: bool,
    /// The process's locked-memory budget every map is charged to after the flavour's own
    /// checks (a map past it fails `ENOMEM`, i.e. out of resources), shared with the other
    /// hosts given the same [`PinBudget`]. `None`: unlimited. Unmaps give the bytes back; a
    /// host dropped with mappings keeps them charged (as a leaked container would).
    pub pin_budget: Option<PinBudget>,
}

/// The x86 MSI window that type1 reserves: `0xfee00000..=0xfeefffff`.
pub const MSI_WINDOW: AddrRange = AddrRange::new(0xfee0_0000, 0xfef0_0000);

impl SimHostConfig {
    /// The measured VT-d host (39-bit address width, MSI window reserved), type1 v2, default
    /// limit 65535.
    pub fn vtd() -> Self {
        SimHostConfig {
            flavour: HostFlavour::Type1v2,
            entry_limit: 65535,
            iova_ranges: vec![
                AddrRange::new(0, MSI_WINDOW.start),
                AddrRange::new(MSI_WINDOW.end, 1 << 39),
            ],
            page_sizes: 0x4020_1000,
            backed: None,
            coherent: false,
            pin_budget: None,
        }
    }

    /// The measured AMD-Vi host: MSI window and the HyperTransport hole
    /// `0xfd00000000..=0xffffffffff` reserved, 64-bit space otherwise.
    pub fn amd_vi() -> Self {
        SimHostConfig {
            iova_ranges: vec![
                AddrRange::new(0, MSI_WINDOW.start),
                AddrRange::new(MSI_WINDOW.end, 0xfd_0000_0000),
                AddrRange::new(0x100_0000_0000, u64::MAX),
            ],
            page_sizes: 0xffff_ff7f_ffff_f000,
            ..Self::vtd()
        }
    }

    /// The measured s390 zPCI host: one aperture `[start, end)`, 4 KiB pages only.
    pub fn s390(aperture: AddrRange) -> Self {
        SimHostConfig {
            iova_ranges: vec![aperture],
            page_sizes: 0x1000,
            ..Self::vtd()
        }
    }

    /// This configuration with another flavour.
    pub fn with_flavour(mut self, flavour: HostFlavour) -> Self {
        self.flavour = flavour;
        self
    }

    /// This configuration with cache coherency enforced (or not).
    pub fn with_coherency(mut self, coherent: bool) -> Self {
        self.coherent = coherent;
        self
    }

    /// This configuration with another entry limit.
    pub fn with_entry_limit(mut self, limit: u32) -> Self {
        self.entry_limit = limit;
        self
    }

    /// This configuration charging every map to `budget` (see [`PinBudget`]).
    pub fn with_pin_budget(mut self, budget: PinBudget) -> Self {
        self.pin_budget = Some(budget);
        self
    }
}

impl Default for SimHostConfig {
    fn default() -> Self {
        Self::vtd()
    }
}

/// One call made to a [`SimHost`], with its result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostCall {
    /// `map(iova, gpa, size, perm)`.
    Map {
        /// IOVA.
        iova: u64,
        /// Guest-physical address.
        gpa: u64,
        /// Bytes.
        size: u64,
        /// Permissions.
        perm: Perm,
        /// Outcome.
        result: Result<(), HostError>,
    },
    /// `unmap(iova, size)`.
    Unmap {
        /// IOVA.
        iova: u64,
        /// Bytes requested.
        size: u64,
        /// Bytes unmapped, or the error.
        result: Result<u64, HostError>,
    },
    /// `unmap_all()`.
    UnmapAll {
        /// Bytes unmapped, or the error.
        result: Result<u64, HostError>,
    },
}

/// One mapping held by a [`SimHost`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostMapping {
    /// First IOVA.
    pub iova: u64,
    /// First guest-physical address.
    pub gpa: u64,
    /// Bytes.
    pub size: u64,
    /// Permissions.
    pub perm: Perm,
}

/// The simulated host. See the module documentation.
#[derive(Clone, Debug)]
pub struct SimHost {
    config: SimHostConfig,
    /// iova → (size, gpa, perm)
    maps: BTreeMap<u64, (u64, u64, Perm)>,
    avail: u32,
    calls: Vec<HostCall>,
    record: bool,
}

impl SimHost {
    /// A host with `config`, empty, with the full entry limit available.
    pub fn new(config: SimHostConfig) -> Self {
        SimHost {
            avail: config.entry_limit,
            config,
            maps: BTreeMap::new(),
            calls: Vec::new(),
            record: true,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimHostConfig {
        &self.config
    }

    /// Stops (or restarts) recording calls; benchmarks turn it off.
    pub fn set_recording(&mut self, on: bool) {
        self.record = on;
    }

    /// Sets how many more mappings are accepted (like a container opened with that
    /// `dma_entry_limit` minus what it holds).
    pub fn set_remaining(&mut self, avail: u32) {
        self.avail = avail;
    }

    /// Every call since creation or the last [`take_calls`](Self::take_calls).
    pub fn calls(&self) -> &[HostCall] {
        &self.calls
    }

    /// Returns and forgets the recorded calls.
    pub fn take_calls(&mut self) -> Vec<HostCall> {
        std::mem::take(&mut self.calls)
    }

    /// Current mappings in IOVA order.
    pub fn mappings(&self) -> Vec<HostMapping> {
        self.iter_mappings().collect()
    }

    /// Current mappings in IOVA order, without copying them into a vector.
    pub fn iter_mappings(&self) -> impl Iterator<Item = HostMapping> + '_ {
        self.maps
            .iter()
            .map(|(&iova, &(size, gpa, perm))| HostMapping {
                iova,
                gpa,
                size,
                perm,
            })
    }

    /// Number of mappings held.
    pub fn mapping_count(&self) -> usize {
        self.maps.len()
    }

    fn min_page(&self) -> u64 {
        let p = self.config.page_sizes;
        if p == 0 {
            4096
        } else {
            1 << p.trailing_zeros()
        }
    }

    fn overlaps(&self, start: u64, last: u64) -> bool {
        self.maps
            .range(..=last)
            .next_back()
            .is_some_and(|(&iova, &(size, _, _))| iova + (size - 1) >= start)
    }

    fn in_valid_range(&self, start: u64, last: u64) -> bool {
        self.config.iova_ranges.is_empty()
            || self.config.iova_ranges.iter().any(|r| {
                start >= r.start && (last < r.end || (r.end == u64::MAX && last == u64::MAX))
            })
    }

    fn backed(&self, gpa: u64, size: u64) -> bool {
        match &self.config.backed {
            None => true,
            Some(ranges) => {
                let want = AddrRange::from_len(gpa, size);
                ranges
                    .iter()
                    .any(|r| r.start <= want.start && want.end <= r.end)
            }
        }
    }

    fn do_map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), HostError> {
        let iommufd = self.config.flavour == HostFlavour::Iommufd;
        if !perm.intersects(Perm::RW) {
            return Err(HostError::Invalid);
        }
        let wrap = if iommufd {
            HostError::Overflow
        } else {
            HostError::Invalid
        };
        if size == 0 {
            return Err(HostError::Invalid);
        }
        gpa.checked_add(size - 1).ok_or(wrap)?;
        // A real backend turns the guest-physical range into a host virtual address before
        // it calls the kernel (`VfioContainerBackend::map` → `gpa_to_hva`), so an unbacked
        // range is EFAULT ahead of every kernel check: overlap, entry count, alignment of
        // the IOVA (real-kernel oracle, tests/real-kernel: "overlap with unbacked gpa" and
        // "unbacked gpa at full" answer EFAULT on Linux 6.1 with VT-d and AMD-Vi).
        if !self.backed(gpa, size) {
            return Err(HostError::BadAddress);
        }
        // VfioContainerBackend also refuses a range that ends at (or past) 2^64 before the
        // kernel sees it: type1 would map it but could never unmap it (see `do_unmap`).
        if !iommufd && iova.checked_add(size).is_none() {
            return Err(HostError::Invalid);
        }
        let page = self.min_page();
        if !size.is_multiple_of(page) || !iova.is_multiple_of(page) || !gpa.is_multiple_of(page) {
            return Err(HostError::Invalid);
        }
        let last = iova.checked_add(size - 1).ok_or(wrap)?;
        if iommufd {
            // B.7: reserved/outside-aperture is checked before overlap.
            if !self.in_valid_range(iova, last) {
                return Err(HostError::Invalid);
            }
            if self.overlaps(iova, last) {
                return Err(HostError::Overlap);
            }
        } else {
            // B.3: overlap, then the entry count, then the valid-range check.
            if self.overlaps(iova, last) {
                return Err(HostError::Overlap);
            }
            if self.avail == 0 {
                return Err(HostError::OutOfResources);
            }
            if !self.in_valid_range(iova, last) {
                return Err(HostError::Invalid);
            }
        }
        // Pinning comes after the checks above (type1: `vfio_dma_do_map` checks the entry
        // count before `vfio_pin_map_dma` pins and charges `locked_vm`).
        if let Some(budget) = &self.config.pin_budget {
            budget.charge(size)?;
        }
        if !iommufd {
            self.avail -= 1;
        }
        self.maps.insert(iova, (size, gpa, perm & Perm::RW));
        Ok(())
    }

    fn remove(&mut self, iova: u64) -> u64 {
        let (size, _, _) = self.maps.remove(&iova).unwrap_or((0, 0, Perm::empty()));
        if let Some(budget) = &self.config.pin_budget {
            budget.release(size);
        }
        if self.config.flavour != HostFlavour::Iommufd {
            self.avail = self.avail.saturating_add(1);
        }
        size
    }

    fn do_unmap(&mut self, iova: u64, size: u64) -> Result<u64, HostError> {
        let page = self.min_page();
        match self.config.flavour {
            HostFlavour::Type1v2 | HostFlavour::Type1v1 => {
                if !iova.is_multiple_of(page) || size == 0 || !size.is_multiple_of(page) {
                    return Err(HostError::Invalid);
                }
                let last = iova.checked_add(size - 1).ok_or(HostError::Invalid)?;
                if self.config.flavour == HostFlavour::Type1v2 {
                    // B.4: a mapping containing iova must start there, one containing the
                    // last byte must end there.
                    if let Some((&s, &(sz, _, _))) = self.maps.range(..=iova).next_back()
                        && s < iova
                        && s + (sz - 1) >= iova
                    {
                        return Err(HostError::Invalid);
                    }
                    if let Some((&s, &(sz, _, _))) = self.maps.range(..=last).next_back()
                        && s + (sz - 1) > last
                    {
                        return Err(HostError::Invalid);
                    }
                }
                // A range ending at the top of the 64-bit space unmaps nothing, whatever it
                // covers: type1 compares against `iova + size`, which wraps to 0
                // (vfio_find_dma_first_node and the unmap loop in vfio_dma_do_unmap).
                // Real-kernel oracle: "unmap from A to 2^64 -> OK size=0", the mapping at A
                // stays. (On AMD-Vi, whose last IOVA range ends at 2^64 - 1, the kernel even
                // maps the top page and can then never unmap it; VfioContainerBackend and
                // `do_map` refuse such maps.)
                if last == u64::MAX {
                    return Ok(0);
                }
                // The walk starts at the first mapping overlapping the range. v1 stops at
                // once when that one starts below `iova` (an unmap offset into a mapping
                // unmaps nothing, not even later mappings the range covers: real-kernel
                // oracle "[v1] from inside X, covering Y -> OK size=0"); otherwise every
                // mapping starting in the range goes whole (real-kernel.md §5: "[v1] unmap
                // first half -> size out=8192"). v2 checked above that none is cut.
                if let Some((&s, &(sz, _, _))) = self.maps.range(..iova).next_back()
                    && s + (sz - 1) >= iova
                {
                    return Ok(0);
                }
                let starts: Vec<u64> = self.maps.range(iova..=last).map(|(&s, _)| s).collect();
                Ok(starts.into_iter().map(|s| self.remove(s)).sum())
            }
            HostFlavour::Iommufd => {
                if size == 0 {
                    return Err(HostError::Invalid);
                }
                let last = iova.checked_add(size - 1).ok_or(HostError::Overflow)?;
                let mut removed = 0;
                let mut any = false;
                // B.7: areas are removed in order until one crosses an edge.
                let first = match self.maps.range(..=iova).next_back() {
                    Some((&s, &(sz, _, _))) if s + (sz - 1) >= iova => s,
                    _ => iova,
                };
                let hits: Vec<(u64, u64)> = self
                    .maps
                    .range(first..=last)
                    .map(|(&s, &(sz, _, _))| (s, sz))
                    .collect();
                for (s, sz) in hits {
                    any = true;
                    if s < iova || s + (sz - 1) > last {
                        return Err(HostError::NotFound);
                    }
                    removed += self.remove(s);
                }
                if !any {
                    return Err(HostError::NotFound);
                }
                Ok(removed)
            }
        }
    }

    fn log(&mut self, call: HostCall) {
        if self.record {
            self.calls.push(call);
        }
    }
}

impl HostDma for SimHost {
    fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), HostError> {
        let result = self.do_map(iova, gpa, size, perm);
        self.log(HostCall::Map {
            iova,
            gpa,
            size,
            perm,
            result,
        });
        result
    }

    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, HostError> {
        let result = self.do_unmap(iova, size);
        self.log(HostCall::Unmap { iova, size, result });
        result
    }

    fn unmap_all(&mut self) -> Result<u64, HostError> {
        let starts: Vec<u64> = self.maps.keys().copied().collect();
        let result = Ok(starts.into_iter().map(|s| self.remove(s)).sum());
        self.log(HostCall::UnmapAll { result });
        result
    }

    fn remaining_entries(&self) -> Option<u32> {
        match self.config.flavour {
            HostFlavour::Iommufd => None,
            _ => Some(self.avail),
        }
    }

    fn iova_ranges(&self) -> Vec<AddrRange> {
        self.config.iova_ranges.clone()
    }

    fn page_sizes(&self) -> u64 {
        self.config.page_sizes
    }

    fn enforces_coherency(&self) -> bool {
        self.config.coherent
    }
}
