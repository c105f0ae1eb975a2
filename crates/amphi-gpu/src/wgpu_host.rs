//! [`GpuHost`] on `wgpu`: one device and queue shared by any number of [`WgpuContext`]s.
//!
//! A context is what one guest instance (or the engine in-process) works in: its buffers, its
//! recorded work and its errors are its own. Every dispatch, clear and copy is encoded into a
//! command buffer of its own and validated at once, inside the calling thread's error scopes, so
//! a bad command fails the call that made it and nothing else; the context's command buffers are
//! submitted together at its next readback (or a write that must not overtake them). Kernel
//! parameters of the recorded dispatches go into the context's uniform ring, written once per
//! submit: a dispatch creates no buffer of its own.
//!
//! Freed buffers go to a pool shared by the device, keyed by size class (four classes per power
//! of two) and capped in bytes and in count ([`WgpuConfig`]); the oldest are released first.
//! Pipelines are compiled once per device, up to a cap; beyond it a context keeps its own.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::{AdapterInfo, BufferId, GpuError, GpuHost, MAX_PARAMS_BYTES, PipelineId, Readback};

/// Settings of a [`WgpuHost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WgpuConfig {
    /// Bytes of freed buffers kept for reuse, across all contexts (default 256 MiB).
    pub pool_bytes: u64,
    /// Freed buffers kept for reuse (default 1,024).
    pub pool_buffers: usize,
    /// How long a readback waits for the device before failing with [`GpuError::Timeout`]
    /// (default 60 s; natively only: a browser's readbacks finish on its event loop).
    pub poll_timeout: Duration,
}

impl Default for WgpuConfig {
    fn default() -> Self {
        Self {
            pool_bytes: 256 << 20,
            pool_buffers: 1024,
            poll_timeout: Duration::from_secs(60),
        }
    }
}

/// Pipelines the device keeps for every context (a context keeps the ones beyond these).
const MAX_SHARED_PIPELINES: usize = 256;
/// Bytes of WGSL source the device-wide pipeline cache keys may hold together.
const MAX_SHARED_SOURCE: usize = 16 << 20;

/// Size of a context's parameter ring: room for 1,024 dispatches between submits at 256-byte
/// alignment.
const PARAMS_RING: u64 = 256 * 1024;

/// The size class of a buffer of `size` bytes: four classes per power of two (a pooled buffer
/// serves a request of its class that it is large enough for).
fn size_class(size: u64) -> u64 {
    let step = (size.next_power_of_two() / 8).max(16);
    size.next_multiple_of(step)
}

/// Freed buffers, oldest first.
#[derive(Default)]
struct Pool {
    free: VecDeque<(u64, wgpu::Buffer)>,
    bytes: u64,
}

impl Pool {
    /// A pooled buffer of `size`'s class holding at least `size` bytes (the newest such).
    fn take(&mut self, size: u64) -> Option<wgpu::Buffer> {
        let class = size_class(size);
        let i = self
            .free
            .iter()
            .rposition(|(c, b)| *c == class && b.size() >= size)?;
        let (_, buffer) = self.free.remove(i)?;
        self.bytes -= buffer.size();
        Some(buffer)
    }

    /// Keeps `buffer` for reuse, releasing the oldest ones past the caps.
    fn put(&mut self, buffer: wgpu::Buffer, config: &WgpuConfig) {
        if buffer.size() > config.pool_bytes || config.pool_buffers == 0 {
            return;
        }
        self.bytes += buffer.size();
        self.free.push_back((size_class(buffer.size()), buffer));
        while self.bytes > config.pool_bytes || self.free.len() > config.pool_buffers {
            match self.free.pop_front() {
                Some((_, old)) => self.bytes -= old.size(),
                None => break,
            }
        }
    }
}

#[derive(Default)]
struct Pipelines {
    by_id: HashMap<u32, wgpu::ComputePipeline>,
    /// (source, entry point) → pipeline, so a kernel compiles once per device.
    by_source: HashMap<(String, String), u32>,
    source_bytes: usize,
}

/// What the contexts of one device share.
struct Shared {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfo,
    config: WgpuConfig,
    /// Alignment of uniform-binding offsets in a parameter ring.
    params_align: u64,
    /// Largest workgroup count per dimension.
    max_workgroups: u32,
    next_id: AtomicU32,
    pipelines: Mutex<Pipelines>,
    pool: Mutex<Pool>,
    /// Why the device was lost, once it was: every call fails from then on.
    lost: Arc<Mutex<Option<String>>>,
    /// Errors wgpu reported outside any error scope. Natively every call runs inside scopes, so
    /// these are not any context's; in a browser (one instance per host) scopes resolve
    /// asynchronously, so errors are collected here and reported at the next call.
    uncaptured: Arc<Mutex<Option<String>>>,
}

fn device_err(e: impl std::fmt::Display) -> GpuError {
    GpuError::Device(e.to_string())
}

fn poisoned() -> GpuError {
    device_err("GPU state poisoned by an earlier panic")
}

fn unknown_buffer(id: BufferId) -> GpuError {
    GpuError::UnknownHandle {
        what: "buffer",
        id: id.0,
    }
}

/// Adapters that are a CPU underneath, whatever type they report (WebGPU hides the type).
fn software(info: &wgpu::AdapterInfo) -> bool {
    let name = format!("{} {}", info.name, info.driver).to_lowercase();
    info.device_type == wgpu::DeviceType::Cpu
        || [
            "swiftshader",
            "llvmpipe",
            "lavapipe",
            "basic render",
            "warp",
        ]
        .iter()
        .any(|s| name.contains(s))
}

impl Shared {
    fn id(&self) -> Result<u32, GpuError> {
        self.next_id
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map(|n| n + 1)
            .map_err(|_| device_err("GPU handles exhausted"))
    }

    fn alive(&self) -> Result<(), GpuError> {
        match self.lost.lock().ok().and_then(|l| l.clone()) {
            Some(reason) => Err(device_err(format!("the GPU device was lost: {reason}"))),
            None => Ok(()),
        }
    }

    /// Runs `f` inside out-of-memory, validation and internal error scopes (thread-local: other
    /// threads' calls do not land in them), so that what `f` does wrong is its caller's error.
    #[cfg(not(target_arch = "wasm32"))]
    fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        self.alive()?;
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        let i = pollster::block_on(internal.pop());
        match v.or(o).or(i) {
            Some(e) => Err(device_err(e)),
            None => Ok(out),
        }
    }

    /// In a browser error scopes resolve asynchronously: errors are collected by the uncaptured
    /// handler and reported at the next call.
    #[cfg(target_arch = "wasm32")]
    fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        self.alive()?;
        let out = f();
        match self.uncaptured.lock().ok().and_then(|mut e| e.take()) {
            Some(e) => Err(device_err(e)),
            None => Ok(out),
        }
    }

    fn encoder(&self) -> wgpu::CommandEncoder {
        self.device
            .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
    }

    fn pipeline(&self, id: PipelineId) -> Option<wgpu::ComputePipeline> {
        self.pipelines.lock().ok()?.by_id.get(&id.0).cloned()
    }
}

/// A buffer of a context: the wgpu buffer (maybe larger, when it came from the pool) and the
/// size the context asked for, which is all it can see.
struct Slot {
    buffer: wgpu::Buffer,
    size: u64,
}

/// A readback in flight: the staging buffer and the outcome of its `map_async`.
struct PendingRead {
    staging: wgpu::Buffer,
    size: u64,
    mapped: futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
    /// The submission that holds the copy (what a native readback waits for).
    #[cfg_attr(target_arch = "wasm32", allow(dead_code))]
    submission: Option<wgpu::SubmissionIndex>,
}

#[derive(Default)]
struct Context {
    buffers: HashMap<u32, Slot>,
    /// Pipelines past the device-wide cache's cap.
    pipelines: HashMap<u32, wgpu::ComputePipeline>,
    /// Validated command buffers not yet submitted, in order.
    recorded: Vec<wgpu::CommandBuffer>,
    /// Their parameters, at the offsets their bind groups name in `ring`.
    params: Vec<u8>,
    ring: Option<wgpu::Buffer>,
    readbacks: HashMap<u32, PendingRead>,
    /// An error of a submit that no caller could be told of at once (`destroy_buffer`).
    deferred: Option<String>,
}

/// One isolated context on a [`WgpuHost`]'s device (see [`GpuHost::open_context`]): its own
/// buffers, recorded work, parameter ring and error capture. Dropping it discards its
/// unsubmitted work and returns its buffers to the device's pool.
pub struct WgpuContext {
    shared: Arc<Shared>,
    state: Mutex<Context>,
}

impl std::fmt::Debug for WgpuContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuContext")
            .field("adapter", &self.shared.info.name)
            .finish_non_exhaustive()
    }
}

impl Drop for WgpuContext {
    fn drop(&mut self) {
        let Ok(state) = self.state.get_mut() else {
            return;
        };
        // Never submitted, so nothing on the device still uses the buffers for them; work
        // already submitted is ordered before whatever a later user of a pooled buffer submits.
        state.recorded.clear();
        if let Ok(mut pool) = self.shared.pool.lock() {
            for (_, slot) in state.buffers.drain() {
                pool.put(slot.buffer, &self.shared.config);
            }
        }
    }
}

impl WgpuContext {
    fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> Result<MutexGuard<'_, Context>, GpuError> {
        self.state.lock().map_err(|_| poisoned())
    }

    /// Fails with the error of an earlier background submit, once.
    fn check_deferred(state: &mut Context) -> Result<(), GpuError> {
        match state.deferred.take() {
            Some(e) => Err(device_err(e)),
            None => Ok(()),
        }
    }

    /// Encodes `record` into a command buffer of its own and validates it now; on success it
    /// joins the recorded work.
    fn record(
        &self,
        state: &mut Context,
        record: impl FnOnce(&mut wgpu::CommandEncoder),
    ) -> Result<(), GpuError> {
        let command = self.shared.scoped(|| {
            let mut encoder = self.shared.encoder();
            record(&mut encoder);
            encoder.finish()
        })?;
        state.recorded.push(command);
        Ok(())
    }

    /// Submits what is recorded, after writing the parameters its dispatches read. (Queue
    /// writes land before the next submission and after the earlier ones, so reusing the ring
    /// cannot change what submitted work reads.)
    fn submit(&self, state: &mut Context) -> Result<Option<wgpu::SubmissionIndex>, GpuError> {
        if state.recorded.is_empty() {
            return Ok(None);
        }
        let commands = std::mem::take(&mut state.recorded);
        let params = std::mem::take(&mut state.params);
        let shared = &self.shared;
        let ring = state.ring.as_ref();
        shared
            .scoped(|| {
                if let (Some(ring), false) = (ring, params.is_empty()) {
                    shared.queue.write_buffer(ring, 0, &params);
                }
                shared.queue.submit(commands)
            })
            .map(Some)
    }

    fn slot(state: &Context, id: BufferId) -> Result<&Slot, GpuError> {
        state.buffers.get(&id.0).ok_or(unknown_buffer(id))
    }

    /// Copies the range into a staging buffer, submits everything recorded and asks for the
    /// mapping. Returns the readback's id for [`WgpuContext::finish_read`].
    fn start_read(&self, id: BufferId, offset: u64, size: u64) -> Result<u32, GpuError> {
        let padded = size.max(4).next_multiple_of(4);
        let mut state = self.state()?;
        Self::check_deferred(&mut state)?;
        let source = Self::slot(&state, id)?;
        if !offset.is_multiple_of(4) || offset.saturating_add(padded) > source.size {
            return Err(device_err(format!(
                "read of {size} bytes at {offset} from a {}-byte buffer (offsets are multiples of 4)",
                source.size
            )));
        }
        let source = source.buffer.clone();
        let shared = &self.shared;
        let staging = shared.scoped(|| {
            shared.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("readback"),
                size: padded,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        self.record(&mut state, |encoder| {
            encoder.copy_buffer_to_buffer(&source, offset, &staging, 0, padded);
        })?;
        let submission = self.submit(&mut state)?;
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        let readback = shared.id()?;
        state.readbacks.insert(
            readback,
            PendingRead {
                staging,
                size,
                mapped: rx,
                submission,
            },
        );
        Ok(readback)
    }

    fn take_read(&self, readback: u32) -> Result<PendingRead, GpuError> {
        self.state()?
            .readbacks
            .remove(&readback)
            .ok_or(GpuError::UnknownHandle {
                what: "readback",
                id: readback,
            })
    }

    /// The bytes of a mapped readback.
    fn mapped_bytes(pending: &PendingRead) -> Result<Vec<u8>, GpuError> {
        let mut bytes = pending
            .staging
            .slice(..)
            .get_mapped_range()
            .map_err(device_err)?
            .to_vec();
        pending.staging.unmap();
        bytes.truncate(pending.size as usize);
        Ok(bytes)
    }

    /// Waits for a readback started by [`GpuHost::read_buffer`] (which answered
    /// [`Readback::Pending`] in a browser) and returns its bytes.
    pub async fn finish_read(&self, readback: u32) -> Result<Vec<u8>, GpuError> {
        let mut pending = self.take_read(readback)?;
        let mapped = (&mut pending.mapped)
            .await
            .map_err(|_| device_err("the readback was dropped"))?;
        self.shared.scoped(|| ())?;
        mapped.map_err(device_err)?;
        Self::mapped_bytes(&pending)
    }

    /// Natively: wait (at most the configured timeout) for the submission that holds the copy,
    /// then the mapping has completed.
    #[cfg(not(target_arch = "wasm32"))]
    fn read_now(&self, readback: u32) -> Result<Readback, GpuError> {
        let mut pending = self.take_read(readback)?;
        let timeout = self.shared.config.poll_timeout;
        let wait = wgpu::PollType::Wait {
            submission_index: pending.submission.take(),
            timeout: Some(timeout),
        };
        match self.shared.device.poll(wait) {
            Ok(_) => {}
            Err(wgpu::PollError::Timeout) => return Err(GpuError::Timeout(timeout)),
            Err(e) => return Err(device_err(e)),
        }
        // The submission is done, but its mapping callback runs in whichever thread polls
        // next: ours, or another instance's that is between taking the completed work and
        // running its callbacks. Poll until the callback has run, within the same timeout.
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match pending.mapped.try_recv() {
                Ok(Some(mapped)) => {
                    mapped.map_err(device_err)?;
                    break;
                }
                Ok(None) if std::time::Instant::now() < deadline => {
                    let _ = self.shared.device.poll(wgpu::PollType::Poll);
                    std::thread::yield_now();
                }
                Ok(None) => return Err(GpuError::Timeout(timeout)),
                Err(_) => return Err(device_err("the readback was dropped")),
            }
        }
        Self::mapped_bytes(&pending).map(Readback::Ready)
    }

    /// In a browser the mapping completes on the event loop: the caller awaits
    /// [`WgpuContext::finish_read`].
    #[cfg(target_arch = "wasm32")]
    fn read_now(&self, readback: u32) -> Result<Readback, GpuError> {
        Ok(Readback::Pending(readback))
    }
}

impl GpuHost for WgpuContext {
    fn info(&self) -> &AdapterInfo {
        &self.shared.info
    }

    fn create_buffer(&self, size: u64) -> Result<BufferId, GpuError> {
        let size = size.max(4).next_multiple_of(4);
        let shared = &self.shared;
        let reused = shared.pool.lock().map_err(|_| poisoned())?.take(size);
        let mut state = self.state()?;
        let buffer = match reused {
            Some(buffer) => {
                // Zeroed like a new one, ordered before anything this context records next.
                self.record(&mut state, |encoder| {
                    encoder.clear_buffer(&buffer, 0, Some(size));
                })?;
                buffer
            }
            None => shared.scoped(|| {
                shared.device.create_buffer(&wgpu::BufferDescriptor {
                    label: None,
                    size,
                    usage: wgpu::BufferUsages::STORAGE
                        | wgpu::BufferUsages::COPY_SRC
                        | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?,
        };
        let id = shared.id()?;
        state.buffers.insert(id, Slot { buffer, size });
        Ok(BufferId(id))
    }

    fn write_buffer(&self, id: BufferId, offset: u64, data: &[u8]) -> Result<(), GpuError> {
        let mut state = self.state()?;
        Self::check_deferred(&mut state)?;
        let slot = Self::slot(&state, id)?;
        let len = data.len() as u64;
        if !offset.is_multiple_of(4)
            || !len.is_multiple_of(4)
            || offset.saturating_add(len) > slot.size
        {
            return Err(device_err(format!(
                "write of {len} bytes at {offset} into a {}-byte buffer (offset and length are \
                 multiples of 4)",
                slot.size
            )));
        }
        if data.is_empty() {
            return Ok(());
        }
        // Queue writes land before the next submitted command buffer: submit what is recorded
        // so that this write cannot overtake a dispatch that reads the old contents.
        self.submit(&mut state)?;
        let slot = Self::slot(&state, id)?;
        let shared = &self.shared;
        shared.scoped(|| shared.queue.write_buffer(&slot.buffer, offset, data))
    }

    fn destroy_buffer(&self, id: BufferId) {
        let Ok(mut state) = self.state() else {
            return;
        };
        let Some(slot) = state.buffers.remove(&id.0) else {
            return;
        };
        // Work recorded with the buffer goes to the queue before the buffer can go to another
        // context, so that it cannot run after that context's.
        if let Err(e) = self.submit(&mut state) {
            state.deferred.get_or_insert(e.to_string());
        }
        if let Ok(mut pool) = self.shared.pool.lock() {
            pool.put(slot.buffer, &self.shared.config);
        }
    }

    fn create_pipeline(&self, wgsl: &str, entry_point: &str) -> Result<PipelineId, GpuError> {
        let shared = &self.shared;
        let key = (wgsl.to_owned(), entry_point.to_owned());
        if let Some(&id) = shared
            .pipelines
            .lock()
            .map_err(|_| poisoned())?
            .by_source
            .get(&key)
        {
            return Ok(PipelineId(id));
        }
        let pipeline = shared
            .scoped(|| {
                let module = shared
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(entry_point),
                        source: wgpu::ShaderSource::Wgsl(wgsl.into()),
                    });
                shared
                    .device
                    .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                        label: Some(entry_point),
                        layout: None,
                        module: &module,
                        entry_point: Some(entry_point),
                        compilation_options: Default::default(),
                        cache: None,
                    })
            })
            .map_err(|e| GpuError::Pipeline {
                entry: entry_point.to_owned(),
                message: e.to_string(),
            })?;
        let mut pipelines = shared.pipelines.lock().map_err(|_| poisoned())?;
        if let Some(&id) = pipelines.by_source.get(&key) {
            // Another context compiled it meanwhile.
            return Ok(PipelineId(id));
        }
        let id = shared.id()?;
        let source = key.0.len() + key.1.len();
        if pipelines.by_id.len() < MAX_SHARED_PIPELINES
            && pipelines.source_bytes + source <= MAX_SHARED_SOURCE
        {
            pipelines.by_id.insert(id, pipeline);
            pipelines.by_source.insert(key, id);
            pipelines.source_bytes += source;
        } else {
            drop(pipelines);
            self.state()?.pipelines.insert(id, pipeline);
        }
        Ok(PipelineId(id))
    }

    fn dispatch(
        &self,
        pipeline: PipelineId,
        params: &[u8],
        buffers: &[BufferId],
        workgroups: [u32; 3],
    ) -> Result<(), GpuError> {
        let shared = &self.shared;
        if params.len() > MAX_PARAMS_BYTES {
            return Err(device_err(format!(
                "{} bytes of kernel parameters (at most {MAX_PARAMS_BYTES})",
                params.len()
            )));
        }
        if workgroups.iter().any(|&n| n > shared.max_workgroups) {
            return Err(device_err(format!(
                "{workgroups:?} workgroups (at most {} per dimension)",
                shared.max_workgroups
            )));
        }
        let mut state = self.state()?;
        Self::check_deferred(&mut state)?;
        let compute = match state.pipelines.get(&pipeline.0) {
            Some(p) => p.clone(),
            None => shared.pipeline(pipeline).ok_or(GpuError::UnknownHandle {
                what: "pipeline",
                id: pipeline.0,
            })?,
        };
        let size = (params.len() as u64).max(16).next_multiple_of(16);
        let slot = size.next_multiple_of(shared.params_align);
        if state.params.len() as u64 + slot > PARAMS_RING {
            self.submit(&mut state)?;
        }
        if state.ring.is_none() {
            state.ring = Some(shared.scoped(|| {
                shared.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kernel parameters"),
                    size: PARAMS_RING,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                })
            })?);
        }
        let offset = state.params.len() as u64;
        let bind_group = {
            let ring = state.ring.as_ref().ok_or_else(|| device_err("no ring"))?;
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: ring,
                    offset,
                    size: std::num::NonZeroU64::new(size),
                }),
            }];
            for (i, &id) in buffers.iter().enumerate() {
                let slot = Self::slot(&state, id)?;
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    // Only the bytes the context asked for, even of a larger pooled buffer.
                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                        buffer: &slot.buffer,
                        offset: 0,
                        size: std::num::NonZeroU64::new(slot.size),
                    }),
                });
            }
            shared.scoped(|| {
                shared.device.create_bind_group(&wgpu::BindGroupDescriptor {
                    label: None,
                    layout: &compute.get_bind_group_layout(0),
                    entries: &entries,
                })
            })?
        };
        self.record(&mut state, |encoder| {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&compute);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        })?;
        state.params.extend_from_slice(params);
        state.params.resize((offset + slot) as usize, 0);
        Ok(())
    }

    fn read_buffer(&self, id: BufferId, offset: u64, size: u64) -> Result<Readback, GpuError> {
        let readback = self.start_read(id, offset, size)?;
        self.read_now(readback)
    }

    fn open_context(&self) -> Option<Arc<dyn GpuHost>> {
        Some(Arc::new(WgpuContext::new(self.shared.clone())))
    }
}

/// The wgpu implementation of the GPU interface: the device, and a context of its own that
/// serves the [`GpuHost`] calls made on it directly (the engine in-process, a browser's single
/// instance). [`GpuHost::open_context`] gives each further user an isolated context.
pub struct WgpuHost {
    shared: Arc<Shared>,
    main: WgpuContext,
}

impl std::fmt::Debug for WgpuHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuHost")
            .field("info", &self.shared.info)
            .field("config", &self.shared.config)
            .finish_non_exhaustive()
    }
}

impl WgpuHost {
    /// Opens the preferred adapter (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and friends are
    /// honoured). Fails with [`GpuError::Unavailable`] when there is none.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self, GpuError> {
        Self::with_config(WgpuConfig::default())
    }

    /// [`WgpuHost::new`] with other settings.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn with_config(config: WgpuConfig) -> Result<Self, GpuError> {
        pollster::block_on(Self::new_async_with(config))
    }

    /// [`WgpuHost::new`] without blocking (browsers).
    pub async fn new_async() -> Result<Self, GpuError> {
        Self::new_async_with(WgpuConfig::default()).await
    }

    /// [`WgpuHost::with_config`] without blocking.
    pub async fn new_async_with(config: WgpuConfig) -> Result<Self, GpuError> {
        let instance =
            wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions {
                power_preference: wgpu::PowerPreference::HighPerformance,
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Unavailable(e.to_string()))?;
        let raw = adapter.get_info();
        // Browsers: the defaults (some lack newer limit fields); natively: all the adapter has.
        let limits = if cfg!(target_arch = "wasm32") {
            wgpu::Limits::default()
        } else {
            adapter.limits()
        };
        let f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("amphi"),
                required_features: if f16 {
                    wgpu::Features::SHADER_F16
                } else {
                    wgpu::Features::empty()
                },
                required_limits: limits.clone(),
                ..Default::default()
            })
            .await
            .map_err(|e| GpuError::Unavailable(e.to_string()))?;
        let uncaptured: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));
        let lost: Arc<Mutex<Option<String>>> = Arc::default();
        let sink = lost.clone();
        device.set_device_lost_callback(move |reason, message| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| format!("{reason:?}: {message}"));
            }
        });
        let info = AdapterInfo {
            name: raw.name.clone(),
            backend: raw.backend.to_string(),
            software: software(&raw),
            shader_f16: f16,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
        };
        let shared = Arc::new(Shared {
            device,
            queue,
            info,
            config,
            params_align: u64::from(limits.min_uniform_buffer_offset_alignment.max(16)),
            max_workgroups: limits.max_compute_workgroups_per_dimension,
            next_id: AtomicU32::new(0),
            pipelines: Mutex::default(),
            pool: Mutex::default(),
            lost,
            uncaptured,
        });
        Ok(Self {
            main: WgpuContext::new(shared.clone()),
            shared,
        })
    }

    /// The settings this host was opened with.
    pub fn config(&self) -> WgpuConfig {
        self.shared.config
    }

    /// Freed buffers kept for reuse: how many, and their bytes (at most
    /// [`WgpuConfig::pool_buffers`] and [`WgpuConfig::pool_bytes`]).
    pub fn pooled(&self) -> (usize, u64) {
        self.shared
            .pool
            .lock()
            .map(|p| (p.free.len(), p.bytes))
            .unwrap_or_default()
    }

    /// An error wgpu reported outside every context's error capture, if any (natively none is
    /// expected: each call captures its own).
    pub fn take_uncaptured_error(&self) -> Option<String> {
        self.shared.uncaptured.lock().ok()?.take()
    }

    /// An isolated context on this device ([`GpuHost::open_context`], with its type).
    pub fn context(&self) -> WgpuContext {
        WgpuContext::new(self.shared.clone())
    }

    /// [`WgpuContext::finish_read`] of this host's own context.
    pub async fn finish_read(&self, readback: u32) -> Result<Vec<u8>, GpuError> {
        self.main.finish_read(readback).await
    }
}

impl GpuHost for WgpuHost {
    fn info(&self) -> &AdapterInfo {
        self.main.info()
    }

    fn create_buffer(&self, size: u64) -> Result<BufferId, GpuError> {
        self.main.create_buffer(size)
    }

    fn write_buffer(&self, id: BufferId, offset: u64, data: &[u8]) -> Result<(), GpuError> {
        self.main.write_buffer(id, offset, data)
    }

    fn destroy_buffer(&self, id: BufferId) {
        self.main.destroy_buffer(id)
    }

    fn create_pipeline(&self, wgsl: &str, entry_point: &str) -> Result<PipelineId, GpuError> {
        self.main.create_pipeline(wgsl, entry_point)
    }

    fn dispatch(
        &self,
        pipeline: PipelineId,
        params: &[u8],
        buffers: &[BufferId],
        workgroups: [u32; 3],
    ) -> Result<(), GpuError> {
        self.main.dispatch(pipeline, params, buffers, workgroups)
    }

    fn read_buffer(&self, id: BufferId, offset: u64, size: u64) -> Result<Readback, GpuError> {
        self.main.read_buffer(id, offset, size)
    }

    fn open_context(&self) -> Option<Arc<dyn GpuHost>> {
        Some(Arc::new(self.context()))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
#[path = "wgpu_host_tests.rs"]
mod tests;
