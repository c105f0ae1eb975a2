//! # amphi-serve
//!
//! amphi's serverless host: runs the very bytes of `amphi.wasm` under wasmtime, behind an HTTP
//! API (OpenAI-compatible embeddings, Hugging Face-shaped pipelines, models, health, metrics).
//!
//! ```no_run
//! use std::sync::Arc;
//! use amphi_serve::{Artifact, GuestLimits, Runtime, load_model_dir};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let artifact = Artifact::read("target/amphi.wasm".as_ref())?;
//! let runtime = Runtime::new(artifact, None, GuestLimits::default())?;
//! let mut guest = runtime.instantiate()?;
//! let spec = load_model_dir("minilm", "all-MiniLM-L6-v2".as_ref(), serde_json::json!({}))?;
//! let model = guest.load_model(&spec.files, &spec.options)?;
//! let (json, _tokens) = guest.run(model, "feature-extraction", br#"{"inputs": "hello"}"#)?;
//! println!("{}", String::from_utf8_lossy(&json));
//! # Ok(())
//! # }
//! ```
//!
//! Each instance serves one request at a time; a [`pool::Pool`] keeps several warm. Deadlines
//! are enforced inside wasm: the engine asks the host between ops ([`Deadlines`]), or epoch
//! interruption stops compiled code anywhere; memory per instance with store limits. A guest
//! that traps is discarded and rebuilt; the server stays up.

mod error;
mod gpu_imports;
pub mod http;
pub mod hub;
mod listen;
mod metrics;
mod module_cache;
mod openai;
pub mod pool;
mod profile;
mod runtime;
mod stream;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use error::{Error, GuestError};
pub use http::HttpLimits;
pub use metrics::Metrics;
pub use runtime::{
    ABI_VERSION, Artifact, Deadlines, Guest, GuestLimits, ModuleTiming, Runtime, StreamEnd,
};

use pool::{ModelSpec, Pool};

/// amphi's cache folder (models, hub downloads, precompiled modules): `$AMPHI_CACHE_DIR`, else
/// `$HOME/.cache/amphi`; `None` when neither is set (or both are empty).
///
/// There is deliberately no fallback to a shared temporary folder (`/tmp`): any local user can
/// create paths there first, and the cache holds precompiled modules (`.cwasm`), which are
/// native code the server runs, and model files it trusts. Without a cache folder, modules are
/// compiled at every start and hub downloads are refused; set `AMPHI_CACHE_DIR`. Folders amphi
/// creates in the cache are private to the user (0700 on Unix).
pub fn default_cache_dir() -> Option<PathBuf> {
    let set = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = set("AMPHI_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    set("HOME").map(|home| PathBuf::from(home).join(".cache/amphi"))
}

/// Reads a Hugging Face model folder into a [`ModelSpec`].
pub fn load_model_dir(
    name: &str,
    dir: &Path,
    options: serde_json::Value,
) -> Result<ModelSpec, Error> {
    let files = amphi_core::ModelFiles::from_dir(dir).map_err(|e| Error::Model {
        name: name.to_owned(),
        message: format!("{}: {e}", dir.display()),
    })?;
    Ok(ModelSpec {
        name: name.to_owned(),
        files: files
            .names()
            .filter_map(|n| files.get(n).map(|b| (n.to_owned(), Arc::<[u8]>::from(b))))
            .collect(),
        options,
    })
}

/// Everything `amphi serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// Path of `amphi.wasm`.
    pub artifact: PathBuf,
    /// Where precompiled modules are cached (`None`: compile at every start).
    pub cache_dir: Option<PathBuf>,
    /// `(name, folder)` of each model; the first is the default.
    pub models: Vec<(String, PathBuf)>,
    /// `auto`, `cpu` or `gpu`.
    pub device: String,
    /// Weights on a GPU: `f32` or `f16` (where the adapter has `shader-f16`).
    pub precision: String,
    /// Truncate inputs to at most this many tokens.
    pub max_tokens: Option<usize>,
    /// Image models: refuse images with more pixels (default: the engine's, 40 M).
    pub max_image_pixels: Option<u64>,
    /// Warm instances (concurrent requests).
    pub instances: usize,
    /// Requests that may wait for an instance beyond those running.
    pub max_waiting: usize,
    /// Per-instance limits (memory, deadline).
    pub guest: GuestLimits,
    /// HTTP limits.
    pub http: HttpLimits,
    /// Serve `/debug/panic` and `/debug/spin` (tests only).
    pub debug_endpoints: bool,
    /// Static files to serve at `/` (the playground, `cargo xtask www`).
    pub www: Option<PathBuf>,
}

/// The machine's GPU for `device` (`auto`, `cpu` or `gpu`): `gpu` fails without one, `auto`
/// goes on without.
pub fn open_gpu(device: &str) -> Result<Option<Arc<dyn amphi_gpu::GpuHost>>, Error> {
    if device == "cpu" {
        return Ok(None);
    }
    match amphi_gpu::WgpuHost::new() {
        Ok(gpu) => Ok(Some(Arc::new(gpu))),
        Err(e) if device == "gpu" => Err(Error::Gpu(e.to_string())),
        Err(e) => {
            tracing::info!(reason = %e, "no GPU: running on the CPU");
            Ok(None)
        }
    }
}

/// A started server (bound, models loaded), ready to [`Server::run`].
#[derive(Debug)]
pub struct Server {
    listener: tokio::net::TcpListener,
    state: http::AppState,
}

impl Server {
    /// Loads the artifact and the models, builds the instances and binds the address.
    pub async fn bind(config: &ServeConfig) -> Result<Self, Error> {
        let artifact = Artifact::read(&config.artifact)?;
        let runtime = Runtime::new(artifact, config.cache_dir.as_deref(), config.guest)?
            .with_gpu(open_gpu(&config.device)?);
        if let Some(gpu) = runtime.gpu() {
            tracing::info!(adapter = %gpu.info().name, backend = %gpu.info().backend, software = gpu.info().software, "GPU");
        }
        let timing = runtime.timing();
        tracing::info!(
            sha256 = %runtime.artifact().sha256,
            bytes = runtime.artifact().bytes.len(),
            precompiled = timing.from_cache,
            ms = timing.elapsed.as_secs_f64() * 1e3,
            "artifact ready"
        );
        let mut options =
            serde_json::json!({"device": config.device, "precision": config.precision});
        if let Some(m) = config.max_tokens {
            options["max_length"] = m.into();
        }
        if let Some(m) = config.max_image_pixels {
            options["max_image_pixels"] = m.into();
        }
        let specs = config
            .models
            .iter()
            .map(|(name, dir)| load_model_dir(name, dir, options.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        let runtime = Arc::new(runtime);
        let pool = tokio::task::spawn_blocking({
            let (runtime, instances, waiting) =
                (runtime.clone(), config.instances, config.max_waiting);
            move || Pool::new(runtime, specs, instances, waiting)
        })
        .await
        .map_err(|e| Error::Wasmtime(e.to_string()))??;
        for m in pool.models() {
            tracing::info!(model = %m.name, info = %m.info, "model loaded");
        }
        let listener = tokio::net::TcpListener::bind(config.addr).await?;
        Ok(Self {
            listener,
            state: http::AppState {
                pool: Arc::new(pool),
                metrics: Arc::new(Metrics::default()),
                limits: config.http,
                debug_endpoints: config.debug_endpoints,
                model_dirs: Arc::new(config.models.clone()),
                www: config.www.clone(),
            },
        })
    }

    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The router this server answers with, for driving it without a socket (fuzzing, tests):
    /// `tower::ServiceExt::oneshot(server.router(), request)`.
    pub fn router(&self) -> axum::Router {
        http::router(self.state.clone())
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), Error> {
        tracing::info!(addr = %self.local_addr()?, "serving");
        let (limits, metrics) = (self.state.limits, self.state.metrics.clone());
        listen::serve(
            self.listener,
            http::router(self.state),
            limits,
            metrics,
            shutdown,
        )
        .await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}
