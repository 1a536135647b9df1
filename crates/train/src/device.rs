//! The devices the trainer runs on: `cpu` always, `cuda` in builds with the `cuda` feature
//! (dfdx's CUDA backend; see `docs/cuda.md` and `cargo xtask bundle-cuda`).

use anyhow::Result;
use kd_ops::OpsDevice;

/// A device a run can be placed on.
pub trait TrainDevice: OpsDevice + Clone {
    /// The name `TrainConfig::device` uses.
    const NAME: &'static str;
    /// The device, with its random numbers (model initialisation) seeded by `seed`.
    fn create(seed: u64) -> Result<Self>;
}

impl TrainDevice for dfdx::prelude::Cpu {
    const NAME: &'static str = "cpu";
    fn create(seed: u64) -> Result<Self> {
        Ok(kd_models::dfdx_cpu(seed))
    }
}

#[cfg(feature = "cuda")]
impl TrainDevice for dfdx::prelude::Cuda {
    const NAME: &'static str = "cuda";
    /// Starts the driver and checks for a GPU first: cudarc 0.9 (under dfdx) panics when
    /// either fails, and a user should get an error instead.
    fn create(seed: u64) -> Result<Self> {
        use cudarc::driver::result;
        let fail = |what: &str, e: &dyn std::fmt::Debug| {
            anyhow::anyhow!(
                "creating the CUDA device (GPU 0) failed: {what}: {e:?}. A CUDA run needs the \
                 NVIDIA driver (libcuda.so.1) and a GPU; with the link-time stub library it \
                 stops here"
            )
        };
        result::init().map_err(|e| fail("starting the driver (cuInit)", &e))?;
        let n = result::device::get_count().map_err(|e| fail("counting GPUs", &e))?;
        if n < 1 {
            return Err(fail("counting GPUs", &"the driver sees none"));
        }
        dfdx::prelude::Cuda::try_seed_from_u64(seed).map_err(|e| fail("dfdx", &e))
    }
}

/// The devices this build can run on.
pub fn available() -> &'static [&'static str] {
    if cfg!(feature = "cuda") {
        &["cpu", "cuda"]
    } else {
        &["cpu"]
    }
}

/// Why `device` cannot be used by this build.
pub fn unavailable(device: &str) -> String {
    if device == "cuda" {
        "device `cuda`: this binary was built without CUDA. Build with the `cuda` feature \
         (`cargo xtask train ... --device cuda` does so itself when nvcc and nvidia-smi are \
         present), or build a relocatable GPU bundle on any machine with `cargo xtask \
         bundle-cuda` (docs/cuda.md)"
            .into()
    } else {
        format!(
            "unknown device `{device}`; valid devices: cpu, cuda (this build: {})",
            available().join(", ")
        )
    }
}
