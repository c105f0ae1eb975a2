//! A fixed set of warm instances, each with every model loaded. A request borrows one instance
//! exclusively; an instance that trapped (deadline, panic, out of memory) is dropped and rebuilt
//! in the background while the others keep serving.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, GuestError};
use crate::runtime::{Guest, Runtime};

/// A model to load into every instance.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The name clients use (`model` in requests).
    pub name: String,
    /// The files of its Hugging Face folder.
    pub files: Vec<(String, Arc<[u8]>)>,
    /// Load options passed to the guest (`{"device", "max_length"}`).
    pub options: serde_json::Value,
}

/// A loaded model as the guest describes it.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The model's name.
    pub name: String,
    /// `amphi_model_info` JSON: device, tasks, architectures, labels, ...
    pub info: serde_json::Value,
}

/// One instance and its model handles (in [`Pool::models`] order).
#[derive(Debug)]
pub struct Worker {
    guest: Guest,
    handles: Vec<i32>,
}

impl Worker {
    fn build(runtime: &Runtime, specs: &[ModelSpec]) -> Result<(Self, Vec<ModelInfo>), Error> {
        let mut guest = runtime.instantiate()?;
        let mut handles = Vec::with_capacity(specs.len());
        let mut infos = Vec::with_capacity(specs.len());
        for spec in specs {
            let guest_err = |source| Error::Guest {
                name: spec.name.clone(),
                source,
            };
            let handle = guest
                .load_model(&spec.files, &spec.options)
                .map_err(guest_err)?;
            infos.push(ModelInfo {
                name: spec.name.clone(),
                info: guest.model_info(handle).map_err(guest_err)?,
            });
            handles.push(handle);
        }
        Ok((Self { guest, handles }, infos))
    }

    /// Runs `task` on the model at `index` of [`Pool::models`].
    pub fn run(
        &mut self,
        index: usize,
        task: &str,
        request: &[u8],
        attachments: &[&[u8]],
    ) -> Result<(Vec<u8>, usize), GuestError> {
        self.guest
            .run_with(self.handles[index], task, request, attachments)
    }

    /// Streams `task` on the model at `index` ([`Guest::stream`]).
    pub fn stream(
        &mut self,
        index: usize,
        task: &str,
        request: &[u8],
        chunk: impl FnMut(Vec<u8>, usize) -> bool,
    ) -> Result<crate::StreamEnd, GuestError> {
        self.guest.stream(self.handles[index], task, request, chunk)
    }

    /// The instance itself (test hooks).
    pub fn guest(&mut self) -> &mut Guest {
        &mut self.guest
    }
}

/// Why the pool could not run a request.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Too many requests are waiting already.
    #[error("too many requests in flight ({0}); retry later")]
    Overloaded(usize),
    /// No instance became free in time.
    #[error("no instance became free within {0:?}")]
    Busy(Duration),
    /// The guest call failed.
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// The instances and what they serve.
#[derive(Debug)]
pub struct Pool {
    runtime: Arc<Runtime>,
    specs: Arc<[ModelSpec]>,
    models: Vec<ModelInfo>,
    idle: Mutex<Vec<Worker>>,
    permits: Arc<Semaphore>,
    size: usize,
    max_waiting: usize,
    in_flight: AtomicUsize,
    restarts: AtomicU64,
    rebuilding: AtomicUsize,
}

/// Point-in-time pool figures for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct PoolStats {
    /// Instances configured.
    pub size: usize,
    /// Instances idle now.
    pub idle: usize,
    /// Requests admitted and not finished (running or waiting).
    pub in_flight: usize,
    /// Instances replaced after a trap.
    pub restarts: u64,
    /// Instances being rebuilt now (not serving).
    pub rebuilding: usize,
}

impl Pool {
    /// Builds `size` instances and loads every model into each.
    pub fn new(
        runtime: Arc<Runtime>,
        specs: Vec<ModelSpec>,
        size: usize,
        max_waiting: usize,
    ) -> Result<Self, Error> {
        if specs.is_empty() {
            return Err(Error::Model {
                name: "-".into(),
                message: "no model to serve".into(),
            });
        }
        let size = size.max(1);
        let specs: Arc<[ModelSpec]> = specs.into();
        let mut workers = Vec::with_capacity(size);
        let mut models = Vec::new();
        for _ in 0..size {
            let (worker, infos) = Worker::build(&runtime, &specs)?;
            workers.push(worker);
            models = infos;
        }
        Ok(Self {
            runtime,
            specs,
            models,
            idle: Mutex::new(workers),
            permits: Arc::new(Semaphore::new(size)),
            size,
            max_waiting,
            in_flight: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            rebuilding: AtomicUsize::new(0),
        })
    }

    /// The loaded models, in load order.
    pub fn models(&self) -> &[ModelInfo] {
        &self.models
    }

    /// The runtime the instances come from.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Current figures.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            size: self.size,
            idle: self.idle.lock().map(|v| v.len()).unwrap_or(0),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
            rebuilding: self.rebuilding.load(Ordering::SeqCst),
        }
    }

    /// Admits one request, or refuses it with [`PoolError::Overloaded`] when `size +
    /// max_waiting` are admitted already. Handlers ask before they read a body, so a refused
    /// request costs no memory; the admission counts until the request's work is done (also
    /// when its client went away before).
    pub fn admit(self: &Arc<Self>) -> Result<Admission, PoolError> {
        let admitted = self.in_flight.fetch_add(1, Ordering::SeqCst);
        let admission = Admission(Arc::clone(self));
        if admitted >= self.size + self.max_waiting {
            return Err(PoolError::Overloaded(admitted));
        }
        Ok(admission)
    }

    /// Runs `f` for an admitted request on an idle instance, waiting at most `wait` for one.
    pub async fn run<T, F>(
        self: &Arc<Self>,
        admission: Admission,
        wait: Duration,
        f: F,
    ) -> Result<T, PoolError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Worker) -> Result<T, GuestError> + Send + 'static,
    {
        let permit = tokio::time::timeout(wait, self.permits.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy(wait))?
            .map_err(|_| PoolError::Busy(wait))?;
        let mut worker = match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(_) => None,
        }
        .ok_or_else(|| GuestError::Trap {
            message: "no idle instance behind a permit".into(),
        })?;
        // The worker, its permit and the admission travel together into the blocking task,
        // which hands them back (or rebuilds the worker) itself: if this future is dropped (the
        // client went away), nothing is lost and the request still counts until it ends.
        let pool = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || {
            let _admission = admission;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut worker)))
                .unwrap_or_else(|_| {
                    Err(GuestError::Trap {
                        message: "the host panicked while serving this request".into(),
                    })
                });
            match &result {
                Err(e) if e.is_fatal() => {
                    tracing::warn!(error = %e, "instance trapped; replacing it");
                    drop(worker);
                    pool.rebuild(permit);
                }
                _ => pool.give_back(worker, permit),
            }
            result
        })
        .await
        .map_err(|e| GuestError::Trap {
            message: format!("worker task failed: {e}"),
        })?;
        Ok(result?)
    }

    fn give_back(&self, worker: Worker, permit: OwnedSemaphorePermit) {
        match self.idle.lock() {
            Ok(mut idle) => idle.push(worker),
            Err(poisoned) => poisoned.into_inner().push(worker),
        }
        drop(permit);
    }

    /// Replaces a trapped instance on a thread of its own; its permit is held until the new one
    /// is ready, so capacity comes back only with a working instance. Retries with back-off
    /// until it succeeds; meanwhile `/healthz` reports the pool as degraded.
    fn rebuild(self: &Arc<Self>, permit: OwnedSemaphorePermit) {
        let pool = Arc::clone(self);
        pool.rebuilding.fetch_add(1, Ordering::SeqCst);
        let spawned = std::thread::Builder::new()
            .name("amphi-rebuild".into())
            .spawn(move || {
                let mut delay = Duration::from_millis(100);
                loop {
                    match Worker::build(&pool.runtime, &pool.specs) {
                        Ok((worker, _)) => {
                            pool.restarts.fetch_add(1, Ordering::Relaxed);
                            pool.rebuilding.fetch_sub(1, Ordering::SeqCst);
                            pool.give_back(worker, permit);
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, retry_in = ?delay, "rebuilding an instance failed");
                            std::thread::sleep(delay);
                            delay = (delay * 2).min(Duration::from_secs(30));
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "could not start a rebuild thread; the pool is one instance short");
        }
    }
}

/// One admitted request ([`Pool::admit`]); dropping it ends the admission.
#[derive(Debug)]
pub struct Admission(Arc<Pool>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}
