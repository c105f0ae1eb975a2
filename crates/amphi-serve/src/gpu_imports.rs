//! The artifact's `amphi_gpu` imports (ABI v2, `docs/abi.md`) served with the host's GPU
//! (`amphi_gpu::WgpuHost`). Instances share the device, each in a context of its own
//! ([`GpuHost::open_context`]): it may only touch the buffers it created, its recorded work and
//! its errors are its own (a bad dispatch never fails another instance's call), and its buffers
//! are freed with it (also when it trapped). Each instance's buffers are limited in number and
//! bytes ([`GpuQuota`]); a refusal is an ordinary failed call with a message in `last_error`.
//! Readbacks finish at once (or fail at the host's poll deadline), so this host never sees a
//! pending `amphi_run`; their destination in guest memory is checked before anything is read.
//!
//! Every import is a method of [`GpuState`] over the instance's linear memory (a byte slice):
//! the wasmtime functions in [`add`] and [`GpuImportHarness`] (tests, fuzzing) run the same code.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use amphi_gpu::{BufferId, GpuHost, GpuQuota, PipelineId, Readback};
use wasmtime::{Caller, Linker};

use crate::error::Error;
use crate::runtime::{HostState, Runtime, guest_memory, wasm_err};

/// What one instance holds on the GPU.
#[derive(Default)]
pub(crate) struct GpuState {
    pub(crate) gpu: Option<Arc<dyn GpuHost>>,
    /// The instance's buffers and their sizes.
    buffers: HashMap<u32, u64>,
    /// The distinct pipelines it created.
    pipelines: HashSet<u32>,
    quota: GpuQuota,
    last_error: String,
}

impl Drop for GpuState {
    fn drop(&mut self) {
        if let Some(gpu) = &self.gpu {
            for (id, _) in self.buffers.drain() {
                gpu.destroy_buffer(BufferId(id));
            }
        }
    }
}

/// Bytes `[ptr, ptr + len)` of guest memory.
fn guest(memory: &[u8], ptr: u32, len: u32) -> Result<&[u8], String> {
    memory
        .get(ptr as usize..(ptr as usize).saturating_add(len as usize))
        .ok_or_else(|| "a GPU call pointed outside guest memory".to_owned())
}

fn guest_mut(memory: &mut [u8], ptr: u32, len: usize) -> Result<&mut [u8], String> {
    memory
        .get_mut(ptr as usize..(ptr as usize).saturating_add(len))
        .ok_or_else(|| "a GPU readback pointed outside guest memory".to_owned())
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

impl GpuState {
    /// The state of a new instance: a context of its own on `gpu` where the host can isolate
    /// them (`WgpuHost` can), else `gpu` itself.
    pub(crate) fn new(gpu: Option<Arc<dyn GpuHost>>, quota: GpuQuota) -> Self {
        Self {
            gpu: gpu.map(|g| g.open_context().unwrap_or(g)),
            buffers: HashMap::new(),
            pipelines: HashSet::new(),
            quota,
            last_error: String::new(),
        }
    }

    fn gpu(&self) -> Result<Arc<dyn GpuHost>, String> {
        self.gpu
            .clone()
            .ok_or_else(|| "this host has no GPU".to_owned())
    }

    fn owned(&self, id: u32) -> Result<BufferId, String> {
        match self.buffers.contains_key(&id) {
            true => Ok(BufferId(id)),
            false => Err(format!("buffer {id} does not belong to this instance")),
        }
    }

    /// Whether one more buffer of `bytes` stays within the quota.
    fn within_quota(&self, bytes: u64) -> Result<(), String> {
        let (count, held) = (self.buffers.len(), self.buffers.values().sum::<u64>());
        if count >= self.quota.max_buffers as usize {
            return Err(format!(
                "GPU quota: this instance holds {count} buffers, the most it may (destroy some \
                 first)"
            ));
        }
        if held.saturating_add(bytes) > self.quota.max_bytes {
            return Err(format!(
                "GPU quota: a {bytes}-byte buffer would bring this instance to {} bytes, over \
                 its {} (destroy some first)",
                held.saturating_add(bytes),
                self.quota.max_bytes
            ));
        }
        Ok(())
    }

    /// Records a failure for `last_error`; returns `fallback`.
    fn failed<T>(&mut self, message: String, fallback: T) -> T {
        tracing::debug!(target: "amphi_gpu", "{message}");
        self.last_error = message;
        fallback
    }

    /// 0, or -1 with the message kept for `last_error`.
    fn status(&mut self, outcome: Result<(), String>) -> i32 {
        match outcome {
            Ok(()) => 0,
            Err(e) => self.failed(e, -1),
        }
    }

    /// `info(ptr, cap) -> i32`.
    fn info(&mut self, memory: &mut [u8], ptr: u32, cap: u32) -> i32 {
        let Some(gpu) = self.gpu.clone() else {
            return -1;
        };
        let json = info_json(&*gpu);
        if json.len() <= cap as usize {
            match guest_mut(memory, ptr, json.len()) {
                Ok(dst) => dst.copy_from_slice(json.as_bytes()),
                Err(e) => return self.failed(e, -1),
            }
        }
        i32::try_from(json.len()).unwrap_or(-1)
    }

    /// `create_buffer(size) -> u32`.
    fn create_buffer(&mut self, size: u32) -> u32 {
        let rounded = u64::from(size).max(4).next_multiple_of(4);
        let created = self.within_quota(rounded).and_then(|()| {
            self.gpu()?
                .create_buffer(u64::from(size))
                .map_err(|e| e.to_string())
        });
        match created {
            Ok(id) => {
                self.buffers.insert(id.0, rounded);
                id.0
            }
            Err(e) => self.failed(e, 0),
        }
    }

    /// `write_buffer(buffer, offset, ptr, len) -> i32`.
    fn write_buffer(&mut self, memory: &[u8], buffer: u32, offset: u32, ptr: u32, len: u32) -> i32 {
        let written = (|| {
            let id = self.owned(buffer)?;
            let bytes = guest(memory, ptr, len)?;
            self.gpu()?
                .write_buffer(id, u64::from(offset), bytes)
                .map_err(|e| e.to_string())
        })();
        self.status(written)
    }

    /// `destroy_buffer(buffer)`.
    fn destroy_buffer(&mut self, buffer: u32) {
        if self.buffers.remove(&buffer).is_some()
            && let Some(gpu) = &self.gpu
        {
            gpu.destroy_buffer(BufferId(buffer));
        }
    }

    /// `create_pipeline(src, src_len, entry, entry_len) -> u32`.
    fn create_pipeline(
        &mut self,
        memory: &[u8],
        src: u32,
        src_len: u32,
        entry: u32,
        entry_len: u32,
    ) -> u32 {
        let created = (|| {
            if self.pipelines.len() >= self.quota.max_pipelines as usize {
                return Err(format!(
                    "GPU quota: this instance created {} pipelines, the most it may",
                    self.pipelines.len()
                ));
            }
            let wgsl = std::str::from_utf8(guest(memory, src, src_len)?)
                .map_err(|_| "WGSL is not UTF-8".to_owned())?;
            let entry = std::str::from_utf8(guest(memory, entry, entry_len)?)
                .map_err(|_| "entry point is not UTF-8".to_owned())?;
            self.gpu()?
                .create_pipeline(wgsl, entry)
                .map_err(|e| e.to_string())
        })();
        match created {
            Ok(PipelineId(id)) => {
                self.pipelines.insert(id);
                id
            }
            Err(e) => self.failed(e, 0),
        }
    }

    /// `dispatch(pipeline, params, params_len, buffers, count, x, y, z) -> i32`.
    #[allow(clippy::too_many_arguments)]
    fn dispatch(
        &mut self,
        memory: &[u8],
        pipeline: u32,
        params: u32,
        params_len: u32,
        buffers: u32,
        count: u32,
        [x, y, z]: [u32; 3],
    ) -> i32 {
        let dispatched = (|| {
            let params = guest(memory, params, params_len)?;
            let handles = guest(memory, buffers, count.saturating_mul(4))?;
            let ids = handles
                .chunks_exact(4)
                .map(|c| self.owned(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                .collect::<Result<Vec<_>, _>>()?;
            self.gpu()?
                .dispatch(PipelineId(pipeline), params, &ids, [x, y, z])
                .map_err(|e| e.to_string())
        })();
        self.status(dispatched)
    }

    /// `read_buffer(buffer, offset, size, dst) -> i32`.
    fn read_buffer(
        &mut self,
        memory: &mut [u8],
        buffer: u32,
        offset: u32,
        size: u32,
        dst: u32,
    ) -> i32 {
        let read = (|| {
            let id = self.owned(buffer)?;
            // Where the bytes go is checked before anything is read back.
            let dst = guest_mut(memory, dst, size as usize)?;
            match self
                .gpu()?
                .read_buffer(id, u64::from(offset), u64::from(size))
                .map_err(|e| e.to_string())?
            {
                Readback::Ready(bytes) if bytes.len() == dst.len() => {
                    dst.copy_from_slice(&bytes);
                    Ok(())
                }
                Readback::Ready(bytes) => Err(format!(
                    "the GPU read back {} bytes, not the {size} asked for",
                    bytes.len()
                )),
                Readback::Pending(_) => Err("this host reads back synchronously".to_owned()),
            }
        })();
        self.status(read)
    }

    /// `last_error(ptr, cap) -> u32`.
    fn last_error(&mut self, memory: &mut [u8], ptr: u32, cap: u32) -> u32 {
        let message = std::mem::take(&mut self.last_error);
        let bytes = message.as_bytes();
        let n = bytes.len().min(cap as usize);
        if let Ok(dst) = guest_mut(memory, ptr, n) {
            dst.copy_from_slice(&bytes[..n]);
        }
        u32::try_from(bytes.len()).unwrap_or(u32::MAX)
    }
}

/// The instance's memory (empty if it exports none) and its GPU state.
fn split<'a>(caller: &'a mut Caller<'_, HostState>) -> (&'a mut [u8], &'a mut GpuState) {
    match guest_memory(caller) {
        Some(memory) => {
            let (data, host) = memory.data_and_store_mut(caller);
            (data, &mut host.gpu)
        }
        None => (&mut [], &mut caller.data_mut().gpu),
    }
}

/// Adds the `amphi_gpu` functions to the linker.
pub(crate) fn add(linker: &mut Linker<HostState>) -> Result<(), Error> {
    linker
        .func_wrap(
            "amphi_gpu",
            "info",
            |mut caller: Caller<'_, HostState>, ptr: u32, cap: u32| -> i32 {
                let (memory, gpu) = split(&mut caller);
                gpu.info(memory, ptr, cap)
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "create_buffer",
            |mut caller: Caller<'_, HostState>, size: u32| -> u32 {
                caller.data_mut().gpu.create_buffer(size)
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
                let (memory, gpu) = split(&mut caller);
                gpu.write_buffer(memory, buffer, offset, ptr, len)
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "destroy_buffer",
            |mut caller: Caller<'_, HostState>, buffer: u32| {
                caller.data_mut().gpu.destroy_buffer(buffer);
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
                let (memory, gpu) = split(&mut caller);
                gpu.create_pipeline(memory, src, src_len, entry, entry_len)
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
                let (memory, gpu) = split(&mut caller);
                gpu.dispatch(
                    memory,
                    pipeline,
                    params,
                    params_len,
                    buffers,
                    count,
                    [x, y, z],
                )
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
                let (memory, gpu) = split(&mut caller);
                gpu.read_buffer(memory, buffer, offset, size, dst)
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_gpu",
            "last_error",
            |mut caller: Caller<'_, HostState>, ptr: u32, cap: u32| -> u32 {
                let (memory, gpu) = split(&mut caller);
                gpu.last_error(memory, ptr, cap)
            },
        )
        .map_err(wasm_err)?;
    Ok(())
}

/// One instance's `amphi_gpu` imports over a plain byte vector standing in for its linear
/// memory: the same code the wasmtime imports run, for tests and fuzzing (`amphi-fuzz`). Not
/// part of the API.
#[doc(hidden)]
pub struct GpuImportHarness {
    state: GpuState,
    memory: Vec<u8>,
}

impl std::fmt::Debug for GpuImportHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuImportHarness")
            .field("buffers", &self.state.buffers.len())
            .field("memory", &self.memory.len())
            .finish_non_exhaustive()
    }
}

#[doc(hidden)]
#[allow(missing_docs, clippy::too_many_arguments)]
impl GpuImportHarness {
    pub fn memory(&self) -> &[u8] {
        &self.memory
    }
    pub fn memory_mut(&mut self) -> &mut [u8] {
        &mut self.memory
    }
    /// The buffers the instance holds, and their bytes.
    pub fn held(&self) -> (usize, u64) {
        (self.state.buffers.len(), self.state.buffers.values().sum())
    }
    pub fn info(&mut self, ptr: u32, cap: u32) -> i32 {
        self.state.info(&mut self.memory, ptr, cap)
    }
    pub fn create_buffer(&mut self, size: u32) -> u32 {
        self.state.create_buffer(size)
    }
    pub fn write_buffer(&mut self, buffer: u32, offset: u32, ptr: u32, len: u32) -> i32 {
        self.state
            .write_buffer(&self.memory, buffer, offset, ptr, len)
    }
    pub fn destroy_buffer(&mut self, buffer: u32) {
        self.state.destroy_buffer(buffer)
    }
    pub fn create_pipeline(&mut self, src: u32, src_len: u32, entry: u32, entry_len: u32) -> u32 {
        self.state
            .create_pipeline(&self.memory, src, src_len, entry, entry_len)
    }
    pub fn dispatch(
        &mut self,
        pipeline: u32,
        params: u32,
        params_len: u32,
        buffers: u32,
        count: u32,
        x: u32,
        y: u32,
        z: u32,
    ) -> i32 {
        self.state.dispatch(
            &self.memory,
            pipeline,
            params,
            params_len,
            buffers,
            count,
            [x, y, z],
        )
    }
    pub fn read_buffer(&mut self, buffer: u32, offset: u32, size: u32, dst: u32) -> i32 {
        self.state
            .read_buffer(&mut self.memory, buffer, offset, size, dst)
    }
    /// The last failure's message (the `last_error` import, read into a string).
    pub fn last_error(&mut self) -> String {
        std::mem::take(&mut self.state.last_error)
    }
}

impl Runtime {
    /// A stand-alone instance of the `amphi_gpu` imports with `memory_bytes` of zeroed guest
    /// memory, served by `gpu` the way [`Runtime::instantiate`] serves a guest's. For tests and
    /// fuzzing; not part of the API.
    #[doc(hidden)]
    pub fn gpu_import_harness(
        gpu: Option<Arc<dyn GpuHost>>,
        quota: GpuQuota,
        memory_bytes: usize,
    ) -> GpuImportHarness {
        GpuImportHarness {
            state: GpuState::new(gpu, quota),
            memory: vec![0; memory_bytes],
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use amphi_gpu::{AdapterInfo, GpuError, WgpuHost};

    use super::*;

    /// A GPU on the CPU: buffers are byte vectors, dispatches do nothing; counts readbacks.
    #[derive(Debug)]
    struct FakeGpu {
        info: AdapterInfo,
        buffers: Mutex<HashMap<u32, Vec<u8>>>,
        next: AtomicUsize,
        reads: AtomicUsize,
    }

    impl FakeGpu {
        fn new() -> Arc<Self> {
            Arc::new(Self {
                info: AdapterInfo {
                    name: "fake".into(),
                    backend: "none".into(),
                    software: true,
                    shader_f16: false,
                    max_storage_binding: 1 << 30,
                    max_workgroup_invocations: 256,
                },
                buffers: Mutex::default(),
                next: AtomicUsize::new(1),
                reads: AtomicUsize::new(0),
            })
        }
    }

    fn unknown(id: BufferId) -> GpuError {
        GpuError::UnknownHandle {
            what: "buffer",
            id: id.0,
        }
    }

    impl GpuHost for FakeGpu {
        fn info(&self) -> &AdapterInfo {
            &self.info
        }
        fn create_buffer(&self, size: u64) -> Result<BufferId, GpuError> {
            let id = self.next.fetch_add(1, Ordering::Relaxed) as u32;
            let size = size.max(4).next_multiple_of(4) as usize;
            self.buffers.lock().unwrap().insert(id, vec![0; size]);
            Ok(BufferId(id))
        }
        fn write_buffer(&self, id: BufferId, offset: u64, data: &[u8]) -> Result<(), GpuError> {
            let mut buffers = self.buffers.lock().unwrap();
            let b = buffers.get_mut(&id.0).ok_or(unknown(id))?;
            b.get_mut(offset as usize..offset as usize + data.len())
                .ok_or(GpuError::Device("out of range".into()))?
                .copy_from_slice(data);
            Ok(())
        }
        fn destroy_buffer(&self, id: BufferId) {
            self.buffers.lock().unwrap().remove(&id.0);
        }
        fn create_pipeline(&self, _: &str, _: &str) -> Result<PipelineId, GpuError> {
            Ok(PipelineId(1))
        }
        fn dispatch(
            &self,
            _: PipelineId,
            _: &[u8],
            _: &[BufferId],
            _: [u32; 3],
        ) -> Result<(), GpuError> {
            Ok(())
        }
        fn read_buffer(&self, id: BufferId, offset: u64, size: u64) -> Result<Readback, GpuError> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            let buffers = self.buffers.lock().unwrap();
            let b = buffers.get(&id.0).ok_or(unknown(id))?;
            Ok(Readback::Ready(
                b.get(offset as usize..(offset + size) as usize)
                    .ok_or(GpuError::Device("out of range".into()))?
                    .to_vec(),
            ))
        }
    }

    fn harness(gpu: Arc<dyn GpuHost>, quota: GpuQuota) -> GpuImportHarness {
        Runtime::gpu_import_harness(Some(gpu), quota, 1 << 16)
    }

    #[test]
    fn quota_refuses_then_recovers_after_freeing() {
        let quota = GpuQuota {
            max_buffers: 3,
            max_bytes: 1000,
            max_pipelines: 2,
        };
        let mut g = harness(FakeGpu::new(), quota);
        let a = g.create_buffer(400);
        let b = g.create_buffer(400);
        assert!(a != 0 && b != 0);
        // 400 more would make 1,200 bytes.
        assert_eq!(g.create_buffer(400), 0, "the byte quota refuses");
        let message = g.last_error();
        assert!(message.contains("quota"), "{message}");
        let c = g.create_buffer(100);
        assert_ne!(c, 0);
        assert_eq!(g.create_buffer(4), 0, "the buffer-count quota refuses");
        assert!(g.last_error().contains("quota"));
        assert_eq!(g.held(), (3, 900));
        // Freeing makes room again, and the instance's other buffers still work.
        g.destroy_buffer(a);
        let d = g.create_buffer(400);
        assert_ne!(d, 0, "{}", g.last_error());
        g.memory_mut()[..8].copy_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(g.write_buffer(b, 0, 0, 8), 0);
        assert_eq!(g.read_buffer(b, 0, 8, 64), 0);
        assert_eq!(&g.memory()[64..72], &[1, 2, 3, 4, 5, 6, 7, 8]);
        // A huge request counts as what it is (sizes round up to 4), without overflow.
        assert_eq!(g.create_buffer(u32::MAX), 0);
        // Pipelines too (the fake hands out one id: the same pipeline again is no new one).
        assert_ne!(g.create_pipeline(0, 4, 0, 4), 0);
        assert_ne!(g.create_pipeline(0, 4, 0, 4), 0);
        assert_eq!(g.held(), (3, 900));
    }

    #[test]
    fn readback_outside_guest_memory_is_refused_before_reading() {
        let gpu = FakeGpu::new();
        let mut g = harness(gpu.clone(), GpuQuota::default());
        let b = g.create_buffer(64);
        let end = g.memory().len() as u32;
        for dst in [end - 63, end, u32::MAX - 3] {
            assert_eq!(g.read_buffer(b, 0, 64, dst), -1);
            assert!(g.last_error().contains("outside guest memory"));
        }
        assert_eq!(
            gpu.reads.load(Ordering::Relaxed),
            0,
            "nothing was read back"
        );
        assert_eq!(g.read_buffer(b, 0, 64, end - 64), 0);
        assert_eq!(gpu.reads.load(Ordering::Relaxed), 1);
    }

    fn wgpu() -> Arc<dyn GpuHost> {
        static GPU: std::sync::OnceLock<Arc<WgpuHost>> = std::sync::OnceLock::new();
        GPU.get_or_init(|| {
            Arc::new(WgpuHost::new().unwrap_or_else(|e| {
                panic!(
                    "GPU import tests need a GPU adapter (in CI: Mesa lavapipe, \
                     apt-get install mesa-vulkan-drivers): {e}"
                )
            }))
        })
        .clone()
    }

    const SCALE: &str = amphi_gpu::testing::SCALE_WGSL;

    /// Puts `bytes` into guest memory at `at`.
    fn put(g: &mut GpuImportHarness, at: u32, bytes: &[u8]) -> (u32, u32) {
        g.memory_mut()[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
        (at, bytes.len() as u32)
    }

    fn pipeline(g: &mut GpuImportHarness) -> u32 {
        let (src, src_len) = put(g, 0, SCALE.as_bytes());
        let (entry, entry_len) = put(g, 4096, b"scale");
        let id = g.create_pipeline(src, src_len, entry, entry_len);
        assert_ne!(id, 0, "{}", g.last_error());
        id
    }

    fn f32s(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Dispatches `scale` with factor `k` over `n` floats, with `x` workgroups.
    fn scale(g: &mut GpuImportHarness, pipe: u32, k: f32, n: u32, bufs: [u32; 2], x: u32) -> i32 {
        let mut params = f32s(&[k]);
        params.extend(n.to_le_bytes());
        params.extend([0; 8]);
        let (pp, pl) = put(g, 8192, &params);
        let handles: Vec<u8> = bufs.iter().flat_map(|b| b.to_le_bytes()).collect();
        let (hp, _) = put(g, 8448, &handles);
        g.dispatch(pipe, pp, pl, hp, 2, x, 1, 1)
    }

    #[test]
    fn a_bad_dispatch_never_fails_another_instances_readback() {
        let gpu = wgpu();
        let (mut a, mut b) = (
            harness(gpu.clone(), GpuQuota::default()),
            harness(gpu.clone(), GpuQuota::default()),
        );
        let n = 256u32;
        let input: Vec<f32> = (0..n).map(|i| i as f32).collect();
        let (pa, pb) = (pipeline(&mut a), pipeline(&mut b));
        let (src_a, dst_a) = (a.create_buffer(n * 4), a.create_buffer(n * 4));
        let (src_b, dst_b) = (b.create_buffer(n * 4), b.create_buffer(n * 4));
        let (ptr, len) = put(&mut a, 16384, &f32s(&input));
        assert_eq!(a.write_buffer(src_a, 0, ptr, len), 0);
        let (ptr, len) = put(&mut b, 16384, &f32s(&input));
        assert_eq!(b.write_buffer(src_b, 0, ptr, len), 0);

        assert_eq!(scale(&mut a, pa, 2.0, n, [src_a, dst_a], 4), 0);
        // Too many workgroups (the limit is 65,535 per dimension): invalid, whenever the host
        // notices it. It must not take `a`'s recorded work or its readback down with it.
        let bad = scale(&mut b, pb, 3.0, n, [src_b, dst_b], 1 << 20);
        assert_eq!(scale(&mut a, pa, 2.0, n, [dst_a, src_a], 4), 0);
        assert_eq!(
            a.read_buffer(src_a, 0, n * 4, 32768),
            0,
            "{}",
            a.last_error()
        );
        let want: Vec<f32> = input.iter().map(|x| x * 4.0).collect();
        assert_eq!(&a.memory()[32768..32768 + n as usize * 4], &f32s(&want)[..]);

        // `b` hears of its own error (at the dispatch, or at the latest at its readback), and
        // keeps working afterwards.
        let read = b.read_buffer(dst_b, 0, n * 4, 32768);
        assert!(bad == -1 || read == -1, "b's bad dispatch went unreported");
        assert_eq!(scale(&mut b, pb, 3.0, n, [src_b, dst_b], 4), 0);
        assert_eq!(
            b.read_buffer(dst_b, 0, n * 4, 32768),
            0,
            "{}",
            b.last_error()
        );
        let want: Vec<f32> = input.iter().map(|x| x * 3.0).collect();
        assert_eq!(&b.memory()[32768..32768 + n as usize * 4], &f32s(&want)[..]);
        // And `a` still reads back too.
        assert_eq!(a.read_buffer(dst_a, 0, 16, 0), 0, "{}", a.last_error());
    }

    #[test]
    fn instances_see_only_their_own_buffers() {
        let gpu = wgpu();
        let (mut a, mut b) = (
            harness(gpu.clone(), GpuQuota::default()),
            harness(gpu.clone(), GpuQuota::default()),
        );
        let buffer = a.create_buffer(16);
        assert_eq!(b.read_buffer(buffer, 0, 16, 0), -1);
        assert!(b.last_error().contains("does not belong"));
        b.destroy_buffer(buffer);
        assert_eq!(a.read_buffer(buffer, 0, 16, 0), 0, "{}", a.last_error());
    }
}
