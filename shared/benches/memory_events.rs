//! Memory-event benchmark (issue 14): an identity-mapped (pass-through) device over 1 GiB of
//! guest RAM; the VMM converts the whole GiB to private and back to shared in steps of 4 KiB,
//! 64 KiB or 2 MiB, under the two host layouts:
//!
//! - `coalesced`: the default (2 MiB host mappings); a conversion that cuts a mapping splits
//!   it (unmap the whole, re-map the survivors).
//! - `page_granular`: the VMM announced conversions (`MemoryEvent::ExpectConversions`), so
//!   the GiB is mapped one 4 KiB page per host mapping and a conversion never splits.
//!
//! The host is SimHost's iommufd flavour (no entry limit: page-granular 1 GiB needs 262 144
//! host entries, four times type1's default `dma_entry_limit`). Host call counts of one round
//! trip are printed once per configuration (they do not vary between runs); criterion times
//! one round trip (1 GiB to private and back).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use std::time::{Duration, Instant};
use viommu_shared::AddrRange;
use viommu_shared::Perm;
use viommu_shared::host::{HostDma, HostError, HostFlavour, SimHost, SimHostConfig};
use viommu_shared::memory::{GuestMemoryState, MemoryEvent};
use viommu_shared::shadow::{IdentityView, ShadowConfig, ShadowEngine, SyncReport};

const GIB: u64 = 1 << 30;
/// Guest RAM: 1 GiB at 4 GiB.
const RAM: AddrRange = AddrRange::new(4 * GIB, 5 * GIB);

/// SimHost, counting the bytes mapped and unmapped (what the kernel pins and unpins: its
/// cost grows with bytes, not only with calls).
struct Counting {
    host: SimHost,
    mapped: u64,
    unmapped: u64,
}

impl HostDma for Counting {
    fn map(&mut self, iova: u64, gpa: u64, size: u64, perm: Perm) -> Result<(), HostError> {
        self.mapped += size;
        self.host.map(iova, gpa, size, perm)
    }
    fn unmap(&mut self, iova: u64, size: u64) -> Result<u64, HostError> {
        self.unmapped += size;
        self.host.unmap(iova, size)
    }
    fn unmap_all(&mut self) -> Result<u64, HostError> {
        self.host.unmap_all()
    }
    fn remaining_entries(&self) -> Option<u32> {
        self.host.remaining_entries()
    }
    fn iova_ranges(&self) -> Vec<AddrRange> {
        self.host.iova_ranges()
    }
    fn page_sizes(&self) -> u64 {
        self.host.page_sizes()
    }
}

struct World {
    engine: ShadowEngine<Counting>,
    state: GuestMemoryState,
    view: IdentityView,
}

impl World {
    fn new(page_granular: bool) -> World {
        let mut host = SimHost::new(SimHostConfig::vtd().with_flavour(HostFlavour::Iommufd));
        host.set_recording(false);
        // Default: 2 MiB host mappings, up to 2^20 of them (page-granular needs 2^18).
        let config = ShadowConfig::default();
        let view = IdentityView::new(&[RAM]);
        let host = Counting {
            host,
            mapped: 0,
            unmapped: 0,
        };
        let mut engine = ShadowEngine::new(host, config);
        let mut state = GuestMemoryState::new();
        if page_granular {
            state.apply(MemoryEvent::ExpectConversions(RAM));
            state.prepare(&mut engine);
        }
        engine.reclaim(&view).expect("initial map");
        World {
            engine,
            state,
            view,
        }
    }

    fn event(&mut self, ev: MemoryEvent) -> SyncReport {
        let change = self.state.apply(ev);
        GuestMemoryState::apply_to_engine(&mut self.engine, &self.view, &change).expect("event")
    }

    /// 1 GiB to private in `step` pieces, then back to shared: the host calls made.
    fn round_trip(&mut self, step: u64) -> (u64, u64) {
        self.engine.host_mut().mapped = 0;
        self.engine.host_mut().unmapped = 0;
        let mut r = SyncReport::default();
        for at in (RAM.start..RAM.end).step_by(step as usize) {
            r.absorb(self.event(MemoryEvent::ConvertToPrivate(AddrRange::from_len(at, step))));
        }
        assert_eq!(self.engine.record().len(), 0);
        for at in (RAM.start..RAM.end).step_by(step as usize) {
            r.absorb(self.event(MemoryEvent::ConvertToShared(AddrRange::from_len(at, step))));
        }
        (r.unmap_calls, r.map_calls)
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("convert_1gib_round_trip");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(1));
    g.warm_up_time(Duration::from_millis(1));
    for step in [4 << 10, 64 << 10, 2 << 20] {
        for (name, granular) in [("coalesced", false), ("page_granular", true)] {
            let mut w = World::new(granular);
            let entries = w.engine.record().len();
            let t = Instant::now();
            let (unmaps, maps) = w.round_trip(step);
            let secs = t.elapsed().as_secs_f64();
            let h = w.engine.host();
            eprintln!(
                "memory_events: step {:>4} KiB {name:>13}: {} host calls ({unmaps} unmaps, {maps} maps), {} MiB mapped + {} MiB unmapped per round trip, {entries} host entries, {secs:.3} s",
                step >> 10,
                unmaps + maps,
                h.mapped >> 20,
                h.unmapped >> 20,
            );
            g.bench_with_input(
                BenchmarkId::new(name, format!("{}K", step >> 10)),
                &step,
                |b, &s| b.iter(|| w.round_trip(s)),
            );
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
