//! amphi's narrow GPU interface, and its implementation on `wgpu`.
//!
//! The engine (`amphi-core`) issues all GPU work through [`GpuHost`]: buffers, compute pipelines
//! made from WGSL source, dispatches with bindings, and readback. The same contract is what the
//! artifact `amphi.wasm` imports from its host (module `amphi_gpu`, see `docs/abi.md`), so the
//! engine's WGSL kernels are the same wherever it runs:
//!
//! - natively, in-process, on [`WgpuHost`] (feature `wgpu`: Vulkan, Metal, DX12);
//! - in the serverless host, which serves the artifact's `amphi_gpu` imports with [`WgpuHost`];
//! - in browsers, where the browser host serves them on WebGPU.
//!
//! ```no_run
//! # #[cfg(feature = "wgpu")] {
//! use amphi_gpu::{GpuHost, WgpuHost};
//!
//! let gpu = WgpuHost::new().expect("a GPU adapter");
//! println!("{}", gpu.info().name);
//! let buffer = gpu.create_buffer(16).unwrap();
//! gpu.write_buffer(buffer, 0, &[1u8; 16]).unwrap();
//! assert_eq!(gpu.read_buffer(buffer, 0, 16).unwrap().ready(), Some(vec![1u8; 16]));
//! gpu.destroy_buffer(buffer);
//! # }
//! ```
//!
//! # Binding convention
//!
//! A kernel declares `@group(0) @binding(0) var<uniform> params: …` and its storage buffers at
//! bindings 1, 2, … in the order [`GpuHost::dispatch`] receives them. Work is recorded in order
//! and submitted at the latest when something is read back, so a readback sees every earlier
//! dispatch and write.
//!
//! # Contexts
//!
//! A host may serve several users (guest instances) on one device. [`GpuHost::open_context`]
//! gives each an isolated context, itself a [`GpuHost`]: its buffers are visible only in it, its
//! work is recorded and submitted on its own, and a command it gets wrong (a bad pipeline, an
//! out-of-range binding, a validation error) fails its own call, never another context's
//! dispatch or readback. Pipelines are immutable and may be shared by the contexts of a device.
//! Dropping a context frees its buffers and discards its unsubmitted work.

#[cfg(feature = "wgpu")]
mod wgpu_host;

#[cfg(feature = "wgpu")]
pub use wgpu_host::{WgpuConfig, WgpuContext, WgpuHost};

/// Kernels the GPU hosts' tests share (this crate's, amphi-serve's imports, the fuzz target);
/// not part of the API.
#[doc(hidden)]
pub mod testing {
    /// `dst[i] = src[i] * p.k` for `i < p.n`, entry point `scale`; bindings: uniform
    /// `{k: f32, n: u32, a: u32, b: u32}`, `src` read, `dst` read-write.
    pub const SCALE_WGSL: &str = include_str!("testing/scale.wgsl");
}

use std::sync::Arc;

/// A GPU buffer (storage, copy source and destination), owned by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BufferId(pub u32);

/// A compute pipeline built from WGSL source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PipelineId(pub u32);

/// What the engine needs to know about the adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterInfo {
    /// The adapter's name, e.g. "NVIDIA H100" or "llvmpipe (LLVM 15.0.6, 256 bits)".
    pub name: String,
    /// The API underneath: "vulkan", "metal", "dx12", "webgpu", ….
    pub backend: String,
    /// A CPU implementation (Mesa lavapipe, SwiftShader, WARP): correct but slower than amphi's
    /// own CPU kernels, so `Device::Auto` does not pick it.
    pub software: bool,
    /// `shader-f16` is available.
    pub shader_f16: bool,
    /// Largest storage buffer binding, in bytes.
    pub max_storage_binding: u64,
    /// Most invocations in one workgroup.
    pub max_workgroup_invocations: u32,
}

/// Per-instance limits a host puts on one guest's GPU use (the serverless host enforces them in
/// its `amphi_gpu` imports: a `create_buffer` or `create_pipeline` past a limit fails with a message in
/// `last_error`, and the instance keeps working once it frees buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuQuota {
    /// Buffers one instance may hold at once.
    pub max_buffers: u32,
    /// Bytes (sizes rounded up to 4) all of one instance's buffers may hold together.
    pub max_bytes: u64,
    /// Distinct pipelines one instance may create (pipelines are never destroyed).
    pub max_pipelines: u32,
}

impl Default for GpuQuota {
    /// 8,192 buffers, 4 GiB and 256 pipelines: a large text model on the GPU needs a few
    /// hundred buffers, about twice its weights in bytes, and ten kernels.
    fn default() -> Self {
        Self {
            max_buffers: 8192,
            max_bytes: 4 << 30,
            max_pipelines: 256,
        }
    }
}

/// The largest kernel parameter block [`GpuHost::dispatch`] takes.
pub const MAX_PARAMS_BYTES: usize = 256;

/// Errors of the GPU interface.
#[derive(Debug, thiserror::Error)]
pub enum GpuError {
    /// No adapter, or it could not be opened.
    #[error("no GPU available: {0}")]
    Unavailable(String),
    /// A WGSL kernel or its pipeline was rejected.
    #[error("GPU pipeline `{entry}`: {message}")]
    Pipeline {
        /// The kernel's entry point.
        entry: String,
        /// The compiler's message.
        message: String,
    },
    /// A buffer or pipeline handle that does not exist (or was destroyed).
    #[error("unknown GPU {what} handle {id}")]
    UnknownHandle {
        /// "buffer" or "pipeline".
        what: &'static str,
        /// The handle.
        id: u32,
    },
    /// Anything else the device reported (out of memory, a lost device, validation).
    #[error("GPU: {0}")]
    Device(String),
    /// The device did not finish the work a readback waits for in time (a hung or overloaded
    /// device); the context stays usable.
    #[error("GPU: the device did not finish within {0:?}")]
    Timeout(std::time::Duration),
}

/// The outcome of [`GpuHost::read_buffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readback {
    /// The bytes, read at once (native hosts, wasmtime).
    Ready(Vec<u8>),
    /// The host finishes the readback later (browsers): the engine returns to the host with this
    /// id and resumes when the bytes arrive (`amphi_resume` in `docs/abi.md`).
    Pending(u32),
}

impl Readback {
    /// The bytes, if the readback finished at once.
    pub fn ready(self) -> Option<Vec<u8>> {
        match self {
            Readback::Ready(bytes) => Some(bytes),
            Readback::Pending(_) => None,
        }
    }
}

/// The narrow GPU interface the engine runs on. Implemented by [`WgpuHost`] natively, and by
/// the artifact's imports (served by its host) inside `amphi.wasm`.
pub trait GpuHost: Send + Sync + std::fmt::Debug {
    /// The adapter.
    fn info(&self) -> &AdapterInfo;

    /// A zero-initialised buffer of `size` bytes (a multiple of 4).
    fn create_buffer(&self, size: u64) -> Result<BufferId, GpuError>;

    /// Writes bytes at `offset` (both multiples of 4), ordered after earlier dispatches.
    fn write_buffer(&self, buffer: BufferId, offset: u64, data: &[u8]) -> Result<(), GpuError>;

    /// Frees a buffer. Work already recorded that uses it still completes.
    fn destroy_buffer(&self, buffer: BufferId);

    /// Compiles a WGSL compute kernel; the same source and entry point give the same pipeline.
    fn create_pipeline(&self, wgsl: &str, entry_point: &str) -> Result<PipelineId, GpuError>;

    /// Records one dispatch: `params` is the uniform at binding 0 (at most
    /// [`MAX_PARAMS_BYTES`], padded to 16 bytes by the host), `buffers` the storage buffers at
    /// bindings 1, 2, ….
    fn dispatch(
        &self,
        pipeline: PipelineId,
        params: &[u8],
        buffers: &[BufferId],
        workgroups: [u32; 3],
    ) -> Result<(), GpuError>;

    /// Submits the recorded work and reads `size` bytes at `offset` back: at once, or (in a
    /// browser) later, after the engine has returned to its host.
    fn read_buffer(&self, buffer: BufferId, offset: u64, size: u64) -> Result<Readback, GpuError>;

    /// A new isolated context on the same device (see "Contexts" above), or `None` when this
    /// host cannot isolate its users (the default): then they share it.
    fn open_context(&self) -> Option<Arc<dyn GpuHost>> {
        None
    }
}
