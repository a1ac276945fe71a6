//! `viommu-vmm`: boots a Linux bzImage behind an emulated IOMMU on `/dev/kvm`.

use std::process::ExitCode;

use viommu_vmm::iommu::IommuKind;
use viommu_vmm::vm::{HostKind, VmConfig, run};

const USAGE: &str = "usage: viommu-vmm --kernel BZIMAGE [--initrd FILE] [--cmdline STR] \
[--mem MIB] [--iommu none|vtd|amd-vi] [--host sim|vfio|none] [--host-limit N] \
[--host-device SYSFS_PATH] [--irq kernel|split]

Boots the kernel with one vCPU, a COM1 console on stdout, an edu device (00:01.0) behind the
IOMMU and, with --host sim (default), the edu device's address space shadowed into a
simulated type1 host with N entries (default 65535); with --host vfio into a real VFIO type1
container, made usable by the group of the vfio-pci device at --host-device (host entries are
counted from the container's DMA_AVAIL). --irq split: KVM's local APIC only, the VMM's IO-APIC,
and every IO-APIC and edu interrupt remapped by the IOMMU (the ACPI table claims interrupt
remapping); default kernel: KVM's irqchip and PIT, no remapping. At power-off it prints one line
'VMM-REPORT key=value...' with the model's and the host's counters.";

fn parse() -> Result<VmConfig, String> {
    let mut args = std::env::args().skip(1);
    let mut cfg = VmConfig {
        kernel: String::new(),
        initrd: None,
        cmdline: "console=ttyS0".into(),
        mem_mib: 512,
        iommu: IommuKind::Vtd,
        host: HostKind::Sim { limit: 65535 },
        irq: Default::default(),
    };
    let mut host = "sim".to_string();
    let mut limit = 65535u32;
    let mut host_device = None;
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--kernel" => cfg.kernel = val()?,
            "--initrd" => cfg.initrd = Some(val()?),
            "--cmdline" => cfg.cmdline = val()?,
            "--mem" => cfg.mem_mib = val()?.parse().map_err(|e| format!("--mem: {e}"))?,
            "--iommu" => cfg.iommu = val()?.parse()?,
            "--host" => host = val()?,
            "--irq" => cfg.irq = val()?.parse()?,
            "--host-device" => host_device = Some(val()?),
            "--host-limit" => limit = val()?.parse().map_err(|e| format!("--host-limit: {e}"))?,
            "-h" | "--help" => return Err(USAGE.into()),
            _ => return Err(format!("unknown argument {a}\n{USAGE}")),
        }
    }
    cfg.host = match host.as_str() {
        "sim" => HostKind::Sim { limit },
        "vfio" => HostKind::Vfio {
            device: host_device.ok_or("--host vfio needs --host-device SYSFS_PATH")?,
        },
        "none" => HostKind::None,
        h => return Err(format!("unknown host backend '{h}' (sim, vfio, none)")),
    };
    if cfg.kernel.is_empty() {
        return Err(format!("--kernel is required\n{USAGE}"));
    }
    Ok(cfg)
}

fn main() -> ExitCode {
    let cfg = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&cfg) {
        Ok(report) => {
            println!();
            println!("VMM-REPORT iommu={:?} {}", cfg.iommu, report.line());
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!();
            println!("VMM-ERROR {e}");
            ExitCode::FAILURE
        }
    }
}
