//! ACPI tables: RSDP, XSDT, FADT (+FACS), DSDT, MADT, and DMAR (VT-d) or IVRS (AMD-Vi).
//!
//! Linux finds the RSDP by scanning `0xE0000..0x100000` (and through `boot_params`); the IOMMU
//! drivers are probed only through DMAR / IVRS. There is no MCFG: configuration space is
//! reached through mechanism #1 (`0xCF8`), which the DSDT's root bridge claims.

use acpi_tables::Aml;
use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, IO, Name, Package, ResourceTemplate,
    Scope,
};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use viommu_amd_vi::IvrsInfo;

use crate::layout;

const OEM_ID: [u8; 6] = *b"VIOMMU";
const OEM_TABLE: [u8; 8] = *b"VIOMMUVM";

/// Which IOMMU description to publish.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IommuTable {
    /// None.
    None,
    /// A DMAR with one DRHD covering every device on segment 0 (`INCLUDE_PCI_ALL`).
    Dmar {
        /// Register base of the remapping unit.
        register_base: u64,
        /// Host address width in bits (the DMAR stores it minus one).
        host_address_width: u8,
        /// With interrupt remapping: the IO-APIC the unit remaps (DMAR flag INTR_REMAP and
        /// an IOAPIC device scope).
        ioapic: Option<IoapicScope>,
    },
    /// An IVRS with one type-11h IVHD selecting each of `devices` (requester ids).
    Ivrs {
        /// The model's IVRS values.
        info: IvrsInfo,
        /// Requester ids of every function behind the IOMMU (its own included).
        devices: Vec<u16>,
        /// Special device entries (type 48h: IOAPIC / HPET) for interrupt remapping.
        special: Vec<[u8; 8]>,
    },
}

/// An IO-APIC behind the remapping unit: its APIC id and the source id (requester id) its
/// interrupt messages carry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoapicScope {
    /// IO-APIC id (the MADT's and the IOAPIC ID register's).
    pub id: u8,
    /// Source id, bus << 8 | devfn.
    pub source_id: u16,
}

/// What the tables describe.
#[derive(Clone, Debug)]
pub struct AcpiConfig {
    /// Number of vCPUs (local APIC ids 0..n).
    pub cpus: u8,
    /// The IOMMU.
    pub iommu: IommuTable,
}

/// Built tables: where each goes in guest memory.
#[derive(Clone, Debug)]
pub struct AcpiTables {
    /// Guest-physical address of the RSDP.
    pub rsdp: u64,
    /// (guest-physical address, bytes) of every structure, RSDP included.
    pub blobs: Vec<(u64, Vec<u8>)>,
}

/// Errors building the tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcpiError {
    /// The tables do not fit the BIOS area.
    TooLarge {
        /// Bytes needed.
        needed: u64,
    },
}

impl std::fmt::Display for AcpiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AcpiError::TooLarge { needed } => {
                write!(
                    f,
                    "ACPI tables need {needed} bytes, more than the BIOS area"
                )
            }
        }
    }
}

impl std::error::Error for AcpiError {}

struct Placer {
    next: u64,
    blobs: Vec<(u64, Vec<u8>)>,
}

impl Placer {
    fn place(&mut self, bytes: Vec<u8>, align: u64) -> u64 {
        let at = self.next.next_multiple_of(align);
        self.next = at + bytes.len() as u64;
        self.blobs.push((at, bytes));
        at
    }
}

fn sdt(signature: &[u8; 4], revision: u8) -> Sdt {
    Sdt::new(*signature, 36, revision, OEM_ID, OEM_TABLE, 1)
}

/// The DSDT: `\_SB.PCI0` (a PNP0A03 root bridge for bus 0 claiming the config ports, the
/// legacy I/O ranges and the BAR window) and `\_S5` for ACPI power-off.
pub fn dsdt() -> Vec<u8> {
    let mut t = sdt(b"DSDT", 2);
    let bus = AddressSpace::new_bus_number(0u16, 0xffu16);
    let cfg_io = IO::new(0xcf8, 0xcf8, 1, 8);
    let io_lo = AddressSpace::new_io(0u16, 0xcf7u16, None);
    let io_hi = AddressSpace::new_io(0xd00u16, 0xffffu16, None);
    let mem = AddressSpace::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        layout::PCI_MMIO_START as u32,
        (layout::PCI_MMIO_END - 1) as u32,
        None,
    );
    let crs = ResourceTemplate::new(vec![&bus, &cfg_io, &io_lo, &io_hi, &mem]);
    let hid = EISAName::new("PNP0A03");
    let zero = 0u8;
    let names = [
        Name::new("_HID".into(), &hid),
        Name::new("_ADR".into(), &zero),
        Name::new("_SEG".into(), &zero),
        Name::new("_UID".into(), &zero),
        Name::new("_BBN".into(), &zero),
        Name::new("_CRS".into(), &crs),
    ];
    let pci0 = Device::new("PCI0".into(), names.iter().map(|n| n as &dyn Aml).collect());
    Scope::new("\\_SB_".into(), vec![&pci0]).to_aml_bytes(&mut t);
    let typ = layout::S5_SLP_TYP as u8;
    Name::new("_S5_".into(), &Package::new(vec![&typ, &typ])).to_aml_bytes(&mut t);
    t.update_checksum();
    t.as_slice().to_vec()
}

/// The FADT (revision 6): PM1a event and control blocks on I/O ports, SCI on IRQ 9, no
/// SMI command port (always in ACPI mode), no i8042, VGA or CMOS RTC.
pub fn fadt(dsdt: u64, facs: u64) -> Vec<u8> {
    let mut t = Sdt::new(*b"FACP", 276, 6, OEM_ID, OEM_TABLE, 1);
    t.write_u16(46, layout::SCI_IRQ);
    t.write_u32(56, u32::from(layout::PM1A_EVT));
    t.write_u32(64, u32::from(layout::PM1A_CNT));
    t.write_u8(88, 4); // PM1_EVT_LEN
    t.write_u8(89, 2); // PM1_CNT_LEN
    // IAPC_BOOT_ARCH: VGA not present (bit 2), CMOS RTC not present (bit 5); no 8042
    // (bit 1 clear), MSI allowed (bit 4 clear).
    t.write_u16(109, (1 << 2) | (1 << 5));
    // Flags: WBINVD (0), power and sleep buttons are not fixed-feature (4, 5).
    t.write_u32(112, 1 | (1 << 4) | (1 << 5));
    t.write_u64(132, facs);
    t.write_u64(140, dsdt);
    t.as_slice().to_vec()
}

/// The FACS (64 bytes, no checksum).
pub fn facs() -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[0..4].copy_from_slice(b"FACS");
    f[4..8].copy_from_slice(&64u32.to_le_bytes());
    f[32] = 2; // version
    f
}

/// The MADT: one enabled local APIC per vCPU and KVM's IO-APIC (GSI base 0); PC-AT
/// compatible (8259s present).
pub fn madt(cpus: u8) -> Vec<u8> {
    let mut t = sdt(b"APIC", 4);
    t.append_slice(&(layout::LAPIC as u32).to_le_bytes());
    t.append_slice(&1u32.to_le_bytes());
    for id in 0..cpus {
        t.append_slice(&[0, 8, id, id, 1, 0, 0, 0]);
    }
    let mut ioapic = vec![1, 12, 0, 0];
    ioapic.extend_from_slice(&(layout::IOAPIC as u32).to_le_bytes());
    ioapic.extend_from_slice(&0u32.to_le_bytes());
    t.append_slice(&ioapic);
    t.as_slice().to_vec()
}

/// The DMAR (VT-d spec 8.1, 8.3): one DRHD with `INCLUDE_PCI_ALL` on segment 0. With
/// `ioapic`, the DMAR flags claim interrupt remapping (INTR_REMAP, bit 0; X2APIC_OPT_OUT,
/// bit 1, clear) and the DRHD lists the IO-APIC in a device scope (8.3.1: type 3, enumeration
/// id = IO-APIC id, start bus and a one-entry path = its source id), which Linux requires
/// before it enables remapping (`ir_parse_ioapic_hpet_scope`).
pub fn dmar(register_base: u64, host_address_width: u8, ioapic: Option<IoapicScope>) -> Vec<u8> {
    let mut t = sdt(b"DMAR", 1);
    let mut head = [0u8; 12];
    head[0] = host_address_width.saturating_sub(1);
    if ioapic.is_some() {
        head[1] = 1; // INTR_REMAP
    }
    t.append_slice(&head);
    let mut drhd = vec![0u8; 16];
    drhd[0..2].copy_from_slice(&0u16.to_le_bytes());
    drhd[4] = 1; // INCLUDE_PCI_ALL
    drhd[8..16].copy_from_slice(&register_base.to_le_bytes());
    if let Some(io) = ioapic {
        let [bus, devfn] = io.source_id.to_be_bytes();
        drhd.extend_from_slice(&[3, 8, 0, 0, io.id, bus, devfn >> 3, devfn & 7]);
    }
    let len = drhd.len() as u16;
    drhd[2..4].copy_from_slice(&len.to_le_bytes());
    t.append_slice(&drhd);
    t.as_slice().to_vec()
}

/// The IVRS (AMD IOMMU spec 48882 §5.2): IVinfo and one IVHD of type 11h from the model's
/// [`IvrsInfo`], with one 4-byte select entry (type 2) per device.
///
/// Not `IVHD_DEV_ALL`: Linux sizes its device table and its flush loops by the highest
/// device id the IVHD names, and Linux 6.1 ignores the IVHD's EFR copy unless it reports
/// GASup (`init_iommu_one`), so before reading the MMIO EFR it flushes with one
/// INVALIDATE_DEVTAB_ENTRY per device id and one INVALIDATE_IOMMU_PAGES per domain id up to
/// that id: with `IVHD_DEV_ALL` that is 3 × 65536 commands, each a trapped tail write
/// (a 40 s soft lockup in the nested test), with the device list a few dozen.
///
/// `special` are 8-byte special device entries (IOAPIC / HPET, type 48h) appended after the
/// select entries: Linux enables interrupt remapping only when the IVRS names an IOAPIC.
pub fn ivrs(info: &IvrsInfo, devices: &[u16], special: &[[u8; 8]]) -> Vec<u8> {
    let mut t = sdt(b"IVRS", 2);
    t.append_slice(&info.iv_info.to_le_bytes());
    t.append_slice(&[0u8; 8]);
    let len = 40 + 4 * devices.len() + 8 * special.len();
    let mut h = Vec::with_capacity(len);
    h.push(0x11);
    h.push(info.ivhd_flags);
    h.extend_from_slice(&(len as u16).to_le_bytes());
    h.extend_from_slice(&info.device_id.to_le_bytes());
    h.extend_from_slice(&info.capability_offset.to_le_bytes());
    h.extend_from_slice(&info.mmio_base.to_le_bytes());
    h.extend_from_slice(&info.pci_segment.to_le_bytes());
    h.extend_from_slice(&info.iommu_info.to_le_bytes());
    h.extend_from_slice(&info.attributes.to_le_bytes());
    h.extend_from_slice(&info.efr.to_le_bytes());
    h.extend_from_slice(&info.efr2.to_le_bytes());
    for d in devices {
        // IVHD_DEV_SELECT, data setting 0.
        let [lo, hi] = d.to_le_bytes();
        h.extend_from_slice(&[0x02, lo, hi, 0]);
    }
    for e in special {
        h.extend_from_slice(e);
    }
    debug_assert_eq!(h.len(), len);
    t.append_slice(&h);
    t.as_slice().to_vec()
}

/// Builds every table for `config`, placed from [`layout::ACPI_START`].
pub fn build(config: &AcpiConfig) -> Result<AcpiTables, AcpiError> {
    let mut p = Placer {
        next: layout::ACPI_START + Rsdp::len() as u64,
        blobs: Vec::new(),
    };
    let dsdt_at = p.place(dsdt(), 16);
    let facs_at = p.place(facs(), 64);
    let mut entries = vec![p.place(fadt(dsdt_at, facs_at), 16)];
    entries.push(p.place(madt(config.cpus), 16));
    match &config.iommu {
        IommuTable::None => {}
        IommuTable::Dmar {
            register_base,
            host_address_width,
            ioapic,
        } => entries.push(p.place(dmar(*register_base, *host_address_width, *ioapic), 16)),
        IommuTable::Ivrs {
            info,
            devices,
            special,
        } => entries.push(p.place(ivrs(info, devices, special), 16)),
    }
    let mut xsdt = sdt(b"XSDT", 1);
    for e in &entries {
        xsdt.append_slice(&e.to_le_bytes());
    }
    let xsdt_at = p.place(xsdt.as_slice().to_vec(), 16);
    if p.next > layout::ACPI_END {
        return Err(AcpiError::TooLarge {
            needed: p.next - layout::ACPI_START,
        });
    }
    let mut rsdp = Vec::new();
    Rsdp::new(OEM_ID, xsdt_at).to_aml_bytes(&mut rsdp);
    p.blobs.insert(0, (layout::ACPI_START, rsdp));
    Ok(AcpiTables {
        rsdp: layout::ACPI_START,
        blobs: p.blobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use viommu_amd_vi::{AmdVi, Config};
    use viommu_shared::regs::NullMsiSink;
    use viommu_shared::testing::guest_memory;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }

    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    fn table(t: &AcpiTables, addr: u64) -> &[u8] {
        &t.blobs
            .iter()
            .find(|(a, _)| *a == addr)
            .expect("table at address")
            .1
    }

    /// Follows RSDP → XSDT → tables, checking every checksum and length; returns the
    /// signatures and bodies.
    fn walk(t: &AcpiTables) -> Vec<(String, Vec<u8>)> {
        let rsdp = table(t, t.rsdp);
        assert_eq!(&rsdp[0..8], b"RSD PTR ");
        assert_eq!(sum(&rsdp[0..20]), 0);
        assert_eq!(sum(rsdp), 0);
        assert_eq!(rsdp[15], 2);
        let xsdt = table(t, u64_at(rsdp, 24));
        assert_eq!(&xsdt[0..4], b"XSDT");
        assert_eq!(u32_at(xsdt, 4) as usize, xsdt.len());
        assert_eq!(sum(xsdt), 0);
        let mut out = Vec::new();
        for e in xsdt[36..].chunks(8) {
            let body = table(t, u64::from_le_bytes(e.try_into().unwrap()));
            assert_eq!(u32_at(body, 4) as usize, body.len(), "length field");
            assert_eq!(sum(body), 0, "checksum of {:?}", &body[0..4]);
            out.push((
                String::from_utf8_lossy(&body[0..4]).into_owned(),
                body.to_vec(),
            ));
        }
        for (a, b) in &t.blobs {
            assert!(*a >= layout::ACPI_START && a + b.len() as u64 <= layout::ACPI_END);
        }
        out
    }

    #[test]
    fn fadt_points_at_dsdt_and_facs_and_pm_blocks() {
        let t = build(&AcpiConfig {
            cpus: 1,
            iommu: IommuTable::None,
        })
        .unwrap();
        let tables = walk(&t);
        let names: Vec<_> = tables.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["FACP", "APIC"]);
        let fadt = &tables[0].1;
        assert_eq!(fadt.len(), 276);
        let dsdt = table(&t, u64_at(fadt, 140));
        assert_eq!(&dsdt[0..4], b"DSDT");
        assert_eq!(sum(dsdt), 0);
        assert_eq!(u32_at(dsdt, 4) as usize, dsdt.len());
        // The AML names the root bridge and the S5 package.
        let find = |pat: &[u8]| dsdt.windows(pat.len()).any(|w| w == pat);
        assert!(find(b"PCI0") && find(b"_S5_") && find(b"_CRS"));
        let facs = table(&t, u64_at(fadt, 132));
        assert_eq!(&facs[0..4], b"FACS");
        assert_eq!(u64_at(fadt, 132) % 64, 0);
        assert_eq!(u32_at(fadt, 56), u32::from(layout::PM1A_EVT));
        assert_eq!(u32_at(fadt, 64), u32::from(layout::PM1A_CNT));
        assert_eq!(u16::from_le_bytes([fadt[46], fadt[47]]), 9);
        // MSI must not be declared unsupported.
        assert_eq!(fadt[109] & (1 << 4), 0);
    }

    #[test]
    fn madt_lists_cpus_and_ioapic() {
        let m = madt(2);
        assert_eq!(u32_at(&m, 36), 0xfee0_0000);
        assert_eq!(&m[44..52], &[0, 8, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&m[52..60], &[0, 8, 1, 1, 1, 0, 0, 0]);
        assert_eq!(m[60], 1);
        assert_eq!(u32_at(&m, 64), 0xfec0_0000);
        assert_eq!(m.len(), 72);
        assert_eq!(sum(&m), 0);
    }

    #[test]
    fn dmar_has_one_include_all_drhd() {
        let t = build(&AcpiConfig {
            cpus: 1,
            iommu: IommuTable::Dmar {
                register_base: 0xfed9_0000,
                host_address_width: 48,
                ioapic: None,
            },
        })
        .unwrap();
        let tables = walk(&t);
        let (name, d) = &tables[2];
        assert_eq!(name, "DMAR");
        assert_eq!(d.len(), 64);
        assert_eq!(d[36], 47);
        assert_eq!(d[37] & 1, 0, "interrupt remapping is not claimed");
        assert_eq!(u16::from_le_bytes([d[48], d[49]]), 0);
        assert_eq!(u16::from_le_bytes([d[50], d[51]]), 16);
        assert_eq!(d[52], 1);
        assert_eq!(u64_at(d, 56), 0xfed9_0000);
    }

    #[test]
    fn dmar_with_remapping_claims_it_and_scopes_the_ioapic() {
        let d = dmar(
            0xfed9_0000,
            39,
            Some(IoapicScope {
                id: 2,
                source_id: 0x00f8,
            }),
        );
        assert_eq!(d.len(), 72);
        assert_eq!(u32_at(&d, 4) as usize, d.len());
        assert_eq!(sum(&d), 0);
        assert_eq!(d[37] & 3, 1, "INTR_REMAP set, X2APIC_OPT_OUT clear");
        assert_eq!(u16::from_le_bytes([d[50], d[51]]), 24);
        assert_eq!(d[52], 1);
        // Device scope: IOAPIC (3), length 8, enumeration id 2, bus 0, path 1f.0.
        assert_eq!(&d[64..72], &[3, 8, 0, 0, 2, 0, 0x1f, 0]);
    }

    #[test]
    fn ivrs_carries_the_models_values() {
        let cfg = Config {
            device_id: 0x10,
            ..Config::default()
        };
        let model = AmdVi::new(
            cfg,
            guest_memory(&[(0, 1 << 20)]),
            std::sync::Arc::new(NullMsiSink),
        );
        let info = model.ivrs(0x40);
        let t = build(&AcpiConfig {
            cpus: 1,
            iommu: IommuTable::Ivrs {
                info,
                devices: vec![0x00, 0x08, 0x10],
                special: vec![viommu_amd_vi::SpecialDevice::QEMU_IOAPIC.ivhd_entry()],
            },
        })
        .unwrap();
        let tables = walk(&t);
        let (name, v) = &tables[2];
        assert_eq!(name, "IVRS");
        assert_eq!(u32_at(v, 36), info.iv_info);
        let h = &v[48..];
        assert_eq!(h[0], 0x11);
        assert_eq!(u16::from_le_bytes([h[2], h[3]]) as usize, h.len());
        assert_eq!(u16::from_le_bytes([h[4], h[5]]), 0x10);
        assert_eq!(u16::from_le_bytes([h[6], h[7]]), 0x40);
        assert_eq!(u64_at(h, 8), viommu_amd_vi::DEFAULT_MMIO_BASE);
        assert_eq!(u64_at(h, 24), model.efr());
        assert_eq!(h.len(), 60);
        assert_eq!(&h[40..52], &[2, 0, 0, 0, 2, 8, 0, 0, 2, 0x10, 0, 0]);
        // IOAPIC 0 with requester id 00:14.0.
        assert_eq!(&h[52..60], &[0x48, 0, 0, 0, 0, 0xa0, 0, 1]);
    }
}
