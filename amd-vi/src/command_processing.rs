//! Command processing (spec §2.4), synchronous on the register write that allows it.
//!
//! Commands run in order from the head while CmdBufRun is set and head ≠ tail; the head
//! register advances past each one after it completed, so when the tail write returns every
//! queued invalidation is done: emulated-DMA caches are flushed (a barrier: the registry
//! waits for in-flight accesses) and passthrough devices' host mappings are updated. At most
//! one ring's worth of commands runs per call, so a call is bounded.
//!
//! An illegal command or an unreadable one stops processing with the head on it, logs
//! ILLEGAL_COMMAND_ERROR / COMMAND_HARDWARE_ERROR with its address and clears CmdBufRun; the
//! guest restarts by clearing and setting CmdBufEn (spec §2.4; QEMU executes on, anchors-x86
//! §2.5, AMD-09).

use crate::command::{Command, invalidation_range};
use crate::dte::DeviceMode;
use crate::error::AmdViError;
use crate::event::{Event, EventCode, EventFlags};
use crate::regs::{Ring, control, offset, status};
use crate::shadow::FirstError;
use crate::shared_state::{Exec, Inner, lock};
use crate::stats;
use std::sync::atomic::Ordering;
use viommu_shared::irq::IrInvalidation;
use vm_memory::{Bytes, GuestAddress};

/// What executing a command asks of the processor.
enum Next {
    /// Advance the head and go on.
    Continue,
    /// Stop with the head on this command (hardware error already logged).
    Halt,
}

impl Inner {
    /// Runs every command between head and tail (if processing is enabled). Returns the
    /// first host error met; every command still runs.
    pub fn process_commands(&self, exec: &mut Exec) -> Result<(), AmdViError> {
        let mut errors = FirstError::default();
        let mut budget = None;
        loop {
            let fetched = {
                let r = lock(&self.regs);
                if r.get(offset::STATUS) & status::CMD_BUF_RUN == 0 {
                    break;
                }
                let ring = Ring::from_base_register(r.get(offset::CMD_BUF_BASE));
                let head = ring.offset(r.get(offset::CMD_HEAD));
                let tail = ring.offset(r.get(offset::CMD_TAIL));
                if head == tail {
                    break;
                }
                let left = budget.get_or_insert(ring.entries());
                if *left == 0 {
                    break;
                }
                *left -= 1;
                (ring, head)
            };
            let (ring, head) = fetched;
            let at = ring.base.wrapping_add(head);
            let raw = self.read_command(at);
            let next = match raw {
                None => self.command_error(EventCode::CommandHardwareError, at),
                Some(raw) => match Command::decode(raw, self.efr) {
                    Err(_) => self.command_error(EventCode::IllegalCommand, at),
                    Ok(cmd) => {
                        stats::add(&self.stats.commands, 1);
                        self.execute(exec, cmd, at, &mut errors)
                    }
                },
            };
            match next {
                Next::Halt => break,
                Next::Continue => lock(&self.regs).set(offset::CMD_HEAD, ring.next(head)),
            }
        }
        self.flush_irq_notifications(exec);
        errors.into_result()
    }

    fn read_command(&self, at: u64) -> Option<[u64; 2]> {
        let lo: u64 = self.mem.read_obj(GuestAddress(at)).ok()?;
        let hi: u64 = self.mem.read_obj(GuestAddress(at.wrapping_add(8))).ok()?;
        Some([u64::from_le(lo), u64::from_le(hi)])
    }

    /// Logs a command error event for the command at `at` and stops processing.
    fn command_error(&self, code: EventCode, at: u64) -> Next {
        let counter = if code == EventCode::IllegalCommand {
            &self.stats.illegal_commands
        } else {
            &self.stats.command_hardware_errors
        };
        stats::add(counter, 1);
        lock(&self.regs).halt_commands();
        let flags = if code == EventCode::CommandHardwareError {
            EventFlags::MASTER_ABORT
        } else {
            EventFlags::empty()
        };
        self.raise(
            Event {
                code,
                device_id: 0,
                domain_id: 0,
                flags,
                address: at,
            },
            false,
        );
        Next::Halt
    }

    fn execute(&self, exec: &mut Exec, cmd: Command, at: u64, errors: &mut FirstError) -> Next {
        match cmd {
            Command::CompletionWait {
                store,
                interrupt,
                address,
                data,
                ..
            } => {
                // Every earlier command has completed (they ran synchronously), so the fence
                // holds and the store may be made visible now, once the VMM has been told
                // which interrupt routes the earlier commands made stale.
                self.flush_irq_notifications(exec);
                if store
                    && self
                        .mem
                        .store(data.to_le(), GuestAddress(address), Ordering::Release)
                        .is_err()
                {
                    return self.command_error(EventCode::CommandHardwareError, at);
                }
                // I: Status.ComWaitInt always; the MSI only with Control.ComWaitIntEn (spec
                // §3.4.3). QEMU interrupts regardless of ComWaitIntEn (anchors-x86 AMD-07).
                if interrupt {
                    let msi = {
                        let mut r = lock(&self.regs);
                        r.set_status(status::COM_WAIT_INT);
                        let en = r.get(offset::CONTROL) & control::COM_WAIT_INT_EN != 0;
                        r.interrupt(en)
                    };
                    self.send(msi);
                }
            }
            Command::InvalidateDevtabEntry { device_id } => {
                for r in self.requesters_of(device_id) {
                    self.iotlb.invalidate_device(u32::from(r));
                    // IV, IntCtl and the table pointer live in the DTE.
                    self.queue_irq_invalidation(exec, IrInvalidation::Source(r));
                }
                errors.keep(self.reload_entries(exec, Some(device_id), false));
            }
            Command::InvalidateIommuPages {
                domain_id,
                size,
                gn,
                address,
                ..
            } => {
                // GN = 1 targets guest (PASID) tables, which this model does not implement
                // (GTSup = 0): host translations are untouched.
                if !gn {
                    let range = invalidation_range(address, size);
                    self.iotlb.invalidate_range(u64::from(domain_id), range);
                    let rids: Vec<u16> = exec
                        .shadows
                        .iter()
                        .filter(|(_, shadow)| {
                            shadow.mode.domain_id() == Some(domain_id)
                                && matches!(shadow.mode, DeviceMode::Translated { .. })
                        })
                        .map(|(&rid, _)| rid)
                        .collect();
                    for rid in rids {
                        errors.keep(self.sync_device(&mut exec.shadows, rid, range));
                    }
                }
            }
            Command::InvalidateIotlbPages { device_id, .. } => {
                // A remote (ATS) IOTLB: emulated devices' caches play that role.
                for r in self.requesters_of(device_id) {
                    self.iotlb.invalidate_device(u32::from(r));
                }
            }
            Command::InvalidateInterruptTable { device_id } => {
                // Entries are read on every request (nothing is cached), so the command is
                // complete once the VMM's routes through this table are marked stale: those
                // of every requester using this DeviceID's entry (QEMU invalidates all).
                for r in self.requesters_of(device_id) {
                    self.queue_irq_invalidation(exec, IrInvalidation::Source(r));
                }
            }
            Command::InvalidateIommuAll => {
                self.queue_irq_invalidation(exec, IrInvalidation::All);
                self.iotlb.invalidate_all();
                errors.keep(self.reload_entries(exec, None, true));
            }
            // No prefetching or PPR is modelled: nothing is cached.
            Command::PrefetchIommuPages { .. } | Command::CompletePprRequest { .. } => {}
        }
        Next::Continue
    }

    /// Reloads the entries of the passthrough devices governed by `device_id` (all if
    /// `None`) and re-syncs those whose mode changed (all of them if `always`).
    pub fn reload_entries(
        &self,
        exec: &mut Exec,
        device_id: Option<u16>,
        always: bool,
    ) -> Result<(), AmdViError> {
        let snap = self.snapshot();
        let mut errors = FirstError::default();
        let rids: Vec<u16> = exec.shadows.keys().copied().collect();
        for rid in rids {
            let entry = self.alias_of(rid);
            if device_id.is_some_and(|d| d != entry) {
                continue;
            }
            let mode = self.resolve(entry, &snap);
            errors.keep(self.retarget(&mut exec.shadows, rid, mode, always));
        }
        errors.into_result()
    }

    /// IommuEn changed: every device's DMA mode may have changed.
    pub fn iommu_toggled(&self, exec: &mut Exec) -> Result<(), AmdViError> {
        self.iotlb.invalidate_all();
        self.reload_entries(exec, None, false)
    }
}
