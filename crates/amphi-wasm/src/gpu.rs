//! The `amphi_gpu` import module (ABI v2): the narrow GPU interface, served by the host (wgpu
//! natively in the serverless host, WebGPU in browsers). Every host provides these imports; a
//! host without a GPU answers `info` with -1. Sizes and offsets are u32; handles are ≥ 1.
//!
//! | import | signature | contract |
//! |---|---|---|
//! | `info` | `(ptr, cap) -> i32` | -1: no GPU. Else the length of the adapter JSON `{"name", "backend", "software", "shader_f16", "max_storage_binding", "max_workgroup_invocations"}`, written at `ptr` if it fits in `cap` |
//! | `create_buffer` | `(size) -> i32` | a zeroed storage buffer; 0 on failure |
//! | `write_buffer` | `(buffer, offset, ptr, len) -> i32` | 0, or -1 |
//! | `destroy_buffer` | `(buffer)` | |
//! | `create_pipeline` | `(wgsl_ptr, wgsl_len, entry_ptr, entry_len) -> i32` | a compute pipeline; 0 on failure |
//! | `dispatch` | `(pipeline, params_ptr, params_len, buffers_ptr, count, x, y, z) -> i32` | records a dispatch: `params` is the uniform at binding 0, `buffers` (`count` u32 handles) bindings 1…; 0, or -1 |
//! | `read_buffer` | `(buffer, offset, size, dst) -> i32` | 0: the bytes are at `dst`; 1: pending, the host writes them to `dst` later and then calls `amphi_resume`; -1 |
//! | `last_error` | `(ptr, cap) -> i32` | the message of the last failure (its length; written if it fits) |

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use amphi_core::gpu::{AdapterInfo, BufferId, GpuError, GpuHost, PipelineId, Readback};

#[cfg(target_arch = "wasm32")]
mod imports {
    #[link(wasm_import_module = "amphi_gpu")]
    unsafe extern "C" {
        pub fn info(ptr: *mut u8, cap: usize) -> i32;
        pub fn create_buffer(size: u32) -> u32;
        pub fn write_buffer(buffer: u32, offset: u32, ptr: *const u8, len: usize) -> i32;
        pub fn destroy_buffer(buffer: u32);
        pub fn create_pipeline(
            wgsl: *const u8,
            wgsl_len: usize,
            entry: *const u8,
            entry_len: usize,
        ) -> u32;
        #[allow(clippy::too_many_arguments)]
        pub fn dispatch(
            pipeline: u32,
            params: *const u8,
            params_len: usize,
            buffers: *const u32,
            count: usize,
            x: u32,
            y: u32,
            z: u32,
        ) -> i32;
        pub fn read_buffer(buffer: u32, offset: u32, size: u32, dst: *mut u8) -> i32;
        pub fn last_error(ptr: *mut u8, cap: usize) -> usize;
    }
}

/// Native builds of this crate (tests, lints) have no host: no GPU.
#[cfg(not(target_arch = "wasm32"))]
#[allow(clippy::missing_safety_doc, clippy::too_many_arguments)]
mod imports {
    pub unsafe fn info(_: *mut u8, _: usize) -> i32 {
        -1
    }
    pub unsafe fn create_buffer(_: u32) -> u32 {
        0
    }
    pub unsafe fn write_buffer(_: u32, _: u32, _: *const u8, _: usize) -> i32 {
        -1
    }
    pub unsafe fn destroy_buffer(_: u32) {}
    pub unsafe fn create_pipeline(_: *const u8, _: usize, _: *const u8, _: usize) -> u32 {
        0
    }
    pub unsafe fn dispatch(
        _: u32,
        _: *const u8,
        _: usize,
        _: *const u32,
        _: usize,
        _: u32,
        _: u32,
        _: u32,
    ) -> i32 {
        -1
    }
    pub unsafe fn read_buffer(_: u32, _: u32, _: u32, _: *mut u8) -> i32 {
        -1
    }
    pub unsafe fn last_error(_: *mut u8, _: usize) -> usize {
        0
    }
}

/// The host's GPU, reached through the `amphi_gpu` imports.
#[derive(Debug)]
pub struct ImportedGpu {
    info: AdapterInfo,
    /// Destinations of readbacks the host finishes later, by readback id.
    pending: Mutex<HashMap<u32, Vec<u8>>>,
    next_readback: Mutex<u32>,
}

#[derive(serde::Deserialize)]
struct InfoJson {
    name: String,
    backend: String,
    #[serde(default)]
    software: bool,
    #[serde(default)]
    shader_f16: bool,
    max_storage_binding: u64,
    max_workgroup_invocations: u32,
}

fn last_error() -> String {
    let mut buf = vec![0u8; 1024];
    // SAFETY: the host writes at most `cap` bytes into the buffer.
    let len = unsafe { imports::last_error(buf.as_mut_ptr(), buf.len()) };
    buf.truncate(len.min(1024));
    let message = String::from_utf8_lossy(&buf).into_owned();
    if message.is_empty() {
        "the host's GPU call failed".to_owned()
    } else {
        message
    }
}

fn u32_of(n: u64, what: &str) -> Result<u32, GpuError> {
    u32::try_from(n).map_err(|_| GpuError::Device(format!("{what} {n} exceeds 4 GiB")))
}

thread_local! {
    static GPU: Option<Arc<ImportedGpu>> = ImportedGpu::query();
}

/// The bytes of a finished pending readback.
pub fn take_readback(id: u32) -> Option<Vec<u8>> {
    GPU.with(|g| g.as_ref().and_then(|g| g.take_readback(id)))
}

impl ImportedGpu {
    /// The host's GPU, if it has one (asked once per instance).
    pub fn detect() -> Option<Arc<dyn GpuHost>> {
        GPU.with(|g| g.clone().map(|g| g as Arc<dyn GpuHost>))
    }

    fn query() -> Option<Arc<Self>> {
        let mut buf = vec![0u8; 4096];
        // SAFETY: the host writes at most `cap` bytes.
        let len = unsafe { imports::info(buf.as_mut_ptr(), buf.len()) };
        let len = usize::try_from(len).ok().filter(|&l| l <= buf.len())?;
        let info: InfoJson = serde_json::from_slice(&buf[..len]).ok()?;
        Some(Arc::new(Self {
            info: AdapterInfo {
                name: info.name,
                backend: info.backend,
                software: info.software,
                shader_f16: info.shader_f16,
                max_storage_binding: info.max_storage_binding,
                max_workgroup_invocations: info.max_workgroup_invocations,
            },
            pending: Mutex::default(),
            next_readback: Mutex::new(0),
        }))
    }

    fn take_readback(&self, id: u32) -> Option<Vec<u8>> {
        self.pending.lock().ok()?.remove(&id)
    }
}

impl GpuHost for ImportedGpu {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    fn create_buffer(&self, size: u64) -> Result<BufferId, GpuError> {
        // SAFETY: plain values.
        match unsafe { imports::create_buffer(u32_of(size, "buffer size")?) } {
            0 => Err(GpuError::Device(last_error())),
            id => Ok(BufferId(id)),
        }
    }

    fn write_buffer(&self, buffer: BufferId, offset: u64, data: &[u8]) -> Result<(), GpuError> {
        let offset = u32_of(offset, "offset")?;
        // SAFETY: the pointer and length describe `data` for the duration of the call.
        match unsafe { imports::write_buffer(buffer.0, offset, data.as_ptr(), data.len()) } {
            0 => Ok(()),
            _ => Err(GpuError::Device(last_error())),
        }
    }

    fn destroy_buffer(&self, buffer: BufferId) {
        // SAFETY: plain values.
        unsafe { imports::destroy_buffer(buffer.0) }
    }

    fn create_pipeline(&self, wgsl: &str, entry_point: &str) -> Result<PipelineId, GpuError> {
        // SAFETY: both strings are live for the duration of the call.
        let id = unsafe {
            imports::create_pipeline(
                wgsl.as_ptr(),
                wgsl.len(),
                entry_point.as_ptr(),
                entry_point.len(),
            )
        };
        match id {
            0 => Err(GpuError::Pipeline {
                entry: entry_point.to_owned(),
                message: last_error(),
            }),
            id => Ok(PipelineId(id)),
        }
    }

    fn dispatch(
        &self,
        pipeline: PipelineId,
        params: &[u8],
        buffers: &[BufferId],
        [x, y, z]: [u32; 3],
    ) -> Result<(), GpuError> {
        let handles: Vec<u32> = buffers.iter().map(|b| b.0).collect();
        // SAFETY: both slices are live for the duration of the call.
        let status = unsafe {
            imports::dispatch(
                pipeline.0,
                params.as_ptr(),
                params.len(),
                handles.as_ptr(),
                handles.len(),
                x,
                y,
                z,
            )
        };
        match status {
            0 => Ok(()),
            _ => Err(GpuError::Device(last_error())),
        }
    }

    fn read_buffer(&self, buffer: BufferId, offset: u64, size: u64) -> Result<Readback, GpuError> {
        let (offset, len) = (u32_of(offset, "offset")?, u32_of(size, "size")?);
        let mut dst = vec![0u8; len as usize];
        // SAFETY: `dst` holds `size` bytes; on status 1 it is kept alive (its heap buffer does not
        // move) until the host has written it and called `amphi_resume`.
        match unsafe { imports::read_buffer(buffer.0, offset, len, dst.as_mut_ptr()) } {
            0 => Ok(Readback::Ready(dst)),
            1 => {
                let mut next = self
                    .next_readback
                    .lock()
                    .map_err(|_| GpuError::Device("readback state poisoned".to_owned()))?;
                *next += 1;
                let id = *next;
                self.pending
                    .lock()
                    .map_err(|_| GpuError::Device("readback state poisoned".to_owned()))?
                    .insert(id, dst);
                Ok(Readback::Pending(id))
            }
            _ => Err(GpuError::Device(last_error())),
        }
    }
}
