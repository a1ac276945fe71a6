//! The shared state behind [`AmdVi`](crate::AmdVi) and the helpers every path uses.
//!
//! # Locking
//!
//! - `regs` (the register bank, event log writer, MSI message, event history) is held only
//!   briefly and never while waiting for anything.
//! - `exec` (the passthrough devices' shadow engines) serializes command processing, IommuEn
//!   changes, attach/detach and aliasing. It may be held while IOTLB invalidations wait for
//!   in-flight emulated DMA and while host calls run.
//! - Order: `exec` before `regs`. The emulated-DMA path takes only `regs` (briefly), so an
//!   invalidation waiting for DMA can never wait on a DMA that waits for `exec`.
//! - MSIs are sent after `regs` is released.

use crate::config::Config;
use crate::dte::{DeviceMode, Dte};
use crate::error::AmdViError;
use crate::event::{Event, EventOutcome, EventRecord};
use crate::register_bank::Registers;
use crate::regs::{DeviceTable, control, offset};
use crate::shadow::HostShadow;
use crate::stats::{self, Counters};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use viommu_shared::AddrRange;
use viommu_shared::iotlb::IotlbRegistry;
use viommu_shared::irq::{IrInvalidation, IrListener};
use viommu_shared::regs::{Msi, MsiSink};
use viommu_shared::shadow::IdentityView;
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

/// How many host errors [`Inner::host_errors`] keeps until taken.
const HOST_ERROR_HISTORY: usize = 64;

/// The register values a translation needs, read once under the register lock.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot {
    /// Control register.
    pub control: u64,
    /// Device table geometry.
    pub dev_tab: DeviceTable,
}

/// The passthrough devices, by requester id, and interrupt-route notifications not yet sent.
#[derive(Default)]
pub struct Exec {
    /// Shadow engine and current mode per attached device.
    pub shadows: BTreeMap<u16, HostShadow>,
    /// Discarded / private guest memory, which no shadow maps (VMM memory events).
    pub memory: viommu_shared::memory::GuestMemoryState,
    /// Interrupt-route invalidations queued by the commands being processed.
    pub irq_pending: Vec<IrInvalidation>,
}

/// Everything the model shares between vCPU (MMIO) and device (DMA) threads.
pub struct Inner {
    /// The configuration.
    pub config: Config,
    /// The advertised Extended Feature Register.
    pub efr: u64,
    /// Guest memory (tables, rings, DMA targets).
    pub mem: GuestMemoryMmap,
    /// Identity over guest RAM, for untranslated passthrough devices.
    pub identity: IdentityView,
    /// Where the IOMMU's MSIs go.
    pub msi_sink: Arc<dyn MsiSink>,
    /// Emulated devices' translation caches.
    pub iotlb: Arc<IotlbRegistry>,
    /// Register bank, event log writer, MSI message, event history.
    pub regs: Mutex<Registers>,
    /// Passthrough devices; serializes command processing.
    pub exec: Mutex<Exec>,
    /// IVRS aliases: requester id -> DeviceID of the governing entry.
    pub aliases: RwLock<HashMap<u16, u16>>,
    /// Counters.
    pub stats: Counters,
    /// Host errors not yet taken by the VMM.
    pub host_errors: Mutex<VecDeque<AmdViError>>,
    /// Who is told when the guest invalidates interrupt-remapping state.
    pub irq_listeners: RwLock<Vec<Arc<dyn IrListener>>>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AmdVi")
            .field("config", &self.config)
            .field("efr", &format_args!("{:#x}", self.efr))
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

/// Locks a mutex, recovering from poisoning (all state here stays consistent across a
/// panicking holder: it is plain data updated in single steps).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Inner {
    /// A model in its reset state.
    pub fn new(config: Config, mem: GuestMemoryMmap, msi_sink: Arc<dyn MsiSink>) -> Inner {
        let ram: Vec<AddrRange> = mem
            .iter()
            .map(|r| AddrRange::from_len(r.start_addr().0, r.len()))
            .collect();
        let efr = config.efr();
        Inner {
            efr,
            identity: IdentityView::new(&ram),
            regs: Mutex::new(Registers::new(efr, config.ppr, config.event_history)),
            iotlb: Arc::new(IotlbRegistry::with_capacity(config.iotlb_capacity)),
            exec: Mutex::new(Exec::default()),
            aliases: RwLock::new(HashMap::new()),
            stats: Counters::default(),
            host_errors: Mutex::new(VecDeque::new()),
            irq_listeners: RwLock::new(Vec::new()),
            msi_sink,
            mem,
            config,
        }
    }

    /// The register values translation depends on.
    pub fn snapshot(&self) -> Snapshot {
        let r = lock(&self.regs);
        Snapshot {
            control: r.get(offset::CONTROL),
            dev_tab: DeviceTable::from_register(r.get(offset::DEV_TAB_BASE)),
        }
    }

    /// The DeviceID whose entry governs DMA from `requester` (IVRS alias, or itself).
    pub fn alias_of(&self, requester: u16) -> u16 {
        let a = self.aliases.read().unwrap_or_else(PoisonError::into_inner);
        a.get(&requester).copied().unwrap_or(requester)
    }

    /// Requester ids whose DMA is governed by the entry of `device_id`.
    pub fn requesters_of(&self, device_id: u16) -> Vec<u16> {
        let a = self.aliases.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<u16> = a
            .iter()
            .filter(|&(_, &alias)| alias == device_id)
            .map(|(&r, _)| r)
            .collect();
        if !a.contains_key(&device_id) {
            out.push(device_id);
        }
        out
    }

    /// What the IOMMU does with DMA governed by the entry of `device_id` right now.
    pub fn resolve(&self, device_id: u16, snap: &Snapshot) -> DeviceMode {
        if snap.control & control::IOMMU_EN == 0 {
            return DeviceMode::IommuDisabled;
        }
        DeviceMode::from_entry(
            Dte::read(&self.mem, &snap.dev_tab, device_id),
            self.config.levels(),
        )
    }

    /// Raises `event`: written to the guest's log (and the MSI sent) unless `suppressed`.
    pub fn raise(&self, event: Event, suppressed: bool) -> EventOutcome {
        let (outcome, msi) = {
            let mut r = lock(&self.regs);
            if suppressed {
                r.remember(EventRecord {
                    event,
                    outcome: EventOutcome::Suppressed,
                });
                (EventOutcome::Suppressed, None)
            } else {
                r.log_event(&self.mem, &event)
            }
        };
        let counter = if outcome == EventOutcome::Logged {
            &self.stats.events_logged
        } else {
            &self.stats.events_dropped
        };
        stats::add(counter, 1);
        self.send(msi);
        outcome
    }

    /// Sends an MSI, if any.
    pub fn send(&self, msi: Option<Msi>) {
        if let Some(m) = msi {
            self.msi_sink.send(m);
        }
    }

    /// Records a host error for [`AmdVi::take_host_errors`](crate::AmdVi::take_host_errors).
    pub fn note_host_error(&self, e: &AmdViError) {
        let mut h = lock(&self.host_errors);
        if h.len() == HOST_ERROR_HISTORY {
            h.pop_front();
        }
        h.push_back(e.clone());
    }

    /// Identity translation of `iova`: the largest naturally aligned block (at most 1 GiB)
    /// containing it inside one RAM region, or its 4 KiB page outside RAM.
    pub fn identity_page(&self, iova: u64) -> (u64, u64) {
        let mut size = 1u64 << 30;
        while size > 0x1000 {
            let base = iova & !(size - 1);
            if self.mem.iter().any(|r| {
                let start = r.start_addr().0;
                base >= start && base - start < r.len() && r.len() - (base - start) >= size
            }) {
                return (base, size);
            }
            size >>= 1;
        }
        (iova & !0xfff, 0x1000)
    }
}
