//! Per-model property test of memory events (issue 14): random interleavings of guest table
//! edits (each followed by the model's own invalidation: a VT-d page-selective IOTLB
//! invalidation, an AMD-Vi INVALIDATE_IOMMU_PAGES, an s390 RPCIT), large-leaf switches,
//! discards, populates, shared/private conversions and page-granular hints, driven through
//! the scenario runner. After every step the simulated host holds exactly the guest's
//! translations restricted to populated shared memory, the VMM's reverse query agrees, a
//! large-leaf switch that changes no translation makes no host call, and detaching leaves
//! nothing mapped.

use proptest::prelude::*;
use std::collections::BTreeMap;
use viommu_conformance::{Runner, parse};
use viommu_shared::{AddrRange, Perm};

const PAGE: u64 = 4096;

/// What a model's guest driver writes.
trait Driver {
    /// Scenario text up to: translation on, the device attached to a host, its one leaf
    /// table (every entry not present) covering `iova_base() .. + pages() * 4K`.
    fn preamble(&self) -> String;
    /// Passthrough device id.
    fn dev(&self) -> u32;
    /// First IOVA of the window.
    fn iova_base(&self) -> u64;
    /// Pages in the window (one leaf table; also the size of the large leaf).
    fn pages(&self) -> u64;
    /// Guest frames the window maps to: `pool() .. + pages() * 4K` (large-leaf aligned).
    fn pool(&self) -> u64;
    /// Lines writing leaf entry `i`.
    fn pte(&self, i: u64, target: Option<(u64, Perm)>) -> String;
    /// Lines pointing the window at the leaf table (`None`) or making it one large leaf
    /// mapping `pool()` read-write.
    fn directory(&self, big: bool) -> String;
    /// Lines invalidating pages `[first, first + n)` of the window and waiting for it.
    fn invalidate(&mut self, first: u64, n: u64) -> String;
}

/// Smallest naturally aligned power-of-two block of pages covering `[first, first + n)`:
/// (first page, log2 pages).
fn aligned_block(first: u64, n: u64) -> (u64, u32) {
    let last = first + n.max(1) - 1;
    let mut order = 0;
    while first >> order != last >> order {
        order += 1;
    }
    ((first >> order) << order, order)
}

struct Vtd {
    tail: u64,
    waits: u64,
}

impl Driver for Vtd {
    fn preamble(&self) -> String {
        "memory 16M
model vtd
let ROOT = 0x20000
let CTX = 0x21000
let L4 = 0x30000
let L3 = 0x31000
let L2 = 0x32000
let PT = 0x34000
write64 ROOT CTX|1
write64 CTX+0x18*16 L4|1
write64 CTX+0x18*16+8 2|(5<<8)
write64 L4 L3|3
write64 L3+1*8 L2|3
write64 L2 PT|3
mmio write 0x90 8 0x10000
mmio write 0x20 8 ROOT
mmio write 0x18 4 (1<<26)|(1<<30)
mmio write 0x18 4 (1<<26)|(1<<31)
host dev=00:03.0
"
        .into()
    }
    fn dev(&self) -> u32 {
        0x18
    }
    fn iova_base(&self) -> u64 {
        0x4000_0000
    }
    fn pages(&self) -> u64 {
        512
    }
    fn pool(&self) -> u64 {
        0x80_0000
    }
    fn pte(&self, i: u64, t: Option<(u64, Perm)>) -> String {
        let v = match t {
            None => 0,
            Some((gpa, p)) => gpa | if p.contains(Perm::WRITE) { 3 } else { 1 },
        };
        format!("write64 PT+{i}*8 {v:#x}\n")
    }
    fn directory(&self, big: bool) -> String {
        if big {
            format!("write64 L2 {:#x}|(1<<7)|3\n", self.pool())
        } else {
            "write64 L2 PT|3\n".into()
        }
    }
    fn invalidate(&mut self, first: u64, n: u64) -> String {
        let (start, am) = aligned_block(first, n);
        self.waits += 1;
        let q = 0x10000 + (self.tail % 256) * 16;
        let q2 = 0x10000 + ((self.tail + 1) % 256) * 16;
        self.tail += 2;
        format!(
            "write64 {q:#x} 0xf2|(5<<16)
write64 {:#x} {:#x}
write64 {q2:#x} 0x25|({}<<32)
write64 {:#x} 0x11000
mmio write 0x88 8 {:#x}
expect-mem32 0x11000 {}
",
            q + 8,
            (self.iova_base() + start * PAGE) | u64::from(am),
            self.waits,
            q2 + 8,
            (self.tail % 256) << 4,
            self.waits
        )
    }
}

struct AmdVi {
    tail: u64,
    waits: u64,
}

impl Driver for AmdVi {
    fn preamble(&self) -> String {
        "memory 16M
model amd-vi
let ROOT = 0x40_0000
let L2 = 0x40_1000
let PT = 0x40_3000
let RW = 3<<61
write64 ROOT+1*8 L2|1|2<<9|RW
write64 L2 PT|1|1<<9|RW
write64 0x10_0000+0x10*32 ROOT|3<<9|3|RW
write64 0x10_0000+0x10*32+8 3
mmio write 0x0000 8 0x10_0000|0x1ff
mmio write 0x0008 8 0x30_0000|9<<56
mmio write 0x0018 8 0x1001
host dev=00:02.0
"
        .into()
    }
    fn dev(&self) -> u32 {
        0x10
    }
    fn iova_base(&self) -> u64 {
        0x4000_0000
    }
    fn pages(&self) -> u64 {
        512
    }
    fn pool(&self) -> u64 {
        0x80_0000
    }
    fn pte(&self, i: u64, t: Option<(u64, Perm)>) -> String {
        let v = match t {
            None => 0,
            Some((gpa, p)) => {
                gpa | 1
                    | if p.contains(Perm::WRITE) {
                        3 << 61
                    } else {
                        1 << 61
                    }
            }
        };
        format!("write64 PT+{i}*8 {v:#x}\n")
    }
    fn directory(&self, big: bool) -> String {
        if big {
            format!("write64 L2 {:#x}|1|RW\n", self.pool())
        } else {
            "write64 L2 PT|1|1<<9|RW\n".into()
        }
    }
    fn invalidate(&mut self, first: u64, n: u64) -> String {
        let (start, order) = aligned_block(first, n);
        let base = self.iova_base() + start * PAGE;
        // S = 1: the size is 2^(first clear bit from 12 + 1); S = 0: one page.
        let addr = if order == 0 {
            base
        } else {
            base | (((1u64 << (order - 1)) - 1) << 12) | 1
        };
        self.waits += 1;
        let c = 0x30_0000 + (self.tail % 512) * 16;
        let c2 = 0x30_0000 + ((self.tail + 1) % 512) * 16;
        self.tail += 2;
        format!(
            "write64 {c:#x} (3<<60)|(3<<32)
write64 {:#x} {addr:#x}
write64 {c2:#x} (1<<60)|0x30_4000|1
write64 {:#x} {}
mmio write 0x2008 4 {:#x}
expect-mem64 0x30_4000 {}
",
            c + 8,
            c2 + 8,
            self.waits,
            (self.tail % 512) * 16,
            self.waits
        )
    }
}

struct Zpci;

impl Driver for Zpci {
    fn preamble(&self) -> String {
        "model zpci
host dev=1 preset=s390
let LPCB = 0x1000
let RSP = LPCB+0x20
let FIB = 0x2000
let RT = 0x10000
let ST = 0x14000
let PT = 0x18000
let SDMA = 0x1_0000_0000
write64 LPCB 0x0020_0005_0000_0000 be
write64 LPCB+0x08 0 be
write64 LPCB+0x10 0x0000_0001_0000_0001 be
write64 LPCB+0x18 0 be
write16 RSP 0x60 be
clp req=LPCB expect cc=0
repeat 2048 as i {
  write64 RT+i*8 0x20 be
  write64 ST+i*8 0x20 be
}
repeat 256 as i {
  write64 PT+i*8 0x400 be
}
write64 RT+2*8 ST|0x7 be
write64 ST PT be
repeat 10 as i {
  write64 FIB+i*8 0 be
}
write64 FIB+0x10 SDMA be
write64 FIB+0x18 SDMA+0xf_ffff be
write64 FIB+0x20 RT|0x804 be
mpcifc fh=0x8000_0001 oc=4 fib=FIB expect cc=0
"
        .into()
    }
    fn dev(&self) -> u32 {
        1
    }
    fn iova_base(&self) -> u64 {
        0x1_0000_0000
    }
    fn pages(&self) -> u64 {
        256
    }
    fn pool(&self) -> u64 {
        0x40_0000
    }
    fn pte(&self, i: u64, t: Option<(u64, Perm)>) -> String {
        let v = match t {
            None => 0x400,
            Some((gpa, p)) => gpa | if p.contains(Perm::WRITE) { 0 } else { 0x200 },
        };
        format!("write64 PT+{i}*8 {v:#x} be\n")
    }
    fn directory(&self, big: bool) -> String {
        if big {
            // Segment entry with the format-control bit: a 1 MiB frame.
            format!("write64 ST {:#x} be\n", self.pool() | 0x400)
        } else {
            "write64 ST PT be\n".into()
        }
    }
    fn invalidate(&mut self, first: u64, n: u64) -> String {
        format!(
            "rpcit fh=0x80000001 start={:#x} len={:#x} expect cc=0\n",
            self.iova_base() + first * PAGE,
            n.max(1) * PAGE
        )
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Map `n` pages at window page `at` to pool frames from `frame`, read-only or not.
    Map {
        at: u64,
        n: u64,
        frame: u64,
        ro: bool,
    },
    /// Unmap `n` pages at `at`.
    Unmap { at: u64, n: u64 },
    /// The whole window becomes one large leaf over the pool (read-write, identity-ordered).
    Collapse,
    /// The large leaf becomes a table with the same translation.
    Expand,
    /// A memory event over pool frames `[frame, frame + n)`.
    Event {
        op: &'static str,
        frame: u64,
        n: u64,
    },
}

fn step(pages: u64) -> impl Strategy<Value = Step> {
    let ops = prop_oneof![
        Just("discard"),
        Just("populate"),
        Just("convert private"),
        Just("convert shared"),
        Just("expect-conversions"),
    ];
    prop_oneof![
        5 => (0..pages, 1..48u64, 0..pages, prop::bool::weighted(0.2))
            .prop_map(|(at, n, frame, ro)| Step::Map { at, n, frame, ro }),
        2 => (0..pages, 1..64u64).prop_map(|(at, n)| Step::Unmap { at, n }),
        1 => Just(Step::Collapse),
        1 => Just(Step::Expand),
        6 => (ops, 0..pages, 1..40u64).prop_map(|(op, frame, n)| Step::Event { op, frame, n }),
    ]
}

/// The test's own view of the guest and of guest memory.
struct World<D: Driver> {
    d: D,
    runner: Runner,
    /// Window page → (gpa, perm).
    truth: BTreeMap<u64, (u64, Perm)>,
    big: bool,
    /// Pool frame → (discarded, private).
    frames: BTreeMap<u64, (bool, bool)>,
}

impl<D: Driver> World<D> {
    fn new(d: D) -> Self {
        let mut w = World {
            d,
            runner: Runner::new(),
            truth: BTreeMap::new(),
            big: false,
            frames: BTreeMap::new(),
        };
        let pre = w.d.preamble();
        w.run(&pre);
        w
    }

    fn run(&mut self, text: &str) {
        let stmts = parse::parse(text).unwrap_or_else(|e| panic!("{e:?} in\n{text}"));
        if let Err(f) = self.runner.run(&stmts) {
            panic!("line {}: {}\n{text}", f.line, f.msg);
        }
    }

    /// Lines that turn the large leaf back into the table with the same translation.
    fn expand_lines(&self) -> String {
        let mut s = String::new();
        for i in 0..self.d.pages() {
            s += &self.d.pte(i, self.truth.get(&i).copied());
        }
        s + &self.d.directory(false)
    }

    fn apply(&mut self, st: &Step) {
        let pages = self.d.pages();
        let pool = self.d.pool();
        let calls_before = self.runner.host_call_count(self.d.dev());
        let mut pure_switch = false;
        let text = match *st {
            Step::Map { at, n, frame, ro } => {
                let n = n.min(pages - at);
                let mut s = String::new();
                for i in 0..n {
                    let t = (
                        pool + ((frame + i) % pages) * PAGE,
                        if ro { Perm::READ } else { Perm::RW },
                    );
                    self.truth.insert(at + i, t);
                }
                if self.big {
                    // A live split with a change: the table gets every entry, then the
                    // directory entry points at it.
                    s += &self.expand_lines();
                    self.big = false;
                    s + &self.d.invalidate(0, pages)
                } else {
                    for i in 0..n {
                        s += &self.d.pte(at + i, self.truth.get(&(at + i)).copied());
                    }
                    s + &self.d.invalidate(at, n)
                }
            }
            Step::Unmap { at, n } => {
                let n = n.min(pages - at);
                for i in 0..n {
                    self.truth.remove(&(at + i));
                }
                let mut s = String::new();
                if self.big {
                    s += &self.expand_lines();
                    self.big = false;
                    s + &self.d.invalidate(0, pages)
                } else {
                    for i in 0..n {
                        s += &self.d.pte(at + i, None);
                    }
                    s + &self.d.invalidate(at, n)
                }
            }
            Step::Collapse => {
                let full: BTreeMap<u64, (u64, Perm)> = (0..pages)
                    .map(|i| (i, (pool + i * PAGE, Perm::RW)))
                    .collect();
                pure_switch = self.truth == full;
                self.truth = full;
                self.big = true;
                self.d.directory(true) + &self.d.invalidate(0, pages)
            }
            Step::Expand => {
                if !self.big {
                    return;
                }
                pure_switch = true;
                self.big = false;
                self.expand_lines() + &self.d.invalidate(0, pages)
            }
            Step::Event { op, frame, n } => {
                let n = n.min(pages - frame);
                for f in frame..frame + n {
                    let e = self.frames.entry(f).or_default();
                    match op {
                        "discard" => e.0 = true,
                        "populate" => e.0 = false,
                        "convert private" => e.1 = true,
                        "convert shared" => e.1 = false,
                        _ => {}
                    }
                }
                format!("{op} {:#x} {:#x}\n", pool + frame * PAGE, n * PAGE)
            }
        };
        self.run(&text);
        if pure_switch {
            assert_eq!(
                self.runner.host_call_count(self.d.dev()),
                calls_before,
                "a large-leaf switch with the same translation made host calls ({st:?})"
            );
        }
    }

    fn usable(&self, gpa: u64) -> bool {
        let f = (gpa - self.d.pool()) / PAGE;
        self.frames.get(&f).is_none_or(|&(d, p)| !d && !p)
    }

    fn check(&mut self, st: &Step) {
        let dev = self.d.dev();
        let base = self.d.iova_base();
        let mut host = BTreeMap::new();
        for m in self.runner.host_mappings(dev).expect("host attached") {
            for off in (0..m.size).step_by(PAGE as usize) {
                host.insert(m.iova + off, (m.gpa + off, m.perm));
            }
        }
        let want: BTreeMap<u64, (u64, Perm)> = self
            .truth
            .iter()
            .filter(|(_, (gpa, _))| self.usable(*gpa))
            .map(|(&i, &t)| (base + i * PAGE, t))
            .collect();
        assert_eq!(
            host, want,
            "host differs from the guest's usable translations after {st:?}"
        );
        // The VMM's reverse query agrees, frame by frame (a few of them).
        for f in [0, 1, 7, 100, self.d.pages() - 1] {
            let gpa = self.d.pool() + f * PAGE;
            let mapped = want.values().any(|&(g, _)| g == gpa);
            let got = self
                .runner
                .dma_mappings(AddrRange::from_len(gpa, PAGE))
                .expect("query");
            assert_eq!(
                !got.is_empty(),
                mapped,
                "reverse query for {gpa:#x} after {st:?}"
            );
        }
    }

    fn finish(mut self) {
        let left = self.runner.detach_host(self.d.dev()).expect("detach");
        assert_eq!(left, 0, "host mappings leaked at teardown");
    }
}

fn run_model<D: Driver>(d: D, steps: &[Step]) {
    let mut w = World::new(d);
    w.check(&Step::Expand);
    for s in steps {
        w.apply(s);
        w.check(s);
    }
    w.finish();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn vtd_host_follows_guest_and_memory_events(steps in prop::collection::vec(step(512), 1..30)) {
        run_model(Vtd { tail: 0, waits: 0 }, &steps);
    }

    #[test]
    fn amd_vi_host_follows_guest_and_memory_events(steps in prop::collection::vec(step(512), 1..30)) {
        run_model(AmdVi { tail: 0, waits: 0 }, &steps);
    }

    #[test]
    fn zpci_host_follows_guest_and_memory_events(steps in prop::collection::vec(step(256), 1..30)) {
        run_model(Zpci, &steps);
    }
}
