//! Load options and the one place where a model is built on the CPU or on a GPU.

use std::sync::Arc;

use crate::backend::gpu::Gpu;
use crate::device::{Device, Precision};
use crate::error::{Error, Result};

/// Options for loading a model.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// The device to run on.
    pub device: Device,
    /// Overrides the maximum sequence length (tokens, special tokens included). It is also a
    /// cap: a request's own `max_length` above it is clamped to it (an operator's limit, such
    /// as `amphi serve --max-tokens`, cannot be raised by a client).
    pub max_length: Option<usize>,
    /// The host's GPU (for [`Device::Gpu`] and [`Device::Auto`]): `amphi_gpu::WgpuHost`
    /// natively; inside `amphi.wasm`, the host's `amphi_gpu` imports.
    pub gpu: Option<Arc<dyn amphi_gpu::GpuHost>>,
    /// The weights' precision on the GPU (ignored on the CPU).
    pub precision: Precision,
    /// Image models: the limit on decoded pixels per image (default
    /// [`crate::image::DEFAULT_MAX_IMAGE_PIXELS`]).
    pub max_image_pixels: Option<u64>,
}

/// The device policy of every model: `cpu` builds on the CPU; `gpu` on the host's GPU or fails
/// with [`Error::DeviceUnavailable`]; `auto` on a hardware GPU, falling back to the CPU when
/// there is none, when it is a software adapter (lavapipe, SwiftShader: slower than the CPU
/// kernels) or when building on it fails.
pub(crate) fn on_device<E>(
    options: &LoadOptions,
    cpu: impl FnOnce() -> Result<E>,
    gpu: impl FnOnce(&Arc<dyn amphi_gpu::GpuHost>) -> Result<E>,
) -> Result<E> {
    match (options.device, &options.gpu) {
        (Device::Cpu, _) | (Device::Auto, None) => cpu(),
        (Device::Auto, Some(host)) if host.info().software => cpu(),
        (Device::Auto, Some(host)) => gpu(host).or_else(|_| cpu()),
        (Device::Gpu, Some(host)) => gpu(host),
        (Device::Gpu, None) => Err(Error::DeviceUnavailable {
            device: "gpu".to_owned(),
            reason: "no GPU adapter was found".to_owned(),
        }),
    }
}

/// A model built on the CPU (`C`) or on a GPU (`G`): models are generic over the backend
/// internally, and every model type dispatches once, here; users only see [`Device`].
pub(crate) enum Engine<C: ?Sized, G: ?Sized> {
    Cpu(Box<C>),
    Gpu(Box<G>, Gpu),
}

impl<C: ?Sized, G: ?Sized> Engine<C, G> {
    /// The device the model runs on (never [`Device::Auto`]).
    pub(crate) fn device(&self) -> Device {
        match self {
            Engine::Cpu(_) => Device::Cpu,
            Engine::Gpu(..) => Device::Gpu,
        }
    }

    /// The precision the weights are stored in.
    pub(crate) fn precision(&self) -> Precision {
        match self {
            Engine::Cpu(_) => Precision::F32,
            Engine::Gpu(_, be) => be.precision(),
        }
    }

    /// The GPU adapter's name, when the model runs on a GPU.
    pub(crate) fn adapter(&self) -> Option<&str> {
        match self {
            Engine::Cpu(_) => None,
            Engine::Gpu(_, be) => Some(be.adapter()),
        }
    }
}
