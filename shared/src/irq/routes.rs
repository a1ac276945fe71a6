//! [`RouteTable`]: a VMM's resolved MSI routes, kept current by the model's invalidation
//! notifications.
//!
//! A VMM that programs KVM MSI routes (irqfd) for passthrough or emulated devices resolves
//! each route once through the model ([`RemapMode::Route`], so no fault is recorded) and
//! programs the result. When the guest invalidates interrupt-remapping entries, the table
//! re-resolves exactly the routes the invalidation affects and hands them back from
//! [`RouteTable::take_updates`]; the VMM reprograms those and nothing else.

use super::remapper::{
    InterruptRemapper, IrFault, IrInvalidation, IrListener, RemapMode, Resolution,
};
use crate::regs::Msi;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// The VMM's name for a route (e.g. a KVM GSI).
pub type RouteId = u32;

/// A route whose resolution may have changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteUpdate {
    /// The route.
    pub id: RouteId,
    /// Its new resolution (a fault means: mask the route, the guest blocked it).
    pub result: Result<Resolution, IrFault>,
    /// Whether the result differs from the previous one.
    pub changed: bool,
}

#[derive(Clone, Copy, Debug)]
struct Route {
    source: u16,
    msi: Msi,
    result: Result<Resolution, IrFault>,
}

impl Route {
    fn index(&self) -> Option<u32> {
        match self.result {
            Ok(r) => r.index,
            Err(f) => f.index,
        }
    }
}

#[derive(Default)]
struct State {
    routes: BTreeMap<RouteId, Route>,
    /// Invalidations received since the last `take_updates`; collapsed to `All` when many.
    pending: Vec<IrInvalidation>,
}

/// Most distinct pending invalidations kept before they collapse into one
/// [`IrInvalidation::All`] (a guest flooding invalidations cannot grow the list).
const MAX_PENDING: usize = 256;

/// A VMM's MSI routes resolved through one [`InterruptRemapper`].
pub struct RouteTable {
    remapper: Arc<dyn InterruptRemapper>,
    state: Mutex<State>,
    notify: Option<Box<dyn Fn() + Send + Sync>>,
}

struct Listener(Weak<RouteTable>);

impl IrListener for Listener {
    fn invalidated(&self, what: IrInvalidation) {
        if let Some(table) = self.0.upgrade() {
            table.record(what);
        }
    }
}

impl RouteTable {
    /// A table over `remapper`, registered as its listener. `notify` (if any) is called
    /// when an invalidation leaves updates pending, e.g. to wake the VMM thread that owns
    /// the KVM routing table; it must not call back into the model.
    pub fn new(
        remapper: Arc<dyn InterruptRemapper>,
        notify: Option<Box<dyn Fn() + Send + Sync>>,
    ) -> Arc<Self> {
        let table = Arc::new(RouteTable {
            remapper: remapper.clone(),
            state: Mutex::new(State::default()),
            notify,
        });
        remapper.add_listener(Arc::new(Listener(Arc::downgrade(&table))));
        table
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn record(&self, what: IrInvalidation) {
        {
            let mut st = self.lock();
            if st.pending.contains(&what) || st.pending.contains(&IrInvalidation::All) {
                return;
            }
            if what == IrInvalidation::All || st.pending.len() >= MAX_PENDING {
                st.pending.clear();
                st.pending.push(IrInvalidation::All);
            } else {
                st.pending.push(what);
            }
        }
        if let Some(notify) = &self.notify {
            notify();
        }
    }

    /// Adds or replaces route `id` (interrupts from `source` with message `msi`) and
    /// returns its resolution. Nothing is recorded guest-visibly.
    pub fn set(&self, id: RouteId, source: u16, msi: Msi) -> Result<Resolution, IrFault> {
        let result = self.remapper.remap(source, msi, RemapMode::Route);
        self.lock().routes.insert(
            id,
            Route {
                source,
                msi,
                result,
            },
        );
        result
    }

    /// Removes route `id`; returns whether it existed.
    pub fn remove(&self, id: RouteId) -> bool {
        self.lock().routes.remove(&id).is_some()
    }

    /// The current resolution of route `id`.
    pub fn get(&self, id: RouteId) -> Option<Result<Resolution, IrFault>> {
        self.lock().routes.get(&id).map(|r| r.result)
    }

    /// Every route as set: (id, source, MSI), in route order. A VMM moving its routes to
    /// another table (e.g. onto the model restored on a migration destination) sets these
    /// there.
    pub fn routes(&self) -> Vec<(RouteId, u16, Msi)> {
        self.lock()
            .routes
            .iter()
            .map(|(&id, r)| (id, r.source, r.msi))
            .collect()
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.lock().routes.len()
    }

    /// Whether there are no routes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether invalidations arrived since the last [`take_updates`](Self::take_updates).
    pub fn has_pending(&self) -> bool {
        !self.lock().pending.is_empty()
    }

    /// Re-resolves every route affected by the invalidations received since the last call
    /// and returns them in route order (unaffected routes are neither resolved nor
    /// returned).
    pub fn take_updates(&self) -> Vec<RouteUpdate> {
        let (pending, affected): (Vec<IrInvalidation>, Vec<(RouteId, Route)>) = {
            let mut st = self.lock();
            let pending = std::mem::take(&mut st.pending);
            let affected = st
                .routes
                .iter()
                .filter(|(_, r)| pending.iter().any(|p| p.affects(r.source, r.index())))
                .map(|(&id, &r)| (id, r))
                .collect();
            (pending, affected)
        };
        if pending.is_empty() {
            return Vec::new();
        }
        // Resolve without holding the lock: the model may notify again meanwhile, which
        // only queues another (harmless) pass.
        let resolved: Vec<(RouteId, Route)> = affected
            .into_iter()
            .map(|(id, r)| {
                let result = self.remapper.remap(r.source, r.msi, RemapMode::Route);
                (id, Route { result, ..r })
            })
            .collect();
        let mut st = self.lock();
        let mut updates = Vec::with_capacity(resolved.len());
        for (id, new) in resolved {
            // Skip routes removed or replaced meanwhile.
            let Some(cur) = st.routes.get_mut(&id) else {
                continue;
            };
            if cur.source != new.source || cur.msi != new.msi {
                continue;
            }
            let changed = cur.result != new.result;
            cur.result = new.result;
            updates.push(RouteUpdate {
                id,
                result: new.result,
                changed,
            });
        }
        updates
    }
}

#[cfg(test)]
mod tests {
    use super::super::interrupt::{DeliveryMode, DestinationMode, Interrupt, TriggerMode};
    use super::super::remapper::IrFaultKind;
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A one-table remapper: entry i holds vector `vectors[i]`, 0 = not present.
    #[derive(Default)]
    struct Fake {
        vectors: Mutex<Vec<u8>>,
        listeners: Mutex<Vec<Arc<dyn IrListener>>>,
        calls: AtomicUsize,
    }

    impl Fake {
        fn set(&self, i: usize, v: u8, inv: IrInvalidation) {
            self.vectors.lock().unwrap()[i] = v;
            for l in self.listeners.lock().unwrap().iter() {
                l.invalidated(inv);
            }
        }
    }

    impl InterruptRemapper for Fake {
        fn remap(&self, source: u16, msi: Msi, mode: RemapMode) -> Result<Resolution, IrFault> {
            assert_eq!(mode, RemapMode::Route);
            self.calls.fetch_add(1, Ordering::SeqCst);
            let i = msi.data;
            let v = self.vectors.lock().unwrap().get(i as usize).copied();
            match v {
                Some(v) if v != 0 => Ok(Resolution {
                    interrupt: Interrupt {
                        destination: u32::from(source),
                        vector: v,
                        delivery: DeliveryMode::Fixed,
                        destination_mode: DestinationMode::Physical,
                        trigger: TriggerMode::Edge,
                        redirection_hint: false,
                    },
                    index: Some(i),
                }),
                _ => Err(IrFault {
                    kind: IrFaultKind::NotPresent,
                    code: 0x22,
                    index: Some(i),
                    recorded: false,
                }),
            }
        }

        fn add_listener(&self, listener: Arc<dyn IrListener>) {
            self.listeners.lock().unwrap().push(listener);
        }
    }

    fn msi(i: u32) -> Msi {
        Msi {
            address: 0xfee0_0010,
            data: i,
        }
    }

    #[test]
    fn only_affected_routes_are_re_resolved() {
        let fake = Arc::new(Fake {
            vectors: Mutex::new(vec![0x20, 0x21, 0x22, 0x23]),
            ..Fake::default()
        });
        let notified = Arc::new(AtomicUsize::new(0));
        let n = notified.clone();
        let table = RouteTable::new(
            fake.clone(),
            Some(Box::new(move || {
                n.fetch_add(1, Ordering::SeqCst);
            })),
        );
        for i in 0..4 {
            assert_eq!(
                table.set(i, 7, msi(i)).unwrap().interrupt.vector,
                0x20 + i as u8
            );
        }
        assert_eq!(fake.calls.load(Ordering::SeqCst), 4);
        assert!(table.take_updates().is_empty());

        fake.set(2, 0x42, IrInvalidation::Indices { first: 2, count: 1 });
        assert_eq!(notified.load(Ordering::SeqCst), 1);
        let up = table.take_updates();
        assert_eq!(up.len(), 1);
        assert_eq!((up[0].id, up[0].changed), (2, true));
        assert_eq!(up[0].result.unwrap().interrupt.vector, 0x42);
        assert_eq!(fake.calls.load(Ordering::SeqCst), 5);

        // Clearing an entry turns the route into a fault (the VMM masks it); a source
        // invalidation for another requester touches nothing.
        fake.set(1, 0, IrInvalidation::Indices { first: 0, count: 2 });
        fake.set(3, 0x55, IrInvalidation::Source(9));
        let up = table.take_updates();
        assert_eq!(
            up.iter().map(|u| (u.id, u.changed)).collect::<Vec<_>>(),
            [(0, false), (1, true)]
        );
        assert_eq!(up[1].result.unwrap_err().kind, IrFaultKind::NotPresent);
        assert_eq!(table.get(3).unwrap().unwrap().interrupt.vector, 0x23);

        fake.set(3, 0x56, IrInvalidation::All);
        let up = table.take_updates();
        assert_eq!(up.len(), 4);
        assert_eq!(table.get(3).unwrap().unwrap().interrupt.vector, 0x56);
        assert!(table.remove(3) && !table.remove(3));
        assert_eq!(table.len(), 3);
        assert_eq!(
            table.routes(),
            [(0, 7, msi(0)), (1, 7, msi(1)), (2, 7, msi(2))]
        );
    }

    #[test]
    fn invalidation_flood_collapses_and_dropped_table_is_not_called() {
        let fake = Arc::new(Fake {
            vectors: Mutex::new(vec![0x20; 1024]),
            ..Fake::default()
        });
        let table = RouteTable::new(fake.clone(), None);
        table.set(5, 1, msi(5)).unwrap();
        for i in 0..1000 {
            fake.set(
                i,
                0x30,
                IrInvalidation::Indices {
                    first: i as u32,
                    count: 1,
                },
            );
        }
        assert_eq!(table.lock().pending, [IrInvalidation::All]);
        let up = table.take_updates();
        assert_eq!(up.len(), 1);
        assert_eq!(up[0].result.unwrap().interrupt.vector, 0x30);
        drop(table);
        // The listener outlives the table and does nothing.
        fake.set(0, 0x31, IrInvalidation::All);
    }
}
