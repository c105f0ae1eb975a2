//! [`Device`] and [`Precision`]: where a model runs and how its weights are stored. A leaf
//! module: backends and models both read it.

use serde::Deserialize;

use crate::error::{Error, Result};

/// Where a model runs. `Auto` picks the best available device when loading; a loaded model
/// reports the concrete device it runs on (`Cpu` or `Gpu`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    /// The GPU when one is available and works, else the CPU.
    #[default]
    Auto,
    /// The CPU (SIMD128 kernels on wasm32).
    Cpu,
    /// The GPU; loading fails with [`Error::DeviceUnavailable`] when there is none.
    Gpu,
}

impl Device {
    /// The name used on the wire: `auto`, `cpu` or `gpu`.
    pub fn as_str(self) -> &'static str {
        match self {
            Device::Auto => "auto",
            Device::Cpu => "cpu",
            Device::Gpu => "gpu",
        }
    }
}

impl std::str::FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "auto" => Ok(Device::Auto),
            "cpu" => Ok(Device::Cpu),
            "gpu" | "webgpu" => Ok(Device::Gpu),
            other => Err(Error::invalid_input(format!(
                "unknown device `{other}` (expected auto, cpu or gpu)"
            ))),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Storage precision of a GPU model's weights. Activations, sums and outputs stay f32 either
/// way; the CPU always computes in f32.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 weights and products: the reference results.
    #[default]
    F32,
    /// f16 weights (half the GPU memory and bandwidth) and f16 products within short partial
    /// sums, where the adapter has `shader-f16`; elsewhere the model loads in f32, and
    /// [`TextModel::precision`] says which was used. Results differ from f32 by about 1e-3.
    F16,
}

impl Precision {
    /// The name used on the wire: `f32` or `f16`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::F16 => "f16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" | "fp32" => Ok(Precision::F32),
            "f16" | "fp16" => Ok(Precision::F16),
            other => Err(Error::invalid_input(format!(
                "unknown precision `{other}` (expected f32 or f16)"
            ))),
        }
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
