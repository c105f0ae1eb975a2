//! Running `amphi.wasm` under wasmtime: the compiled module (cached as a precompiled `.cwasm`),
//! the `amphi_host` imports, and [`Guest`], one instance with its own store and memory.

use std::hash::{Hash, Hasher};
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

/// The ABI version this host speaks (`amphi_abi_version`).
pub const ABI_VERSION: i32 = 4;

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
    /// Wall-clock budget of one request inside the guest.
    pub deadline: Duration,
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

// The precompiled-module cache, and why it is trusted.
//
// A `.cwasm` is native machine code: `Module::deserialize` maps it executable and the server runs
// it with its own privileges; wasmtime cannot check that it came from `Module::serialize`.
// Whoever can write the file, or the folder it lies in (to put another file in its place), can
// run code in the server. A cached module is therefore loaded only when
// - the cache folder is owned by the user running the server, is not a symbolic link and is not
//   writable by group or others, and no folder above it lets another user (other than root)
//   rename it (owned by this user or root; group/world-writable only with the sticky bit);
// - the `.cwasm` file, and its `.cwasm.sha256` beside it, are regular files owned by this user
//   and not writable by group or others (checked on the opened handle, not by path);
// - the file's sha256 equals the sidecar's. This is integrity (a torn, truncated or mixed-up
//   write is never run), not authenticity: anyone able to rewrite the `.cwasm` could rewrite the
//   sidecar too, which the ownership checks above rule out;
// - its name is the sha256 of (the artifact's sha256, wasmtime's version, the target, the
//   engine's precompile-compatibility hash, this host's config), so a module compiled from
//   another artifact or for another engine is never picked up.
// The bytes are read once, checked, and deserialized from memory, so the file cannot be swapped
// between the check and the load. Anything else is compiled from the artifact (and an untrusted
// folder is never written to). There is no fallback to a shared temporary folder: without a
// cache folder ([`crate::default_cache_dir`]), modules are compiled at every start.

/// wasmtime's version (pinned in Cargo.toml), part of the module cache key.
const WASMTIME_VERSION: &str = "48.0.8";

/// `Hash` into sha256: stable across processes and Rust versions, unlike `DefaultHasher`.
struct Sha256Hasher(Sha256);

impl Hasher for Sha256Hasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        0 // unused: the digest is read from the inner hasher
    }
}

fn cache_key(engine: &Engine, artifact: &Artifact, preempt: bool) -> String {
    let mut hasher = Sha256Hasher(Sha256::new());
    hasher.write(b"amphi-cwasm-v2\0");
    hasher.write(artifact.sha256.as_bytes());
    hasher.write(WASMTIME_VERSION.as_bytes());
    hasher.write(std::env::consts::ARCH.as_bytes());
    hasher.write(std::env::consts::OS.as_bytes());
    hasher.write(&[u8::from(preempt)]);
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex::encode(hasher.0.finalize())
}

#[cfg(unix)]
mod ids {
    // SAFETY: `geteuid` takes no arguments, cannot fail and touches no memory of ours; `uid_t`
    // is a 32-bit unsigned integer on every Unix Rust supports.
    unsafe extern "C" {
        safe fn geteuid() -> u32;
    }

    /// The effective user id of this process.
    pub(super) fn euid() -> u32 {
        geteuid()
    }
}

/// Why metadata cannot be trusted to guard native code (owner, mode), `None` when it can.
fn untrusted_meta(meta: &std::fs::Metadata) -> Option<String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = ids::euid();
        if meta.uid() != me {
            return Some(format!(
                "owned by uid {}, not by this user ({me})",
                meta.uid()
            ));
        }
        if meta.mode() & 0o022 != 0 {
            return Some(format!(
                "writable by group or others (mode {:o})",
                meta.mode() & 0o7777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    None
}

/// Why the cache folder cannot be trusted, `None` when it can.
fn untrusted_dir(dir: &Path) -> Option<String> {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(e.to_string()),
    };
    if meta.file_type().is_symlink() {
        return Some("a symbolic link".into());
    }
    if !meta.is_dir() {
        return Some("not a folder".into());
    }
    if let Some(why) = untrusted_meta(&meta) {
        return Some(why);
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let me = ids::euid();
        let absolute = match std::fs::canonicalize(dir) {
            Ok(p) => p,
            Err(e) => return Some(e.to_string()),
        };
        for above in absolute.ancestors().skip(1) {
            let Ok(m) = std::fs::metadata(above) else {
                return Some(format!("{} cannot be read", above.display()));
            };
            let sticky = m.mode() & 0o1000 != 0;
            if (m.uid() != me && m.uid() != 0) || (m.mode() & 0o022 != 0 && !sticky) {
                return Some(format!(
                    "{} (uid {}, mode {:o}) lets another user replace it",
                    above.display(),
                    m.uid(),
                    m.mode() & 0o7777
                ));
            }
        }
    }
    None
}

/// Reads a cache file through one handle: its metadata checked on that handle, then its bytes.
fn read_trusted(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if let Some(why) = untrusted_meta(&meta) {
        return Err(why);
    }
    let mut bytes = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    file.read_to_end(&mut bytes).map_err(|e| e.to_string())?;
    Ok(bytes)
}

/// A trusted folder of precompiled modules (see the trust model above).
#[derive(Debug)]
struct ModuleCache {
    dir: PathBuf,
}

impl ModuleCache {
    /// Creates the folder (0700) if needed; `None`, with a warning, when it is not trusted.
    fn open(dir: &Path) -> Option<Self> {
        if let Err(e) = crate::hub::create_private_dir(dir) {
            tracing::warn!(path = %dir.display(), error = %e, "module cache off: cannot create its folder");
            return None;
        }
        match untrusted_dir(dir) {
            None => Some(Self {
                dir: dir.to_path_buf(),
            }),
            Some(why) => {
                tracing::warn!(path = %dir.display(), reason = %why, "module cache off: the folder is not trusted");
                None
            }
        }
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{key}.cwasm")),
            self.dir.join(format!("{key}.cwasm.sha256")),
        )
    }

    /// The cached module for `key`, if present, trusted and intact.
    fn load(&self, engine: &Engine, key: &str) -> Option<Module> {
        let (path, sum) = self.paths(key);
        if std::fs::symlink_metadata(&path).is_err() {
            return None; // not cached yet
        }
        let checked = read_trusted(&path).and_then(|bytes| {
            let want = read_trusted(&sum).map_err(|e| format!("{}: {e}", sum.display()))?;
            let got = hex::encode(Sha256::digest(&bytes));
            match String::from_utf8_lossy(&want).trim() == got {
                true => Ok(bytes),
                false => Err(format!("sha256 {got} does not match {}", sum.display())),
            }
        });
        let bytes = match checked {
            Ok(b) => b,
            Err(why) => {
                tracing::warn!(path = %path.display(), reason = %why, "ignoring an untrusted precompiled module");
                return None;
            }
        };
        // SAFETY: these bytes were read from a file that only this user can write, in a folder
        // only this user can write, and match the sha256 written beside them by `store` below
        // (which writes `Module::serialize` output); the name keys the artifact and the exact
        // engine configuration. See the trust model above.
        match unsafe { Module::deserialize(engine, &bytes) } {
            Ok(m) => Some(m),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "ignoring unusable precompiled module");
                None
            }
        }
    }

    /// Stores a serialized module atomically (unique temporary file, fsync, rename), then its
    /// sha256 beside it.
    fn store(&self, key: &str, bytes: &[u8]) -> Result<(), Error> {
        let (path, sum) = self.paths(key);
        let digest = hex::encode(Sha256::digest(bytes));
        crate::hub::write_atomically(&path, bytes).map_err(|source| Error::Cache {
            path: path.clone(),
            source,
        })?;
        crate::hub::write_atomically(&sum, format!("{digest}\n").as_bytes()).map_err(|source| {
            Error::Cache {
                path: sum.clone(),
                source,
            }
        })
    }
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

#[cfg(test)]
mod module_cache_tests {
    #![allow(clippy::unwrap_used)]
    use super::{Artifact, ModuleCache, cache_key};
    use std::path::PathBuf;
    use wasmtime::{Engine, Module};

    /// The smallest valid module: the magic and the version.
    const EMPTY: &[u8] = b"\0asm\x01\0\0\0";

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("amphi-cwasm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn keys_cover_the_artifact_and_the_config() {
        let engine = Engine::default();
        let a = Artifact::from_bytes(EMPTY.to_vec());
        let b = Artifact::from_bytes(b"\0asm\x01\0\0\0\0".to_vec());
        let k = cache_key(&engine, &a, false);
        assert_eq!(k.len(), 64);
        assert_eq!(k, cache_key(&engine, &a, false), "stable");
        assert_ne!(k, cache_key(&engine, &b, false));
        assert_ne!(k, cache_key(&engine, &a, true));
    }

    #[cfg(unix)]
    #[test]
    fn only_private_intact_modules_are_loaded() {
        use std::os::unix::fs::PermissionsExt;
        let set_mode = |p: &std::path::Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        };
        let engine = Engine::default();
        let d = dir("trust");
        let cache = ModuleCache::open(&d).unwrap();
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let bytes = Module::new(&engine, EMPTY).unwrap().serialize().unwrap();
        cache.store("k", &bytes).unwrap();
        let (cwasm, sum) = cache.paths("k");
        assert_eq!(
            std::fs::metadata(&cwasm).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(cache.load(&engine, "k").is_some(), "a trusted module loads");
        assert!(cache.load(&engine, "other").is_none());

        // Group- or world-writable file: refused.
        set_mode(&cwasm, 0o666);
        assert!(cache.load(&engine, "k").is_none(), "world-writable .cwasm");
        set_mode(&cwasm, 0o600);
        assert!(cache.load(&engine, "k").is_some());

        // Content changed (same owner and mode): the sha256 no longer matches.
        let mut tampered = bytes.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        std::fs::write(&cwasm, &tampered).unwrap();
        assert!(cache.load(&engine, "k").is_none(), "tampered .cwasm");
        std::fs::write(&cwasm, &bytes).unwrap();
        assert!(cache.load(&engine, "k").is_some());

        // No sidecar: refused.
        std::fs::remove_file(&sum).unwrap();
        assert!(cache.load(&engine, "k").is_none(), "no sha256 beside it");
        cache.store("k", &bytes).unwrap();

        // Another owner (needs root to create the case).
        if super::ids::euid() == 0 {
            std::os::unix::fs::chown(&cwasm, Some(65534), None).unwrap();
            assert!(cache.load(&engine, "k").is_none(), "owned by someone else");
            std::os::unix::fs::chown(&cwasm, Some(0), None).unwrap();
            assert!(cache.load(&engine, "k").is_some());
            std::os::unix::fs::chown(&d, Some(65534), None).unwrap();
            assert!(
                ModuleCache::open(&d).is_none(),
                "folder owned by someone else"
            );
            std::os::unix::fs::chown(&d, Some(0), None).unwrap();
        }

        // A group/world-writable folder, or a symbolic link to one: the cache is off.
        set_mode(&d, 0o777);
        assert!(ModuleCache::open(&d).is_none(), "world-writable folder");
        set_mode(&d, 0o700);
        let link = dir("trust-link");
        std::os::unix::fs::symlink(&d, &link).unwrap();
        assert!(ModuleCache::open(&link).is_none(), "symbolic link");
        // A folder under a world-writable, non-sticky parent: someone else could swap it.
        let open_parent = dir("trust-parent");
        std::fs::create_dir_all(open_parent.join("wasm")).unwrap();
        set_mode(&open_parent, 0o777);
        assert!(ModuleCache::open(&open_parent.join("wasm")).is_none());
        assert!(ModuleCache::open(&d).is_some());
        for p in [&d, &open_parent] {
            let _ = std::fs::remove_dir_all(p);
        }
        let _ = std::fs::remove_file(&link);
    }
}
