//! The devices the trainer runs on: `cpu` always, `cuda` in builds with the `cuda` feature
//! (dfdx's CUDA backend; see `docs/cuda.md` and `cargo xtask bundle-cuda`).

use anyhow::Result;
use kd_ops::OpsDevice;
use serde::{Deserialize, Serialize};

/// Where a run computes (`TrainConfig::device`): `cpu`, or `cuda` in builds with the `cuda`
/// feature. Written as a string (`device: "cpu"`), as configs always have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Device {
    #[default]
    Cpu,
    Cuda,
}

impl Device {
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Device {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Device {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda),
            other => Err(unavailable(other)),
        }
    }
}

/// A device a run can be placed on.
pub trait TrainDevice: OpsDevice + Clone {
    /// The [`Device`] it is.
    const DEVICE: Device;
    /// The device, with its random numbers (model initialisation) seeded by `seed`.
    fn create(seed: u64) -> Result<Self>;
}

impl TrainDevice for dfdx::prelude::Cpu {
    const DEVICE: Device = Device::Cpu;
    fn create(seed: u64) -> Result<Self> {
        Ok(kd_models::dfdx_cpu(seed))
    }
}

#[cfg(feature = "cuda")]
impl TrainDevice for dfdx::prelude::Cuda {
    const DEVICE: Device = Device::Cuda;
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
        let dev = dfdx::prelude::Cuda::try_seed_from_u64(seed).map_err(|e| fail("dfdx", &e))?;
        // dfdx's allocation cache: a training step allocates the same sizes every time, and
        // reusing them avoids the driver's allocator (and its synchronisations) in every op.
        if std::env::var("KD_CUDA_CACHE").as_deref() != Ok("0") {
            use dfdx::tensor::Cache;
            dev.enable_cache();
        }
        Ok(dev)
    }
}

/// Device memory in use on the current GPU, in MB, as the driver reports it (all processes);
/// `None` without a CUDA context or in builds without CUDA.
pub fn gpu_used_mb() -> Option<f64> {
    #[cfg(feature = "cuda")]
    {
        let (free, total) = cudarc::driver::result::mem_get_info().ok()?;
        Some((total - free) as f64 / (1024.0 * 1024.0))
    }
    #[cfg(not(feature = "cuda"))]
    None
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_strings_in_configs() {
        assert_eq!(serde_json::to_string(&Device::Cpu).unwrap(), "\"cpu\"");
        let d: Device = serde_json::from_str("\"cuda\"").unwrap();
        assert_eq!(d, Device::Cuda);
        let e = serde_json::from_str::<Device>("\"tpu\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown device `tpu`"), "{e}");
    }
}
