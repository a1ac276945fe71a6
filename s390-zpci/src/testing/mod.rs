//! Guest-side helpers for tests, scenarios, fuzzing and demos: Linux-like DMA tables
//! ([`ZpciTables`]), a memory-backed PCI function ([`MemFunction`]) and a guest CPU that
//! issues zPCI instructions ([`GuestCpu`]). The model itself never uses them.

mod device;
mod guest;
mod tables;

pub use device::{MemFunction, MemFunctionState};
pub use guest::{ClpError, GuestCpu, ListEntry, QueryFunction, QueryGroup, SCRATCH_LEN};
pub use tables::{TableError, ZpciTables};
