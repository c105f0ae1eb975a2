//! The artifact's `amphi_gpu` imports (ABI v2, `docs/abi.md`) served with the host's GPU
//! (`amphi_gpu::WgpuHost`). Instances share the device; each may only touch the buffers it
//! created, and its buffers are freed with it (also when it trapped). Readbacks finish at once,
//! so this host never sees a pending `amphi_run`.

use std::collections::HashSet;
use std::sync::Arc;

use amphi_gpu::{BufferId, GpuHost, PipelineId, Readback};
use wasmtime::{Caller, Linker};

use crate::error::Error;
use crate::runtime::{HostState, guest_memory, wasm_err};

/// What one instance holds on the GPU.
#[derive(Default)]
pub(crate) struct GpuState {
    pub(crate) gpu: Option<Arc<dyn GpuHost>>,
    buffers: HashSet<u32>,
    last_error: String,
}

impl Drop for GpuState {
    fn drop(&mut self) {
        if let Some(gpu) = &self.gpu {
            for id in self.buffers.drain() {
                gpu.destroy_buffer(BufferId(id));
            }
        }
    }
}

impl GpuState {
    pub(crate) fn new(gpu: Option<Arc<dyn GpuHost>>) -> Self {
        Self {
            gpu,
            buffers: HashSet::new(),
            last_error: String::new(),
        }
    }

    fn gpu(&mut self) -> Result<Arc<dyn GpuHost>, String> {
        self.gpu
            .clone()
            .ok_or_else(|| "this host has no GPU".to_owned())
    }

    fn owned(&self, id: u32) -> Result<BufferId, String> {
        match self.buffers.contains(&id) {
            true => Ok(BufferId(id)),
            false => Err(format!("buffer {id} does not belong to this instance")),
        }
    }
}

/// Bytes `[ptr, ptr + len)` of guest memory.
fn read_guest(caller: &mut Caller<'_, HostState>, ptr: u32, len: u32) -> Result<Vec<u8>, String> {
    let memory = guest_memory(caller).ok_or("no guest memory")?;
    memory
        .data(&caller)
        .get(ptr as usize..(ptr as usize).saturating_add(len as usize))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| "a GPU call pointed outside guest memory".to_owned())
}

fn write_guest(caller: &mut Caller<'_, HostState>, ptr: u32, bytes: &[u8]) -> Result<(), String> {
    let memory = guest_memory(caller).ok_or("no guest memory")?;
    memory
        .data_mut(caller)
        .get_mut(ptr as usize..(ptr as usize).saturating_add(bytes.len()))
        .ok_or_else(|| "a GPU readback pointed outside guest memory".to_owned())?
        .copy_from_slice(bytes);
    Ok(())
}

/// Records a failure for `last_error`; returns `fallback`.
fn failed<T>(caller: &mut Caller<'_, HostState>, message: String, fallback: T) -> T {
    tracing::debug!(target: "amphi_gpu", "{message}");
    caller.data_mut().gpu.last_error = message;
    fallback
}

/// 0, or -1 with the message kept for `last_error`.
fn status(caller: &mut Caller<'_, HostState>, outcome: Result<(), String>) -> i32 {
    match outcome {
        Ok(()) => 0,
        Err(e) => failed(caller, e, -1),
    }
}

fn info_json(gpu: &dyn GpuHost) -> String {
    let info = gpu.info();
    serde_json::json!({
        "name": info.name,
        "backend": info.backend,
        "software": info.software,
        "shader_f16": info.shader_f16,
        "max_storage_binding": info.max_storage_binding,
        "max_workgroup_invocations": info.max_workgroup_invocations,
    })
    .to_string()
}

/// Adds the `amphi_gpu` functions to the linker.
pub(crate) fn add(linker: &mut Linker<HostState>) -> Result<(), Error> {
    linker
        .func_wrap(
            "amphi_gpu",
            "info",
            |mut caller: Caller<'_, HostState>, ptr: u32, cap: u32| -> i32 {
                let Some(gpu) = caller.data().gpu.gpu.clone() else {
                    return -1;
                };
                let json = info_json(&*gpu);
                if json.len() <= cap as usize
                    && let Err(e) = write_guest(&mut caller, ptr, json.as_bytes())
                {
                    return failed(&mut caller, e, -1);
                }
                i32::try_from(json.len()).unwrap_or(-1)
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "create_buffer",
            |mut caller: Caller<'_, HostState>, size: u32| -> u32 {
                let created = caller
                    .data_mut()
                    .gpu
                    .gpu()
                    .and_then(|g| g.create_buffer(u64::from(size)).map_err(|e| e.to_string()));
                match created {
                    Ok(id) => {
                        caller.data_mut().gpu.buffers.insert(id.0);
                        id.0
                    }
                    Err(e) => failed(&mut caller, e, 0),
                }
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "write_buffer",
            |mut caller: Caller<'_, HostState>,
             buffer: u32,
             offset: u32,
             ptr: u32,
             len: u32|
             -> i32 {
                let written = (|| {
                    let id = caller.data().gpu.owned(buffer)?;
                    let bytes = read_guest(&mut caller, ptr, len)?;
                    let gpu = caller.data_mut().gpu.gpu()?;
                    gpu.write_buffer(id, u64::from(offset), &bytes)
                        .map_err(|e| e.to_string())
                })();
                status(&mut caller, written)
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "destroy_buffer",
            |mut caller: Caller<'_, HostState>, buffer: u32| {
                let state = &mut caller.data_mut().gpu;
                if state.buffers.remove(&buffer)
                    && let Some(gpu) = &state.gpu
                {
                    gpu.destroy_buffer(BufferId(buffer));
                }
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "create_pipeline",
            |mut caller: Caller<'_, HostState>,
             src: u32,
             src_len: u32,
             entry: u32,
             entry_len: u32|
             -> u32 {
                let created = (|| {
                    let wgsl = String::from_utf8(read_guest(&mut caller, src, src_len)?)
                        .map_err(|_| "WGSL is not UTF-8".to_owned())?;
                    let entry = String::from_utf8(read_guest(&mut caller, entry, entry_len)?)
                        .map_err(|_| "entry point is not UTF-8".to_owned())?;
                    let gpu = caller.data_mut().gpu.gpu()?;
                    gpu.create_pipeline(&wgsl, &entry)
                        .map_err(|e| e.to_string())
                })();
                match created {
                    Ok(PipelineId(id)) => id,
                    Err(e) => failed(&mut caller, e, 0),
                }
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "dispatch",
            |mut caller: Caller<'_, HostState>,
             pipeline: u32,
             params: u32,
             params_len: u32,
             buffers: u32,
             count: u32,
             x: u32,
             y: u32,
             z: u32|
             -> i32 {
                let dispatched = (|| {
                    let params = read_guest(&mut caller, params, params_len)?;
                    let handles = read_guest(&mut caller, buffers, count.saturating_mul(4))?;
                    let ids = handles
                        .chunks_exact(4)
                        .map(|c| {
                            caller
                                .data()
                                .gpu
                                .owned(u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let gpu = caller.data_mut().gpu.gpu()?;
                    gpu.dispatch(PipelineId(pipeline), &params, &ids, [x, y, z])
                        .map_err(|e| e.to_string())
                })();
                status(&mut caller, dispatched)
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "read_buffer",
            |mut caller: Caller<'_, HostState>,
             buffer: u32,
             offset: u32,
             size: u32,
             dst: u32|
             -> i32 {
                let read = (|| {
                    let id = caller.data().gpu.owned(buffer)?;
                    let gpu = caller.data_mut().gpu.gpu()?;
                    match gpu
                        .read_buffer(id, u64::from(offset), u64::from(size))
                        .map_err(|e| e.to_string())?
                    {
                        Readback::Ready(bytes) => write_guest(&mut caller, dst, &bytes),
                        Readback::Pending(_) => {
                            Err("this host reads back synchronously".to_owned())
                        }
                    }
                })();
                status(&mut caller, read)
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "last_error",
            |mut caller: Caller<'_, HostState>, ptr: u32, cap: u32| -> u32 {
                let message = std::mem::take(&mut caller.data_mut().gpu.last_error);
                let bytes = message.as_bytes();
                let n = bytes.len().min(cap as usize);
                let _ = write_guest(&mut caller, ptr, &bytes[..n]);
                u32::try_from(bytes.len()).unwrap_or(u32::MAX)
            },
        )
        .map_err(wasm_err)?;
    Ok(())
}
