//! Running `amphi.wasm` under wasmtime: the compiled module (cached as a precompiled `.cwasm`,
//! [`crate::module_cache`]), the `amphi_host` imports, and [`Guest`], one instance with its own
//! store and memory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::{
    Caller, Config, Engine, Extern, InstancePre, Linker, Memory, Module, Store, StoreLimits,
    StoreLimitsBuilder, Trap, TypedFunc,
};

use crate::error::{Error, GuestError};
use crate::gpu_imports::{self, GpuState};
use crate::module_cache::{ModuleCache, cache_key};

mod session;
use session::SessionFns;
pub use session::StreamEnd;

/// The ABI version this host speaks (`amphi_abi_version`).
pub const ABI_VERSION: i32 = 5;

/// How often the epoch advances: the granularity of deadlines.
const TICK: Duration = Duration::from_millis(5);

/// The artifact's bytes and their identity.
#[derive(Debug, Clone)]
pub struct Artifact {
    /// The exact bytes of `amphi.wasm`.
    pub bytes: Arc<[u8]>,
    /// Lower-case hex sha256 of the bytes.
    pub sha256: String,
}

impl Artifact {
    /// Reads an artifact file.
    pub fn read(path: &Path) -> Result<Self, Error> {
        let bytes = std::fs::read(path).map_err(|e| Error::Artifact {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Ok(Self::from_bytes(bytes))
    }

    /// Wraps bytes already in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        let sha256 = hex::encode(Sha256::digest(&bytes));
        Self {
            bytes: bytes.into(),
            sha256,
        }
    }
}

/// Per-instance limits.
#[derive(Debug, Clone, Copy)]
pub struct GuestLimits {
    /// Linear memory of one instance, in bytes.
    pub memory_bytes: usize,
    /// Wall-clock budget of one request inside the guest, and of each step of a streamed
    /// session (a generated token, an input of a stream).
    pub deadline: Duration,
    /// Wall-clock budget of a whole streamed session.
    pub stream_deadline: Duration,
    /// Wall-clock budget of loading one model.
    pub load_deadline: Duration,
    /// How the deadlines are enforced.
    pub deadlines: Deadlines,
}

impl Default for GuestLimits {
    fn default() -> Self {
        Self {
            memory_bytes: 2 << 30,
            deadline: Duration::from_secs(30),
            stream_deadline: Duration::from_secs(600),
            load_deadline: Duration::from_secs(300),
            deadlines: Deadlines::BetweenOps,
        }
    }
}

/// How a guest is stopped at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadlines {
    /// Not at all: a request that runs long holds its instance until it ends.
    Off,
    /// The engine asks the host (`amphi_host.interrupted`) before every op, before each forward
    /// pass and per weight while loading, and returns `deadline_exceeded` through its ordinary
    /// error path: the instance keeps serving. A request overruns by at most one op (about a
    /// second at the largest request the HTTP limits allow). Costs nothing measurable.
    BetweenOps,
    /// As [`Deadlines::BetweenOps`], and wasmtime's epoch interruption also stops compiled code
    /// anywhere, every 5 ms tick (a guest that never reaches a check, such as
    /// `amphi_debug_spin`), after which the instance is replaced. Its check in every loop costs
    /// the SIMD128 kernels half their speed under Cranelift: the accumulators are kept in stack
    /// slots across the out-of-line call at each loop header. Needed for sampling profiles.
    Preemptive,
}

impl Deadlines {
    fn preempt(self) -> bool {
        self == Deadlines::Preemptive
    }
}

/// How the module was obtained, for logs and metrics.
#[derive(Debug, Clone, Copy)]
pub struct ModuleTiming {
    /// Whether a precompiled `.cwasm` was loaded (else the module was compiled).
    pub from_cache: bool,
    /// Time to compile or to deserialize.
    pub elapsed: Duration,
}

pub(crate) struct HostState {
    limits: StoreLimits,
    /// The last error-level message the guest logged (its panic message, before it traps).
    last_error: Option<String>,
    /// The instance's GPU buffers (freed with it).
    pub(crate) gpu: GpuState,
    /// Stack samples per op while profiling ([`Guest::start_profile`]).
    profile: Option<crate::profile::Samples>,
    /// When the current call is to stop (`amphi_host.interrupted`).
    deadline: Option<Instant>,
}

/// Advances the engine's epoch every [`TICK`] so that deadlines can interrupt guests.
struct Ticker {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The compiled artifact, ready to instantiate. Cheap to share; one per process.
pub struct Runtime {
    engine: Engine,
    pre: InstancePre<HostState>,
    artifact: Artifact,
    limits: GuestLimits,
    timing: ModuleTiming,
    gpu: Option<Arc<dyn amphi_gpu::GpuHost>>,
    /// What each instance may hold on the GPU.
    gpu_quota: amphi_gpu::GpuQuota,
    /// Shared with every [`Guest`], so that deadlines keep ticking for a guest that outlives
    /// its runtime.
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("artifact_sha256", &self.artifact.sha256)
            .field("limits", &self.limits)
            .field("timing", &self.timing)
            .finish_non_exhaustive()
    }
}

pub(crate) fn wasm_err(e: wasmtime::Error) -> Error {
    Error::Wasmtime(format!("{e:#}"))
}

pub(crate) fn guest_memory(caller: &mut Caller<'_, HostState>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Some(m),
        _ => None,
    }
}

fn linker(engine: &Engine) -> Result<Linker<HostState>, Error> {
    let mut linker = Linker::new(engine);
    linker
        .func_wrap(
            "amphi_host",
            "random_fill",
            |mut caller: Caller<'_, HostState>, ptr: u32, len: u32| -> i32 {
                let Some(memory) = guest_memory(&mut caller) else {
                    return 1;
                };
                let (ptr, len) = (ptr as usize, len as usize);
                match memory
                    .data_mut(&mut caller)
                    .get_mut(ptr..ptr.saturating_add(len))
                {
                    Some(dest) => i32::from(getrandom::fill(dest).is_err()),
                    None => 1,
                }
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_host",
            "log",
            |mut caller: Caller<'_, HostState>, level: i32, ptr: u32, len: u32| {
                let Some(memory) = guest_memory(&mut caller) else {
                    return;
                };
                let (ptr, len) = (ptr as usize, len as usize);
                let message = memory
                    .data(&caller)
                    .get(ptr..ptr.saturating_add(len))
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                match level {
                    0 => {
                        tracing::error!(target: "amphi_guest", "{message}");
                        caller.data_mut().last_error = Some(message);
                    }
                    1 => tracing::warn!(target: "amphi_guest", "{message}"),
                    2 => tracing::info!(target: "amphi_guest", "{message}"),
                    _ => tracing::debug!(target: "amphi_guest", "{message}"),
                }
            },
        )
        .map_err(wasm_err)?;
    linker
        .func_wrap(
            "amphi_host",
            "interrupted",
            |caller: Caller<'_, HostState>| -> i32 {
                i32::from(caller.data().deadline.is_some_and(|d| Instant::now() >= d))
            },
        )
        .map_err(wasm_err)?;
    gpu_imports::add(&mut linker)?;
    Ok(linker)
}

impl Runtime {
    /// Compiles the artifact, or loads its precompiled form from `cache_dir` (a `.cwasm` keyed by
    /// the artifact's sha256 and the engine configuration, loaded only from a folder and file
    /// private to this user and matching its recorded sha256; see the trust model above), and
    /// checks its ABI version.
    pub fn new(
        artifact: Artifact,
        cache_dir: Option<&Path>,
        limits: GuestLimits,
    ) -> Result<Self, Error> {
        let mut config = Config::new();
        config.epoch_interruption(limits.deadlines.preempt());
        let engine = Engine::new(&config).map_err(wasm_err)?;

        let started = Instant::now();
        let preempt = limits.deadlines.preempt();
        let cache = cache_dir.and_then(ModuleCache::open);
        let key = cache_key(&engine, &artifact, preempt);
        let cached = cache.as_ref().and_then(|c| c.load(&engine, &key));
        let from_cache = cached.is_some();
        let module = match cached {
            Some(m) => m,
            None => Module::new(&engine, &artifact.bytes).map_err(wasm_err)?,
        };
        let timing = ModuleTiming {
            from_cache,
            elapsed: started.elapsed(),
        };
        if let (false, Some(cache)) = (from_cache, &cache)
            && let Err(e) = cache.store(&key, &module.serialize().map_err(wasm_err)?)
        {
            tracing::warn!(error = %e, "could not cache the precompiled module");
        }

        let pre = linker(&engine)?
            .instantiate_pre(&module)
            .map_err(|e| Error::Artifact {
                path: PathBuf::from("amphi.wasm"),
                message: format!("imports do not match the amphi_host/amphi_gpu interface: {e:#}"),
            })?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = match limits.deadlines.preempt() {
            false => None,
            true => {
                let (engine, stop) = (engine.clone(), stop.clone());
                let thread = std::thread::Builder::new()
                    .name("amphi-epoch".into())
                    .spawn(move || {
                        while !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(TICK);
                            engine.increment_epoch();
                        }
                    })
                    .map_err(|e| Error::Wasmtime(e.to_string()))?;
                Some(thread)
            }
        };
        let runtime = Self {
            engine,
            pre,
            artifact,
            limits,
            timing,
            gpu: None,
            gpu_quota: amphi_gpu::GpuQuota::default(),
            ticker: Arc::new(Ticker { stop, thread }),
        };
        let mut probe = runtime.instantiate()?;
        let version = probe.abi_version()?;
        if version != ABI_VERSION {
            return Err(Error::Artifact {
                path: PathBuf::from("amphi.wasm"),
                message: format!("ABI version {version}, this host speaks {ABI_VERSION}"),
            });
        }
        Ok(runtime)
    }

    /// Serves the artifact's `amphi_gpu` imports with this GPU (without one, instances see no
    /// GPU and run on the CPU).
    pub fn with_gpu(mut self, gpu: Option<Arc<dyn amphi_gpu::GpuHost>>) -> Self {
        self.gpu = gpu;
        self
    }

    /// Limits each instance's GPU buffers (count and bytes) to `quota` (default:
    /// [`amphi_gpu::GpuQuota::default`]).
    pub fn with_gpu_quota(mut self, quota: amphi_gpu::GpuQuota) -> Self {
        self.gpu_quota = quota;
        self
    }

    /// The GPU instances see, if any.
    pub fn gpu(&self) -> Option<&Arc<dyn amphi_gpu::GpuHost>> {
        self.gpu.as_ref()
    }

    /// The artifact this runtime runs.
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }

    /// How the module was obtained.
    pub fn timing(&self) -> ModuleTiming {
        self.timing
    }

    /// The per-instance limits.
    pub fn limits(&self) -> GuestLimits {
        self.limits
    }

    /// A fresh instance with its own memory.
    pub fn instantiate(&self) -> Result<Guest, Error> {
        let state = HostState {
            limits: StoreLimitsBuilder::new()
                .memory_size(self.limits.memory_bytes)
                .instances(1)
                .build(),
            last_error: None,
            gpu: GpuState::new(self.gpu.clone(), self.gpu_quota),
            profile: None,
            deadline: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        if self.limits.deadlines.preempt() {
            store.epoch_deadline_trap();
            store.set_epoch_deadline(ticks(self.limits.load_deadline));
        }
        let instance = self.pre.instantiate(&mut store).map_err(wasm_err)?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| Error::Wasmtime("amphi.wasm exports no memory".into()))?;
        macro_rules! func {
            ($name:literal) => {
                instance
                    .get_typed_func(&mut store, $name)
                    .map_err(|e| Error::Wasmtime(format!("{}: {e:#}", $name)))?
            };
        }
        Ok(Guest {
            memory,
            abi_version: func!("amphi_abi_version"),
            alloc: func!("amphi_alloc"),
            files_new: func!("amphi_files_new"),
            files_add: func!("amphi_files_add"),
            model_load: func!("amphi_model_load"),
            model_info: func!("amphi_model_info"),
            run: func!("amphi_run"),
            attach: func!("amphi_attach"),
            last_tokens: func!("amphi_last_tokens"),
            result_ptr: func!("amphi_result_ptr"),
            result_len: func!("amphi_result_len"),
            debug_panic: func!("amphi_debug_panic"),
            debug_spin: func!("amphi_debug_spin"),
            probes: Probes::find(&instance, &mut store),
            sessions: SessionFns::find(&instance, &mut store),
            limits: self.limits,
            store,
            _ticker: self.ticker.clone(),
        })
    }
}

fn ticks(d: Duration) -> u64 {
    (d.as_nanos() / TICK.as_nanos()).max(1) as u64
}

/// One instance of the artifact. Serves one call at a time (`&mut self`); after a
/// [`GuestError::is_fatal`] error it must be dropped.
pub struct Guest {
    store: Store<HostState>,
    memory: Memory,
    limits: GuestLimits,
    abi_version: TypedFunc<(), i32>,
    alloc: TypedFunc<u32, u32>,
    files_new: TypedFunc<(), i32>,
    files_add: TypedFunc<(i32, u32, u32, u32, u32), i32>,
    model_load: TypedFunc<(i32, u32, u32), i32>,
    model_info: TypedFunc<i32, i32>,
    run: TypedFunc<(i32, u32, u32, u32, u32), i32>,
    attach: TypedFunc<(u32, u32), i32>,
    last_tokens: TypedFunc<(), u32>,
    result_ptr: TypedFunc<(), u32>,
    result_len: TypedFunc<(), u32>,
    debug_panic: TypedFunc<(), ()>,
    debug_spin: TypedFunc<(), ()>,
    probes: Option<Probes>,
    /// ABI v5 sessions (absent from older artifacts).
    sessions: Option<SessionFns>,
    /// Keeps the epoch advancing while this guest lives.
    _ticker: Arc<Ticker>,
}

/// The artifact's optional diagnostic exports (`amphi_probe_*`, docs/abi.md).
#[derive(Clone)]
struct Probes {
    peak_flops: TypedFunc<(), u32>,
    peak: TypedFunc<u32, f32>,
    matmul: TypedFunc<(u32, u32, u32, u32), f32>,
}

impl Probes {
    fn find(instance: &wasmtime::Instance, store: &mut Store<HostState>) -> Option<Self> {
        Some(Self {
            peak_flops: instance
                .get_typed_func(&mut *store, "amphi_probe_peak_flops")
                .ok()?,
            peak: instance
                .get_typed_func(&mut *store, "amphi_probe_peak")
                .ok()?,
            matmul: instance
                .get_typed_func(&mut *store, "amphi_probe_matmul")
                .ok()?,
        })
    }
}

impl std::fmt::Debug for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guest").finish_non_exhaustive()
    }
}

impl Guest {
    fn trap(&mut self, e: wasmtime::Error) -> GuestError {
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            return GuestError::Deadline { trapped: true };
        }
        let message = self
            .store
            .data_mut()
            .last_error
            .take()
            .unwrap_or_else(|| format!("{e:#}"));
        GuestError::Trap { message }
    }

    fn call<P: wasmtime::WasmParams, R: wasmtime::WasmResults>(
        &mut self,
        pick: fn(&Self) -> &TypedFunc<P, R>,
        params: P,
    ) -> Result<R, GuestError> {
        let f = pick(self).clone();
        f.call(&mut self.store, params).map_err(|e| self.trap(e))
    }

    /// Starts an operation: its calls together get `budget` of wall-clock time (while profiling,
    /// none: the next tick takes a sample instead).
    fn begin(&mut self, budget: Duration) {
        let profiling = self.store.data().profile.is_some();
        self.store.data_mut().deadline = match self.limits.deadlines {
            Deadlines::Off => None,
            _ if profiling => None,
            _ => Some(Instant::now() + budget),
        };
        if self.limits.deadlines.preempt() {
            self.store
                .set_epoch_deadline(if profiling { 1 } else { ticks(budget) });
        }
    }

    /// Starts a sampling profile: at every epoch tick (5 ms) the guest's call stack is charged to
    /// the backend op on it (`matmul`, `attention`, `tokenize`, …; `other` for the rest), until
    /// [`Guest::finish_profile`]. Deadlines are not enforced meanwhile. Needs
    /// [`Deadlines::Preemptive`]: without epoch interruption there are no ticks to sample on.
    pub fn start_profile(&mut self) -> Result<(), Error> {
        if !self.limits.deadlines.preempt() {
            return Err(Error::Wasmtime(
                "profiling samples on epoch ticks: it needs preemptive deadlines".into(),
            ));
        }
        self.store.data_mut().profile = Some(Default::default());
        self.store.epoch_deadline_callback(|mut cx| {
            let op = crate::profile::classify(&wasmtime::WasmBacktrace::capture(&cx));
            if let Some(samples) = cx.data_mut().profile.as_mut() {
                *samples.entry(op).or_default() += 1;
            }
            Ok(wasmtime::UpdateDeadline::Continue(1))
        });
        Ok(())
    }

    /// Ends the profile: samples per op, most first; deadlines trap again.
    pub fn finish_profile(&mut self) -> Vec<(&'static str, u64)> {
        let samples = self.store.data_mut().profile.take().unwrap_or_default();
        if self.limits.deadlines.preempt() {
            self.store.epoch_deadline_trap();
        }
        let mut out: Vec<_> = samples.into_iter().collect();
        out.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        out
    }

    fn abi_version(&mut self) -> Result<i32, Error> {
        self.begin(self.limits.deadline);
        self.call(|g| &g.abi_version, ())
            .map_err(|e| Error::Wasmtime(e.to_string()))
    }

    /// Copies bytes into a fresh guest buffer (owned by the guest once passed to a call).
    fn put(&mut self, bytes: &[u8]) -> Result<(u32, u32), GuestError> {
        let len = u32::try_from(bytes.len()).map_err(|_| GuestError::Trap {
            message: "argument larger than 4 GiB".into(),
        })?;
        let ptr = self.call(|g| &g.alloc, len)?;
        if len > 0 {
            self.memory
                .write(&mut self.store, ptr as usize, bytes)
                .map_err(|e| GuestError::Trap {
                    message: e.to_string(),
                })?;
        }
        Ok((ptr, len))
    }

    fn result(&mut self) -> Result<Vec<u8>, GuestError> {
        let ptr = self.call(|g| &g.result_ptr, ())? as usize;
        let len = self.call(|g| &g.result_len, ())? as usize;
        self.memory
            .data(&self.store)
            .get(ptr..ptr + len)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| GuestError::Trap {
                message: "result buffer outside memory".into(),
            })
    }

    fn check(&mut self, status: i32) -> Result<i32, GuestError> {
        if status >= 0 {
            return Ok(status);
        }
        #[derive(serde::Deserialize)]
        struct Failure {
            code: String,
            message: String,
        }
        let body = self.result()?;
        let f: Failure = serde_json::from_slice(&body).map_err(|e| GuestError::Trap {
            message: format!("unreadable error from the guest: {e}"),
        })?;
        if f.code == "interrupted" {
            // Only this host's `interrupted` stops a call: its deadline passed.
            return Err(GuestError::Deadline { trapped: false });
        }
        Err(GuestError::Engine {
            code: f.code,
            message: f.message,
        })
    }

    /// Loads a model from `(file name, bytes)` pairs. Returns the guest's model handle.
    pub fn load_model(
        &mut self,
        files: &[(String, Arc<[u8]>)],
        options: &serde_json::Value,
    ) -> Result<i32, GuestError> {
        self.begin(self.limits.load_deadline);
        let set = self.call(|g| &g.files_new, ())?;
        for (name, bytes) in files {
            let (name_ptr, name_len) = self.put(name.as_bytes())?;
            let (data_ptr, data_len) = self.put(bytes)?;
            let status = self.call(
                |g| &g.files_add,
                (set, name_ptr, name_len, data_ptr, data_len),
            )?;
            self.check(status)?;
        }
        let (ptr, len) = self.put(options.to_string().as_bytes())?;
        let status = self.call(|g| &g.model_load, (set, ptr, len))?;
        self.check(status)
    }

    /// The guest's description of a loaded model (JSON).
    pub fn model_info(&mut self, model: i32) -> Result<serde_json::Value, GuestError> {
        self.begin(self.limits.deadline);
        let status = self.call(|g| &g.model_info, model)?;
        self.check(status)?;
        serde_json::from_slice(&self.result()?).map_err(|e| GuestError::Trap {
            message: e.to_string(),
        })
    }

    /// Runs a pipeline request; returns the result JSON bytes and the tokens processed.
    pub fn run(
        &mut self,
        model: i32,
        task: &str,
        request: &[u8],
    ) -> Result<(Vec<u8>, usize), GuestError> {
        self.run_with(model, task, request, &[])
    }

    /// [`Guest::run`] with binary attachments (images), which the request refers to as
    /// `{"blob": i}`.
    pub fn run_with(
        &mut self,
        model: i32,
        task: &str,
        request: &[u8],
        attachments: &[&[u8]],
    ) -> Result<(Vec<u8>, usize), GuestError> {
        self.begin(self.limits.deadline);
        for bytes in attachments {
            let (ptr, len) = self.put(bytes)?;
            self.call(|g| &g.attach, (ptr, len))?;
        }
        let (task_ptr, task_len) = self.put(task.as_bytes())?;
        let (req_ptr, req_len) = self.put(request)?;
        let status = self.call(|g| &g.run, (model, task_ptr, task_len, req_ptr, req_len))?;
        if status == 1 {
            // Only a host whose readbacks finish later gets a pending request.
            return Err(GuestError::Trap {
                message: "amphi.wasm left a request pending on a synchronous host".to_owned(),
            });
        }
        self.check(status)?;
        let tokens = self.call(|g| &g.last_tokens, ())? as usize;
        Ok((self.result()?, tokens))
    }

    /// Floating-point operations per iteration of the artifact's peak loop, or `None` if the
    /// artifact has no probes.
    pub fn probe_peak_flops(&mut self) -> Result<Option<u32>, GuestError> {
        let Some(p) = self.probes.clone() else {
            return Ok(None);
        };
        self.begin(self.limits.deadline);
        let flops = p
            .peak_flops
            .call(&mut self.store, ())
            .map_err(|e| self.trap(e))?;
        Ok(Some(flops))
    }

    /// Times the artifact's SIMD128 peak loop (`iters` iterations) and returns GFLOP/s, or
    /// `None` if the artifact has no probes.
    pub fn probe_peak(&mut self, iters: u32) -> Result<Option<f64>, GuestError> {
        let (Some(p), Some(flops)) = (self.probes.clone(), self.probe_peak_flops()?) else {
            return Ok(None);
        };
        let t = Instant::now();
        p.peak
            .call(&mut self.store, iters)
            .map_err(|e| self.trap(e))?;
        let s = t.elapsed().as_secs_f64();
        Ok(Some(f64::from(flops) * f64::from(iters) / s / 1e9))
    }

    /// Times the artifact's matrix multiply on `[m, k] × [k, n]` (`iters` times) and returns
    /// GFLOP/s, or `None` if the artifact has no probes.
    pub fn probe_matmul(
        &mut self,
        (m, n, k): (u32, u32, u32),
        iters: u32,
    ) -> Result<Option<f64>, GuestError> {
        let Some(p) = self.probes.clone() else {
            return Ok(None);
        };
        self.begin(self.limits.deadline);
        let t = Instant::now();
        p.matmul
            .call(&mut self.store, (m, n, k, iters))
            .map_err(|e| self.trap(e))?;
        let s = t.elapsed().as_secs_f64();
        let flops = 2.0 * f64::from(m) * f64::from(n) * f64::from(k) * f64::from(iters);
        Ok(Some(flops / s / 1e9))
    }

    /// Makes the guest panic (test hook): always a fatal error.
    pub fn debug_panic(&mut self) -> GuestError {
        self.begin(self.limits.deadline);
        match self.call(|g| &g.debug_panic, ()) {
            Ok(()) => GuestError::Trap {
                message: "amphi_debug_panic returned".into(),
            },
            Err(e) => e,
        }
    }

    /// Makes the guest spin until the deadline interrupts it (test hook; only
    /// [`Deadlines::Preemptive`] stops it).
    pub fn debug_spin(&mut self) -> GuestError {
        self.begin(self.limits.deadline);
        match self.call(|g| &g.debug_spin, ()) {
            Ok(()) => GuestError::Trap {
                message: "amphi_debug_spin returned".into(),
            },
            Err(e) => e,
        }
    }
}
