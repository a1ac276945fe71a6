//! Writing events into the guest's event log ring (spec §2.5, §3.4.4, §3.4.11).
//!
//! An event is written at the tail, then the tail advances and Status.EventLogInt is set.
//! The ring holds at most `entries - 1` events: when the tail would catch up with the head,
//! the event is dropped, Status.EventOverflow is set and logging stops (EventLogRun = 0)
//! until the guest clears EventLogEn and sets it again, which is how Linux restarts it
//! (`amd_iommu_restart_log`). Interrupts go out on logged events and on overflow when
//! Control.EventIntEn is set.

use crate::event::{Event, EventOutcome};
use crate::regs::{Ring, control, offset, status};
use std::sync::atomic::Ordering;
use viommu_shared::regs::RegisterFile;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// What appending did: the event's fate and whether to send the IOMMU's interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The event's fate.
    pub outcome: EventOutcome,
    /// Send the IOMMU's MSI.
    pub interrupt: bool,
}

/// Appends `event` to the log described by `regs`.
pub fn append(regs: &mut RegisterFile, mem: &GuestMemoryMmap, event: &Event) -> Appended {
    let get = |off| regs.get_at(off).unwrap_or(0);
    let st = get(offset::STATUS);
    let int_en = get(offset::CONTROL) & control::EVENT_INT_EN != 0;
    let dropped = |outcome| Appended {
        outcome,
        interrupt: false,
    };
    if st & status::EVENT_LOG_RUN == 0 {
        return dropped(EventOutcome::NotRunning);
    }
    if st & status::EVENT_OVERFLOW != 0 {
        return dropped(EventOutcome::Overflow);
    }
    let ring = Ring::from_base_register(get(offset::EVT_LOG_BASE));
    let head = ring.offset(get(offset::EVT_HEAD));
    let tail = ring.offset(get(offset::EVT_TAIL));
    let next = ring.next(tail);
    if next == head {
        regs.update_at(
            offset::STATUS,
            status::EVENT_OVERFLOW | status::EVENT_LOG_RUN,
            status::EVENT_OVERFLOW,
        );
        return Appended {
            outcome: EventOutcome::Overflow,
            interrupt: int_en,
        };
    }
    let [q0, q1] = event.encode();
    let at = ring.base.wrapping_add(tail);
    // The address quadword first and the code-bearing quadword last, so a guest polling the
    // entry (Linux retries entries whose code is still 0, erratum 732) sees it complete.
    let written = mem
        .store(
            q1.to_le(),
            GuestAddress(at.wrapping_add(8)),
            Ordering::Release,
        )
        .and_then(|()| mem.store(q0.to_le(), GuestAddress(at), Ordering::Release));
    if written.is_err() {
        return dropped(EventOutcome::WriteFailed);
    }
    regs.set_at(offset::EVT_TAIL, next);
    regs.update_at(offset::STATUS, status::EVENT_LOG_INT, status::EVENT_LOG_INT);
    Appended {
        outcome: EventOutcome::Logged,
        interrupt: int_en,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventCode, EventFlags};
    use crate::regs::{LEN_SHIFT, REGISTERS};
    use viommu_shared::testing::guest_memory;

    fn ev(n: u64) -> Event {
        Event {
            code: EventCode::IoPageFault,
            device_id: 1,
            domain_id: 2,
            flags: EventFlags::RW,
            address: n << 12,
        }
    }

    #[test]
    fn wraps_and_overflows() {
        let mem = guest_memory(&[(0, 0x10_0000)]);
        let mut regs = RegisterFile::new(REGISTERS).unwrap();
        assert_eq!(
            append(&mut regs, &mem, &ev(0)).outcome,
            EventOutcome::NotRunning
        );
        regs.set_at(offset::EVT_LOG_BASE, 0x8000 | (8 << LEN_SHIFT)); // 256 entries
        regs.set_at(offset::CONTROL, control::EVENT_INT_EN);
        regs.set_at(offset::STATUS, status::EVENT_LOG_RUN);
        // Start near the end so the tail wraps.
        regs.set_at(offset::EVT_HEAD, 0xfe0);
        regs.set_at(offset::EVT_TAIL, 0xfe0);
        for n in 0..255 {
            let a = append(&mut regs, &mem, &ev(n));
            assert_eq!(
                a,
                Appended {
                    outcome: EventOutcome::Logged,
                    interrupt: true
                },
                "{n}"
            );
        }
        assert_eq!(regs.get_at(offset::EVT_TAIL), Some(0xfd0));
        let first: u64 = mem.read_obj(GuestAddress(0x8fe0 + 8)).unwrap();
        let wrapped: u64 = mem.read_obj(GuestAddress(0x8000 + 8)).unwrap();
        assert_eq!((first, wrapped), (0, 2 << 12));
        // Full: the 256th is dropped with an overflow and logging stops.
        let a = append(&mut regs, &mem, &ev(255));
        assert_eq!(
            a,
            Appended {
                outcome: EventOutcome::Overflow,
                interrupt: true
            }
        );
        let st = regs.get_at(offset::STATUS).unwrap();
        assert_eq!(
            st & (status::EVENT_OVERFLOW | status::EVENT_LOG_RUN),
            status::EVENT_OVERFLOW
        );
        assert_eq!(
            append(&mut regs, &mem, &ev(256)).outcome,
            EventOutcome::NotRunning
        );
        // Log outside RAM.
        regs.set_at(offset::STATUS, status::EVENT_LOG_RUN);
        regs.set_at(offset::EVT_LOG_BASE, 0x4000_0000);
        regs.set_at(offset::EVT_HEAD, 0);
        regs.set_at(offset::EVT_TAIL, 0);
        assert_eq!(
            append(&mut regs, &mem, &ev(0)).outcome,
            EventOutcome::WriteFailed
        );
    }
}
