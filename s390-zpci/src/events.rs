//! Error events the model raises (A.11) and the queue the VMM drains.
//!
//! The VMM presents each event to the guest as a CHSC store-event-information error CCDF
//! (notification type 2, cc 1) and signals it with a channel report; how it does so is its
//! business. The model queues events and rings a doorbell on the model's
//! [`MsiSink`]: one [`Msi`] with address
//! [`EVENT_DOORBELL_ADDRESS`] and the function id as data per event. zPCI functions raise no
//! other MSI through the model (adapter interrupts are routed by the VMM, using the
//! registration reported by [`FunctionInfo::interrupts`](crate::FunctionInfo::interrupts)).

use std::collections::VecDeque;

use crate::codes::Pec;
use crate::handle::{Fh, Fid};
use viommu_shared::regs::{Msi, MsiSink};

/// Address of the doorbell MSI sent for each queued event.
pub const EVENT_DOORBELL_ADDRESS: u64 = 0x7a70_6369_0000_0000;

/// Most events kept; older ones are dropped (and counted) beyond it.
pub const EVENT_QUEUE_CAPACITY: usize = 1024;

/// One error event (error CCDF contents).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ErrorEvent {
    /// Function id.
    pub fid: Fid,
    /// Function handle at the time of the event.
    pub fh: Fh,
    /// Event code.
    pub pec: Pec,
    /// Failing address (the DMA or RPCIT address, or the FMB address).
    pub faddr: u64,
}

/// The bounded event queue.
#[derive(Debug, Default)]
pub(crate) struct EventQueue {
    events: VecDeque<ErrorEvent>,
    dropped: u64,
}

impl EventQueue {
    /// Queues `e` and rings the doorbell.
    pub fn push(&mut self, e: ErrorEvent, doorbell: &dyn MsiSink) {
        if self.events.len() >= EVENT_QUEUE_CAPACITY {
            self.events.pop_front();
            self.dropped += 1;
        }
        self.events.push_back(e);
        doorbell.send(Msi {
            address: EVENT_DOORBELL_ADDRESS,
            data: e.fid.0,
        });
    }

    /// The queued events, oldest first, and the drop count, for a snapshot.
    pub fn saved(&self) -> (Vec<ErrorEvent>, u64) {
        (self.events.iter().copied().collect(), self.dropped)
    }

    /// Replaces the queue with `events` (at most [`EVENT_QUEUE_CAPACITY`] are kept) and
    /// the drop count; rings the doorbell once per event, so the VMM drains them.
    pub fn restore(
        &mut self,
        events: impl Iterator<Item = ErrorEvent>,
        dropped: u64,
        doorbell: &dyn MsiSink,
    ) {
        self.events.clear();
        self.dropped = dropped;
        for e in events.take(EVENT_QUEUE_CAPACITY) {
            self.push(e, doorbell);
        }
    }

    /// Removes and returns every queued event, oldest first.
    pub fn take(&mut self) -> Vec<ErrorEvent> {
        self.events.drain(..).collect()
    }

    /// Events dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Events queued.
    pub fn len(&self) -> usize {
        self.events.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_shared::regs::RecordingMsiSink;

    #[test]
    fn bounded_and_rings() {
        let sink = RecordingMsiSink::new();
        let mut q = EventQueue::default();
        let e = |i: u32| ErrorEvent {
            fid: Fid(i),
            fh: Fh(i),
            pec: Pec::OUT_OF_RANGE,
            faddr: 0,
        };
        for i in 0..(EVENT_QUEUE_CAPACITY as u32 + 3) {
            q.push(e(i), &sink);
        }
        assert_eq!(q.len(), EVENT_QUEUE_CAPACITY);
        assert_eq!(q.dropped(), 3);
        let all = q.take();
        assert_eq!(all[0].fid, Fid(3));
        assert_eq!(sink.len(), EVENT_QUEUE_CAPACITY + 3);
        assert_eq!(sink.take()[5].data, 5);
    }
}
