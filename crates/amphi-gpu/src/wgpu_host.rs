//! [`GpuHost`] on `wgpu`: one device and queue, handles mapped to wgpu objects, dispatches
//! recorded into one command encoder until a readback (or a write that must not overtake them)
//! submits it. Kernel parameters of the recorded dispatches go into one uniform ring buffer,
//! written once per submit: a dispatch creates no buffer of its own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::{AdapterInfo, BufferId, GpuError, GpuHost, PipelineId, Readback};

/// A readback in flight: the staging buffer and the outcome of its `map_async`.
struct PendingRead {
    staging: wgpu::Buffer,
    size: u64,
    mapped: futures_channel::oneshot::Receiver<Result<(), wgpu::BufferAsyncError>>,
}

#[derive(Default)]
struct State {
    readbacks: HashMap<u32, PendingRead>,
    buffers: HashMap<u32, wgpu::Buffer>,
    pipelines: HashMap<u32, wgpu::ComputePipeline>,
    /// (source, entry point) → pipeline, so a kernel compiles once per host.
    by_source: HashMap<(String, String), u32>,
    next_id: u32,
    /// Dispatches recorded since the last submit.
    encoder: Option<wgpu::CommandEncoder>,
    /// Their parameters, at the offsets their bind groups name in [`WgpuHost::params`].
    params: Vec<u8>,
}

/// Size of the parameter ring: room for 1,024 dispatches between submits at 256-byte alignment.
const PARAMS_RING: u64 = 256 * 1024;

/// The wgpu implementation of the GPU interface.
pub struct WgpuHost {
    device: wgpu::Device,
    queue: wgpu::Queue,
    info: AdapterInfo,
    state: Mutex<State>,
    /// The uniform ring holding the parameters of recorded dispatches.
    params: wgpu::Buffer,
    /// Alignment of uniform-binding offsets in [`WgpuHost::params`].
    params_align: u64,
    /// Errors wgpu reports outside an error scope (e.g. a lost device).
    uncaptured: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for WgpuHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WgpuHost")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

fn device_err(e: impl std::fmt::Display) -> GpuError {
    GpuError::Device(e.to_string())
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

impl WgpuHost {
    /// Opens the preferred adapter (`WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and friends are
    /// honoured). Fails with [`GpuError::Unavailable`] when there is none.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new() -> Result<Self, GpuError> {
        pollster::block_on(Self::new_async())
    }

    /// [`WgpuHost::new`] without blocking (browsers).
    pub async fn new_async() -> Result<Self, GpuError> {
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
        let info = AdapterInfo {
            name: raw.name.clone(),
            backend: raw.backend.to_string(),
            software: software(&raw),
            shader_f16: f16,
            max_storage_binding: limits.max_storage_buffer_binding_size,
            max_workgroup_invocations: limits.max_compute_invocations_per_workgroup,
        };
        let params = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kernel parameters"),
            size: PARAMS_RING,
            usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self {
            device,
            queue,
            info,
            state: Mutex::default(),
            params,
            params_align: u64::from(limits.min_uniform_buffer_offset_alignment.max(16)),
            uncaptured,
        })
    }

    fn state(&self) -> Result<MutexGuard<'_, State>, GpuError> {
        self.state
            .lock()
            .map_err(|_| device_err("GPU state poisoned by an earlier panic"))
    }

    /// Runs `f` inside validation and out-of-memory error scopes.
    #[cfg(not(target_arch = "wasm32"))]
    fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(validation.pop());
        let o = pollster::block_on(oom.pop());
        match v.or(o) {
            Some(e) => Err(device_err(e)),
            None => Ok(out),
        }
    }

    /// In a browser error scopes resolve asynchronously: errors are collected by the uncaptured
    /// handler and reported at the next readback.
    #[cfg(target_arch = "wasm32")]
    fn scoped<T>(&self, f: impl FnOnce() -> T) -> Result<T, GpuError> {
        let out = f();
        self.check_uncaptured()?;
        Ok(out)
    }

    fn check_uncaptured(&self) -> Result<(), GpuError> {
        match self.uncaptured.lock().ok().and_then(|mut e| e.take()) {
            Some(e) => Err(device_err(e)),
            None => Ok(()),
        }
    }

    /// Submits what is recorded, after writing the parameters its dispatches read. (Queue
    /// writes land before the next submission and after the earlier ones, so reusing the ring
    /// cannot change what submitted work reads.)
    fn submit(&self, state: &mut State) {
        if let Some(encoder) = state.encoder.take() {
            if !state.params.is_empty() {
                self.queue.write_buffer(&self.params, 0, &state.params);
                state.params.clear();
            }
            self.queue.submit([encoder.finish()]);
        }
    }
}

impl WgpuHost {
    /// Copies the range into a staging buffer, submits everything recorded and asks for the
    /// mapping. Returns the readback's id for [`WgpuHost::finish_read`].
    fn start_read(&self, id: BufferId, offset: u64, size: u64) -> Result<u32, GpuError> {
        let padded = size.max(4).next_multiple_of(4);
        let mut state = self.state()?;
        let source = buffer(&state, id)?.clone();
        if offset + padded > source.size() {
            return Err(device_err(format!(
                "read of {size} bytes at {offset} from a {}-byte buffer",
                source.size()
            )));
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: padded,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let device = &self.device;
        let encoder = state.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        encoder.copy_buffer_to_buffer(&source, offset, &staging, 0, padded);
        self.submit(&mut state);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        state.next_id += 1;
        let readback = state.next_id;
        state.readbacks.insert(
            readback,
            PendingRead {
                staging,
                size,
                mapped: rx,
            },
        );
        Ok(readback)
    }

    /// Waits for a readback started by [`GpuHost::read_buffer`] (which answered
    /// [`Readback::Pending`] in a browser) and returns its bytes.
    pub async fn finish_read(&self, readback: u32) -> Result<Vec<u8>, GpuError> {
        let pending = self
            .state()?
            .readbacks
            .remove(&readback)
            .ok_or(GpuError::UnknownHandle {
                what: "readback",
                id: readback,
            })?;
        pending
            .mapped
            .await
            .map_err(|_| device_err("the readback was dropped"))?
            .map_err(device_err)?;
        self.check_uncaptured()?;
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

    /// Natively: wait for the device, then the bytes are there.
    #[cfg(not(target_arch = "wasm32"))]
    fn read_now(&self, readback: u32) -> Result<Readback, GpuError> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(device_err)?;
        pollster::block_on(self.finish_read(readback)).map(Readback::Ready)
    }

    /// In a browser the mapping completes on the event loop: the caller awaits
    /// [`WgpuHost::finish_read`].
    #[cfg(target_arch = "wasm32")]
    fn read_now(&self, readback: u32) -> Result<Readback, GpuError> {
        Ok(Readback::Pending(readback))
    }
}

fn buffer(state: &State, id: BufferId) -> Result<&wgpu::Buffer, GpuError> {
    state.buffers.get(&id.0).ok_or(GpuError::UnknownHandle {
        what: "buffer",
        id: id.0,
    })
}

impl GpuHost for WgpuHost {
    fn info(&self) -> &AdapterInfo {
        &self.info
    }

    fn create_buffer(&self, size: u64) -> Result<BufferId, GpuError> {
        let size = size.max(4).next_multiple_of(4);
        let buffer = self.scoped(|| {
            self.device.create_buffer(&wgpu::BufferDescriptor {
                label: None,
                size,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            })
        })?;
        let mut state = self.state()?;
        state.next_id += 1;
        let id = state.next_id;
        state.buffers.insert(id, buffer);
        Ok(BufferId(id))
    }

    fn write_buffer(&self, id: BufferId, offset: u64, data: &[u8]) -> Result<(), GpuError> {
        let mut state = self.state()?;
        // Queue writes land before the next submitted command buffer: submit what is recorded
        // so that this write cannot overtake a dispatch that reads the old contents.
        self.submit(&mut state);
        let buffer = buffer(&state, id)?;
        if offset + data.len() as u64 > buffer.size() {
            return Err(device_err(format!(
                "write of {} bytes at {offset} into a {}-byte buffer",
                data.len(),
                buffer.size()
            )));
        }
        self.scoped(|| self.queue.write_buffer(buffer, offset, data))
    }

    fn destroy_buffer(&self, id: BufferId) {
        if let Ok(mut state) = self.state() {
            // Dropping the handle is enough: wgpu keeps the buffer alive for recorded work.
            state.buffers.remove(&id.0);
        }
    }

    fn create_pipeline(&self, wgsl: &str, entry_point: &str) -> Result<PipelineId, GpuError> {
        let key = (wgsl.to_owned(), entry_point.to_owned());
        if let Some(&id) = self.state()?.by_source.get(&key) {
            return Ok(PipelineId(id));
        }
        let pipeline = self
            .scoped(|| {
                let module = self
                    .device
                    .create_shader_module(wgpu::ShaderModuleDescriptor {
                        label: Some(entry_point),
                        source: wgpu::ShaderSource::Wgsl(wgsl.into()),
                    });
                self.device
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
        let mut state = self.state()?;
        state.next_id += 1;
        let id = state.next_id;
        state.pipelines.insert(id, pipeline);
        state.by_source.insert(key, id);
        Ok(PipelineId(id))
    }

    fn dispatch(
        &self,
        pipeline: PipelineId,
        params: &[u8],
        buffers: &[BufferId],
        workgroups: [u32; 3],
    ) -> Result<(), GpuError> {
        let mut state = self.state()?;
        let compute = state
            .pipelines
            .get(&pipeline.0)
            .ok_or(GpuError::UnknownHandle {
                what: "pipeline",
                id: pipeline.0,
            })?
            .clone();
        if params.len() > crate::MAX_PARAMS_BYTES {
            return Err(device_err(format!(
                "{} bytes of kernel parameters (at most {})",
                params.len(),
                crate::MAX_PARAMS_BYTES
            )));
        }
        let size = (params.len() as u64).max(16).next_multiple_of(16);
        let slot = size.next_multiple_of(self.params_align);
        if state.params.len() as u64 + slot > PARAMS_RING {
            self.submit(&mut state);
        }
        let offset = state.params.len() as u64;
        let bind_group = self.scoped(|| -> Result<wgpu::BindGroup, GpuError> {
            let mut entries = vec![wgpu::BindGroupEntry {
                binding: 0,
                resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                    buffer: &self.params,
                    offset,
                    size: std::num::NonZeroU64::new(size),
                }),
            }];
            for (i, &id) in buffers.iter().enumerate() {
                entries.push(wgpu::BindGroupEntry {
                    binding: i as u32 + 1,
                    resource: buffer(&state, id)?.as_entire_binding(),
                });
            }
            Ok(self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: None,
                layout: &compute.get_bind_group_layout(0),
                entries: &entries,
            }))
        })??;
        state.params.extend_from_slice(params);
        state.params.resize((offset + slot) as usize, 0);
        let device = &self.device;
        let encoder = state.encoder.get_or_insert_with(|| {
            device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None })
        });
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor::default());
            pass.set_pipeline(&compute);
            pass.set_bind_group(0, &bind_group, &[]);
            pass.dispatch_workgroups(workgroups[0], workgroups[1], workgroups[2]);
        }
        Ok(())
    }

    fn read_buffer(&self, id: BufferId, offset: u64, size: u64) -> Result<Readback, GpuError> {
        let readback = self.start_read(id, offset, size)?;
        self.read_now(readback)
    }
}
