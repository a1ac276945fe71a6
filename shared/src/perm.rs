//! Access permissions of a translation, as bit flags.

use bitflags::bitflags;

bitflags! {
    /// What a translation allows, or what an access needs.
    ///
    /// `READ` and `WRITE` are what every format and host backend understands; `EXEC` and
    /// `PRIV` are carried for formats that have them (VT-d first-level, AMD-Vi v2 tables) and
    /// are ignored by host backends.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
    pub struct Perm: u8 {
        /// Device may read memory through this translation.
        const READ = 1 << 0;
        /// Device may write memory through this translation.
        const WRITE = 1 << 1;
        /// Instruction fetch allowed (formats that distinguish it).
        const EXEC = 1 << 2;
        /// Supervisor/privileged requests allowed (formats that distinguish it).
        const PRIV = 1 << 3;
        /// Both read and write.
        const RW = Self::READ.bits() | Self::WRITE.bits();
    }
}

impl Perm {
    /// True when every permission in `need` is granted by `self`.
    pub fn allows(self, need: Perm) -> bool {
        self.contains(need)
    }

    /// The `vm_memory` view of the read/write part.
    pub fn to_vm_memory(self) -> vm_memory::Permissions {
        match (self.contains(Perm::READ), self.contains(Perm::WRITE)) {
            (true, true) => vm_memory::Permissions::ReadWrite,
            (true, false) => vm_memory::Permissions::Read,
            (false, true) => vm_memory::Permissions::Write,
            (false, false) => vm_memory::Permissions::No,
        }
    }

    /// The flags matching a `vm_memory` access kind.
    pub fn from_vm_memory(p: vm_memory::Permissions) -> Perm {
        match p {
            vm_memory::Permissions::No => Perm::empty(),
            vm_memory::Permissions::Read => Perm::READ,
            vm_memory::Permissions::Write => Perm::WRITE,
            vm_memory::Permissions::ReadWrite => Perm::RW,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_vm_memory() {
        for p in [Perm::empty(), Perm::READ, Perm::WRITE, Perm::RW] {
            assert_eq!(Perm::from_vm_memory(p.to_vm_memory()), p);
        }
        assert!(Perm::RW.allows(Perm::READ));
        assert!(!Perm::READ.allows(Perm::WRITE));
    }
}
