//! Event log entries (16 bytes, spec §2.5): the events this model raises.
//!
//! Layout: DeviceID 15:0, PASID 19:16, DomainID (or PASID 15:0) 47:32, flags 59:48, event
//! code 63:60, address 127:64. Flag positions are the spec's (Linux `EVENT_FLAG_RW` 0x020,
//! `EVENT_FLAG_I` 0x008). QEMU puts the access kind in flag bits 1:0, sets I on every fault
//! and reports only the devfn as DeviceID (anchors-x86 §2.6, §5 item 4); here the full
//! DeviceID, the DomainID and the spec's PR/RW/PE/RZ bits are reported, and I is set only for
//! interrupt requests (interrupt remapping faults). QEMU logs no interrupt-remapping event at
//! all (anchors-x86 §2.6).

use bitflags::bitflags;

bitflags! {
    /// The 12-bit flags field of an event.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct EventFlags: u16 {
        /// GN: the request carried a PASID (guest translation).
        const GN = 1 << 0;
        /// NX: execute permission was requested.
        const NX = 1 << 1;
        /// US: user (vs supervisor) request.
        const US = 1 << 2;
        /// I: the request was an interrupt, not a memory access.
        const I = 1 << 3;
        /// PR: the page was present (the fault is a permission or reserved-bit fault).
        const PR = 1 << 4;
        /// RW: the access was a write.
        const RW = 1 << 5;
        /// PE: permission error.
        const PE = 1 << 6;
        /// RZ: a reserved bit was set in a table entry (or the device table entry).
        const RZ = 1 << 7;
        /// TR: a translation request (ATS).
        const TR = 1 << 8;
        /// Type = 01b (master abort) of a hardware-error event: the memory access found
        /// nothing (outside guest RAM).
        const MASTER_ABORT = 1 << 9;
        /// Type = 10b (target abort) of a hardware-error event.
        const TARGET_ABORT = 1 << 10;
    }
}

impl EventFlags {
    /// The Type field (flag bits 11:9, event bits 59:57) of an INVALID_DEVICE_REQUEST event.
    pub fn request_type(t: InvalidRequest) -> EventFlags {
        EventFlags::from_bits_retain((t as u16) << 9)
    }
}

/// INVALID_DEVICE_REQUEST types this model raises (spec §2.5.9; type 101b is what Linux
/// prints as `flags=0x0a00` for an interrupt from a device whose DTE has IntCtl = 00b).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InvalidRequest {
    /// 000b: a read (or non-posted write) in the interrupt address range.
    InterruptRangeRead = 0,
    /// 101b: a posted write to the interrupt range from a device whose IntCtl is 00b.
    InterruptAborted = 5,
}

/// Event codes (bits 63:60).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EventCode {
    /// The device table entry is malformed or the DeviceID is beyond the table.
    IllegalDevTableEntry = 0x1,
    /// A DMA found no translation or not enough permission.
    IoPageFault = 0x2,
    /// The device table entry could not be read.
    DevTabHardwareError = 0x3,
    /// A page-table entry could not be read.
    PageTabHardwareError = 0x4,
    /// A command is illegal (unknown opcode, unsupported feature, reserved bits).
    IllegalCommand = 0x5,
    /// A command (or its completion store) could not be accessed.
    CommandHardwareError = 0x6,
    /// A device made a request it may not make (e.g. an interrupt while its DTE's IntCtl is
    /// 00b, a read of the interrupt range); the type is in flag bits 11:9
    /// ([`EventFlags::request_type`]).
    InvalidDeviceRequest = 0x8,
}

impl EventCode {
    /// The code for a raw value.
    pub fn from_raw(v: u8) -> Option<EventCode> {
        Some(match v {
            0x1 => EventCode::IllegalDevTableEntry,
            0x2 => EventCode::IoPageFault,
            0x3 => EventCode::DevTabHardwareError,
            0x4 => EventCode::PageTabHardwareError,
            0x5 => EventCode::IllegalCommand,
            0x6 => EventCode::CommandHardwareError,
            0x8 => EventCode::InvalidDeviceRequest,
            _ => return None,
        })
    }
}

/// One event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Event {
    /// Event code.
    pub code: EventCode,
    /// DeviceID of the request (0 for command events).
    pub device_id: u16,
    /// DomainID (IO_PAGE_FAULT, PAGE_TAB_HARDWARE_ERROR), else 0.
    pub domain_id: u16,
    /// Flags.
    pub flags: EventFlags,
    /// IOVA of the request (IO_PAGE_FAULT, ILLEGAL_DEV_TABLE_ENTRY); guest-physical address of
    /// the device table entry, page-table entry or command for the hardware-error and
    /// illegal-command events.
    pub address: u64,
}

impl Event {
    /// The 16-byte entry as two quadwords (stored little-endian).
    pub fn encode(&self) -> [u64; 2] {
        let q0 = u64::from(self.device_id)
            | (u64::from(self.domain_id) << 32)
            | (u64::from(self.flags.bits() & 0xfff) << 48)
            | (u64::from(self.code as u8) << 60);
        [q0, self.address]
    }

    /// Decodes an entry; `None` for codes this model never writes (or an empty entry).
    pub fn decode(raw: [u64; 2]) -> Option<Event> {
        Some(Event {
            code: EventCode::from_raw((raw[0] >> 60) as u8)?,
            device_id: raw[0] as u16,
            domain_id: (raw[0] >> 32) as u16,
            flags: EventFlags::from_bits_retain(((raw[0] >> 48) & 0xfff) as u16),
            address: raw[1],
        })
    }
}

/// What became of an event the model raised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventOutcome {
    /// Written to the guest's event log.
    Logged,
    /// Not written: the log is full (EventOverflow set now or already).
    Overflow,
    /// Not written: event logging is not running (IommuEn or EventLogEn clear, or stopped
    /// by an earlier overflow until the guest re-enables it).
    NotRunning,
    /// Not written: the log's memory is outside guest RAM.
    WriteFailed,
    /// Not raised: the device table entry suppresses I/O page faults (SA).
    Suppressed,
}

/// An event with what became of it (see [`AmdVi::recent_events`](crate::AmdVi::recent_events)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventRecord {
    /// The event.
    pub event: Event,
    /// Its fate.
    pub outcome: EventOutcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_matches_linux_decoding() {
        let e = Event {
            code: EventCode::IoPageFault,
            device_id: 0x0118,
            domain_id: 0x2a,
            flags: EventFlags::PR | EventFlags::RW | EventFlags::PE,
            address: 0xdead_b000,
        };
        let [q0, q1] = e.encode();
        // Linux iommu_print_event: type = (event[1] >> 28) & 0xf, devid = event[0] & 0xffff,
        // flags = (event[1] >> 16) & 0xfff, domid = event[1] & 0xffff (32-bit words).
        let ev = [q0 as u32, (q0 >> 32) as u32];
        assert_eq!((ev[1] >> 28) & 0xf, 2);
        assert_eq!(ev[0] & 0xffff, 0x0118);
        assert_eq!((ev[1] >> 16) & 0xfff, 0x070);
        assert_eq!(ev[1] & 0xffff, 0x2a);
        assert_eq!(q1, 0xdead_b000);
        assert_eq!(Event::decode([q0, q1]), Some(e));
        assert_eq!(Event::decode([0, 0]), None);
        assert_eq!(EventCode::from_raw(7), None);
        let ev = Event {
            code: EventCode::InvalidDeviceRequest,
            device_id: 0,
            domain_id: 0,
            flags: EventFlags::request_type(InvalidRequest::InterruptAborted),
            address: 0xfee0_0000,
        };
        assert_eq!((ev.encode()[0] >> 48) & 0xfff, 0xa00);
        assert_eq!(Event::decode(ev.encode()), Some(ev));
    }
}
