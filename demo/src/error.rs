//! Why a demonstration run could not be done.

use std::fmt;
use viommu_shared::host::vfio::VfioOpenError;

/// A run that could not be set up or torn down (the workload itself never fails: what goes
/// wrong during it is counted in the report).
#[derive(Debug)]
pub enum DemoError {
    /// `--vfio`: no VFIO container can be opened on this machine.
    VfioUnavailable(VfioOpenError),
    /// `--vfio`: the device could not be added to the container.
    VfioDevice {
        /// The sysfs path given.
        path: String,
        /// The VFIO error.
        error: vfio_ioctls::VfioError,
    },
    /// The guest driver could not bring the IOMMU up (a step of its initialisation failed).
    GuestSetup {
        /// The model.
        model: &'static str,
        /// The step.
        step: &'static str,
        /// The typed error, as printed by its `Debug`.
        detail: String,
    },
}

impl DemoError {
    /// A guest set-up failure of `model` at `step`.
    pub fn setup(model: &'static str, step: &'static str, detail: impl fmt::Debug) -> Self {
        DemoError::GuestSetup {
            model,
            step,
            detail: format!("{detail:?}"),
        }
    }
}

impl fmt::Display for DemoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DemoError::VfioUnavailable(e) => write!(
                f,
                "--vfio: no VFIO container on this machine ({e}). Load vfio-pci and bind a \
                 device to it, or run without --vfio to use the simulated host"
            ),
            DemoError::VfioDevice { path, error } => {
                write!(f, "--vfio: cannot use device {path}: {error}")
            }
            DemoError::GuestSetup {
                model,
                step,
                detail,
            } => write!(f, "{model}: guest set-up failed at {step}: {detail}"),
        }
    }
}

impl std::error::Error for DemoError {}
