//! Real-kernel oracle, the guest side (run by `init.sh` inside the QEMU guest that `run.sh`
//! boots).
//!
//! Runs the same host-backend sequences against `VfioContainerBackend` on a real type1
//! container (edu attached) and against a `SimHost` configured like that container — entry
//! limit from the `dma_entry_limit` module parameter, IOVA ranges and page sizes from
//! `VfioContainerBackend::info()` — and compares every result; then checks real DMA through
//! shadow-engine mappings with the edu device; then repeats the plain sequence on a type1 v1
//! container.
//!
//! usage: realkernel-oracle --bdf 0000:00:01.0 --iommu vtd|amd

mod dma;
mod edu;
mod layout;
mod script;
mod shadow_run;
mod verdict;
mod vfio_raw;

use std::process::ExitCode;
use std::sync::Arc;
use vfio_bindings::bindings::vfio::VFIO_TYPE1_IOMMU;
use vfio_ioctls::VfioContainer;
use viommu_shared::AddrRange;
use viommu_shared::host::{HostDma, HostFlavour, SimHost, SimHostConfig, VfioContainerBackend};
use vm_memory::GuestMemoryMmap;

use script::Platform;
use verdict::Verdicts;

struct Args {
    bdf: String,
    iommu: String,
}

fn parse_args() -> Result<Args, String> {
    let mut bdf = None;
    let mut iommu = None;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--bdf" => bdf = it.next(),
            "--iommu" => iommu = it.next(),
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Args {
        bdf: bdf.ok_or("--bdf is required")?,
        iommu: iommu.ok_or("--iommu is required")?,
    })
}

/// The SimHost configuration that mirrors `backend`'s container.
fn sim_config(
    backend: &VfioContainerBackend<GuestMemoryMmap>,
    flavour: HostFlavour,
    limit: u32,
) -> Result<(SimHostConfig, Platform), String> {
    let info = backend.info().map_err(|e| format!("GET_INFO: {e}"))?;
    println!(
        "REALKERNEL-INFO {flavour:?} container: iova_pgsizes={} dma_avail={} iova_ranges={}",
        info.iova_pgsizes
            .map_or_else(|| "none".to_owned(), |p| format!("{p:#x}")),
        verdict::avail(info.dma_avail),
        info.iova_ranges.as_ref().map_or_else(
            || "none (unrestricted)".to_owned(),
            |r| r
                .iter()
                .map(|r| format!("{r}"))
                .collect::<Vec<_>>()
                .join(" ")
        )
    );
    let ranges = info
        .iova_ranges
        .clone()
        .unwrap_or_else(|| vec![AddrRange::new(0, u64::MAX)]);
    let config = SimHostConfig {
        flavour,
        entry_limit: limit,
        iova_ranges: ranges.clone(),
        page_sizes: info.iova_pgsizes.ok_or("GET_INFO reports no page sizes")?,
        backed: Some(layout::backed()),
        // Cache coherency is not part of what the oracle compares.
        coherent: false,
        // The guest's locked-memory limit is not reached by the oracle's scripts.
        pin_budget: None,
    };
    Ok((config, Platform { ranges, limit }))
}

/// Runs `steps` on both hosts and compares them step by step.
fn compare_script(
    v: &mut Verdicts,
    tag: &str,
    real: &mut dyn HostDma,
    sim: &mut dyn HostDma,
    steps: &[script::Step],
) {
    let real_out = script::execute(real, steps);
    let sim_out = script::execute(sim, steps);
    for (i, ((s, r), m)) in steps.iter().zip(&real_out).zip(&sim_out).enumerate() {
        v.compare(tag, i, &format!("{}: {}", s.why, s.op), r, m);
    }
}

fn run(args: &Args, v: &mut Verdicts) -> Result<(), String> {
    let limit = vfio_raw::dma_entry_limit()?;
    let asked = vfio_raw::cmdline_param("vfio_iommu_type1.dma_entry_limit");
    println!(
        "REALKERNEL-INFO kernel={} iommu={} edu={} dma_entry_limit={limit} (command line {asked:?})",
        vfio_raw::kernel_release(),
        args.iommu,
        args.bdf
    );
    if let Some(a) = asked
        && a != limit.to_string()
    {
        return Err(format!(
            "dma_entry_limit is {limit} but the command line asks for {a}: init did not pass it to insmod"
        ));
    }
    if limit < 16 {
        return Err(format!(
            "dma_entry_limit {limit} is too small for the sequences"
        ));
    }
    let group = vfio_raw::group_of(&args.bdf)?;
    let mem = layout::memory()?;

    // --- type1 v2: the container a VMM uses (vfio-ioctls attaches the group, TYPE1v2) ---
    let tag = format!("{} v2", args.iommu);
    let container =
        Arc::new(VfioContainer::new(None).map_err(|e| format!("VfioContainer::new: {e}"))?);
    let dev = edu::Edu::open(&args.bdf, container.clone())?;
    let mut real = VfioContainerBackend::new(container.clone(), mem.clone());
    let (config, platform) = sim_config(&real, HostFlavour::Type1v2, limit)?;
    let mut sim = SimHost::new(config.clone());
    compare_script(v, &tag, &mut real, &mut sim, &script::type1v2(&platform));

    // --- shadow engine over the same container ---
    let tag = format!("{} shadow", args.iommu);
    let steps = shadow_run::workload(limit);
    let real_out = shadow_run::run(
        VfioContainerBackend::new(container.clone(), mem.clone()),
        &mem,
        &steps,
    );
    let sim_out = shadow_run::run(SimHost::new(config), &mem, &steps);
    for (i, ((s, r), m)) in steps.iter().zip(&real_out).zip(&sim_out).enumerate() {
        v.compare(&tag, i, &shadow_run::describe(s), r, m);
    }
    let left = real.remaining_entries();
    v.check(
        &tag,
        "shadow teardown left no mapping in the real container",
        left == Some(limit),
        format!("DMA_AVAIL {left:?}, dma_entry_limit {limit}"),
    );

    // --- real DMA through shadow-engine mappings ---
    dma::run(
        v,
        &format!("{} dma", args.iommu),
        &dev,
        container.clone(),
        &mem,
        limit,
    );

    // Release the group (closing the device detaches it from the container).
    drop(real);
    drop(dev);
    drop(container);

    // --- type1 v1: a second container, SET_IOMMU(VFIO_TYPE1_IOMMU) by hand ---
    let tag = format!("{} v1", args.iommu);
    let g = vfio_raw::Group::open(group)?;
    let container =
        Arc::new(VfioContainer::new(None).map_err(|e| format!("VfioContainer::new: {e}"))?);
    g.attach(&container, VFIO_TYPE1_IOMMU)?;
    let mut real = VfioContainerBackend::new(container.clone(), mem.clone());
    let (config, platform) = sim_config(&real, HostFlavour::Type1v1, limit)?;
    let mut sim = SimHost::new(config);
    compare_script(v, &tag, &mut real, &mut sim, &script::type1v1(&platform));
    let left = real.unmap_all();
    v.check(
        &tag,
        "v1 container left empty",
        left == Ok(0),
        format!("unmap_all {left:?}"),
    );
    top_page_probe(&container, &mem);
    // The container is closed here, which frees a top-page mapping the probe may have left.
    Ok(())
}

/// Shows, on a container about to be closed, why the backend refuses maps that end at 2^64:
/// what the raw kernel does with the top page (information only, not a verdict).
fn top_page_probe(container: &VfioContainer, mem: &GuestMemoryMmap) {
    let top = u64::MAX - 0xfff;
    let Ok(hva) = viommu_shared::host::vfio::gpa_to_hva(mem, layout::GPA_A, 0x1000) else {
        return;
    };
    // SAFETY: `hva` is a page of `mem`, which outlives the container (closed at the end of
    // `run`, `mem` after it) and is accessed only through vm-memory's volatile accessors.
    let map = unsafe { vfio_raw::raw_map(container, hva, top, 0x1000) };
    let unmap = vfio_raw::raw_unmap(container, top, 0x1000);
    let all = vfio_raw::raw_unmap_all(container);
    println!(
        "REALKERNEL-INFO raw kernel, top page {top:#x}+0x1000: MAP_DMA {map:?}, UNMAP_DMA of it {unmap:?}, UNMAP_ALL {all:?} (Ok = size written back); the backend refuses this map"
    );
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            println!("REALKERNEL-ERROR {e}");
            return ExitCode::from(2);
        }
    };
    let mut v = Verdicts::default();
    let setup = run(&args, &mut v);
    if let Err(e) = &setup {
        println!("REALKERNEL-ERROR {e}");
    }
    let pass = setup.is_ok() && v.ok();
    println!(
        "REALKERNEL: {} agreed, {} disagreed; {} checks passed, {} failed",
        v.agreed, v.disagreed, v.passed, v.failed
    );
    println!(
        "REALKERNEL-RESULT iommu={} kernel={} agreed={} disagreed={} checks_passed={} checks_failed={} status={}",
        args.iommu,
        vfio_raw::kernel_release(),
        v.agreed,
        v.disagreed,
        v.passed,
        v.failed,
        if pass { "PASS" } else { "FAIL" }
    );
    if pass {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
