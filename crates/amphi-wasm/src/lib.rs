//! # amphi-wasm
//!
//! The artifact: `amphi-core` behind a small C ABI, built once as `amphi.wasm`
//! (`cargo xtask artifact`) and loaded unchanged by every host. Its only imports are the
//! `amphi_host` functions of [`host`]; the ABI is documented in `docs/abi.md`.
//!
//! A host drives it like this (pseudo-code; see `crates/amphi-serve` for a real host):
//!
//! ```text
//! files = amphi_files_new()
//! for (name, bytes) in model folder:
//!     amphi_files_add(files, put(name), len(name), put(bytes), len(bytes))
//! model = amphi_model_load(files, put(options_json), len)        # >= 1, or -1 + error JSON
//! status = amphi_run(model, put("feature-extraction"), 18, put(request_json), len)
//! json = memory[amphi_result_ptr() .. + amphi_result_len()]       # result, or error JSON
//! ```
//!
//! `put(bytes)` is `amphi_alloc(len)` followed by a write into the module's memory; every buffer
//! passed into a call belongs to the module afterwards.

pub mod gpu;
pub mod host;
pub mod session;

use std::cell::RefCell;
use std::sync::Arc;

use amphi_core::{
    Device, Error, LoadOptions, Model, ModelFiles, Pending, Pipeline, Precision, Response, Started,
    Task,
};
use serde::Deserialize;

/// Version of the ABI below. Hosts check it before anything else. Version 2 added the
/// `amphi_gpu` imports ([`gpu`]) and `amphi_resume`; version 3 image models and request
/// attachments ([`amphi_attach`]); version 4 the `amphi_host.interrupted` import ([`host`]);
/// version 5 sessions ([`session`]: open / step / resume / free, streamed chunks) and model
/// files added in pieces ([`amphi_files_append`]).
pub const ABI_VERSION: i32 = 5;

/// Status returned by fallible calls: success.
pub const STATUS_OK: i32 = 0;
/// Status returned by fallible calls: failure; the result buffer holds `{"code", "message"}`.
pub const STATUS_ERROR: i32 = -1;
/// Status of [`amphi_run`] and [`amphi_resume`]: waiting for a GPU readback the host finishes
/// later; the result buffer holds `{"readback": id}`. The host writes the bytes where its
/// `read_buffer` import was told to, then calls [`amphi_resume`].
pub const STATUS_PENDING: i32 = 1;

#[derive(Default)]
struct State {
    files: Vec<Option<ModelFiles>>,
    models: Vec<Option<Arc<Model>>>,
    /// Binary attachments of the next [`amphi_run`] (images).
    attachments: Vec<Vec<u8>>,
    result: Vec<u8>,
    tokens: usize,
    /// The request waiting for its readback (one at a time).
    pending: Option<(Pipeline, Pending)>,
    /// Open sessions ([`session`]).
    sessions: Vec<Option<session::Open>>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn insert<T>(slots: &mut Vec<Option<T>>, value: T) -> i32 {
    let index = match slots.iter().position(Option::is_none) {
        Some(i) => {
            slots[i] = Some(value);
            i
        }
        None => {
            slots.push(Some(value));
            slots.len() - 1
        }
    };
    i32::try_from(index + 1).unwrap_or(i32::MAX)
}

fn slot<T>(slots: &mut [Option<T>], handle: i32) -> Option<&mut Option<T>> {
    let index = usize::try_from(handle).ok()?.checked_sub(1)?;
    slots.get_mut(index)
}

fn set_result(bytes: Vec<u8>) {
    STATE.with(|s| s.borrow_mut().result = bytes);
}

fn fail(err: &Error) -> i32 {
    let body = serde_json::json!({"code": err.code(), "message": err.to_string()});
    set_result(body.to_string().into_bytes());
    STATUS_ERROR
}

fn bad_handle(what: &str, handle: i32) -> i32 {
    fail(&Error::InvalidInput {
        message: format!("unknown {what} handle {handle}"),
    })
}

/// Takes ownership of a buffer allocated by [`amphi_alloc`].
///
/// # Safety
/// `ptr`/`len` must come from one `amphi_alloc(len)` call and not be used afterwards.
unsafe fn take(ptr: *mut u8, len: usize) -> Vec<u8> {
    if len == 0 {
        return Vec::new();
    }
    // SAFETY: `amphi_alloc` leaked exactly this boxed slice.
    unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(ptr, len)) }.into_vec()
}

/// Like [`take`], for UTF-8 text.
///
/// # Safety
/// As for [`take`].
unsafe fn take_str(ptr: *mut u8, len: usize) -> Result<String, Error> {
    // SAFETY: forwarded.
    String::from_utf8(unsafe { take(ptr, len) }).map_err(|_| Error::InvalidInput {
        message: "text argument is not valid UTF-8".to_owned(),
    })
}

/// The ABI version ([`ABI_VERSION`]).
#[unsafe(no_mangle)]
pub extern "C" fn amphi_abi_version() -> i32 {
    host::install_hooks();
    ABI_VERSION
}

/// Allocates `len` bytes for the host to write an argument into. Returns 0 when `len` is 0.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_alloc(len: usize) -> *mut u8 {
    if len == 0 {
        return std::ptr::null_mut();
    }
    Box::into_raw(vec![0u8; len].into_boxed_slice()).cast()
}

/// Frees a buffer from [`amphi_alloc`] that was not passed into a call.
///
/// # Safety
/// `ptr`/`len` must come from one `amphi_alloc(len)` call.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn amphi_free(ptr: *mut u8, len: usize) {
    // SAFETY: forwarded.
    drop(unsafe { take(ptr, len) });
}

/// Starts an empty set of model files. Returns its handle (≥ 1).
#[unsafe(no_mangle)]
pub extern "C" fn amphi_files_new() -> i32 {
    host::install_hooks();
    STATE.with(|s| insert(&mut s.borrow_mut().files, ModelFiles::new()))
}

/// Adds a file (`name` as in a Hugging Face folder, e.g. `1_Pooling/config.json`). Takes both
/// buffers. Returns [`STATUS_OK`] or [`STATUS_ERROR`].
///
/// # Safety
/// Both buffers must come from [`amphi_alloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn amphi_files_add(
    files: i32,
    name_ptr: *mut u8,
    name_len: usize,
    data_ptr: *mut u8,
    data_len: usize,
) -> i32 {
    // SAFETY: the caller passes buffers from `amphi_alloc`.
    let (name, data) = unsafe { (take_str(name_ptr, name_len), take(data_ptr, data_len)) };
    let name = match name {
        Ok(n) => n,
        Err(e) => return fail(&e),
    };
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        match slot(&mut s.files, files) {
            Some(Some(set)) => {
                set.insert(name, data);
                STATUS_OK
            }
            _ => {
                drop(s);
                bad_handle("files", files)
            }
        }
    })
}

/// Appends a piece to a file of a set (creating it), so that a host can stream a large file
/// into guest memory without holding it whole as one buffer of its own. `total_len` is the
/// file's final size when known (the first piece reserves it; 0 = unknown). Takes both
/// buffers. Returns [`STATUS_OK`] or [`STATUS_ERROR`].
///
/// # Safety
/// Both buffers must come from [`amphi_alloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn amphi_files_append(
    files: i32,
    name_ptr: *mut u8,
    name_len: usize,
    data_ptr: *mut u8,
    data_len: usize,
    total_len: usize,
) -> i32 {
    // SAFETY: the caller passes buffers from `amphi_alloc`.
    let (name, data) = unsafe { (take_str(name_ptr, name_len), take(data_ptr, data_len)) };
    let name = match name {
        Ok(n) => n,
        Err(e) => return fail(&e),
    };
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        match slot(&mut s.files, files) {
            Some(Some(set)) => match set.append(&name, &data, total_len) {
                Ok(()) => STATUS_OK,
                Err(e) => {
                    drop(s);
                    fail(&e)
                }
            },
            _ => {
                drop(s);
                bad_handle("files", files)
            }
        }
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct LoadJson {
    device: Option<Device>,
    max_length: Option<usize>,
    precision: Option<Precision>,
    max_image_pixels: Option<u64>,
}

/// Loads a model from a set of files (consumed, even on failure) with options JSON
/// (`{"device": "auto"|"cpu"|"gpu", "max_length": n, "precision": "f32"|"f16"}`, may be empty). Returns the model handle
/// (≥ 1) or [`STATUS_ERROR`].
///
/// # Safety
/// The options buffer must come from [`amphi_alloc`] (or be null with length 0).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn amphi_model_load(
    files: i32,
    options_ptr: *mut u8,
    options_len: usize,
) -> i32 {
    // SAFETY: forwarded.
    let options = unsafe { take(options_ptr, options_len) };
    let handle = files;
    let files = STATE.with(|s| slot(&mut s.borrow_mut().files, handle).and_then(Option::take));
    let Some(files) = files else {
        return bad_handle("files", handle);
    };
    let options: LoadJson = if options.is_empty() {
        LoadJson::default()
    } else {
        match serde_json::from_slice(&options) {
            Ok(o) => o,
            Err(e) => {
                return fail(&Error::InvalidInput {
                    message: format!("load options: {e}"),
                });
            }
        }
    };
    let device = options.device.unwrap_or_default();
    let options = LoadOptions {
        device,
        max_length: options.max_length,
        precision: options.precision.unwrap_or_default(),
        max_image_pixels: options.max_image_pixels,
        gpu: (device != Device::Cpu)
            .then(gpu::ImportedGpu::detect)
            .flatten(),
    };
    match Model::load(files, &options) {
        Ok(model) => STATE.with(|s| insert(&mut s.borrow_mut().models, Arc::new(model))),
        Err(e) => fail(&e),
    }
}

fn with_model<R>(model: i32, f: impl FnOnce(&Arc<Model>) -> R) -> Option<R> {
    let model = STATE.with(|s| slot(&mut s.borrow_mut().models, model).and_then(|m| m.clone()))?;
    Some(f(&model))
}

/// Writes a description of a loaded model to the result buffer ([`amphi_core::ModelInfo`]):
/// `{"device", "precision", "tasks", "architectures", "labels"}`, plus `"hidden_size",
/// "max_length", "embedding_defaults"` for text models and `"max_image_pixels"` for image models.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_model_info(model: i32) -> i32 {
    match with_model(model, |m| serde_json::to_vec(&m.info())) {
        Some(Ok(info)) => {
            set_result(info);
            STATUS_OK
        }
        Some(Err(e)) => fail(&Error::Backend {
            message: e.to_string(),
        }),
        None => bad_handle("model", model),
    }
}

/// Attaches bytes (an encoded image, or raw RGBA pixels) to the next [`amphi_run`], which
/// refers to them as `{"blob": i}` and discards them. Takes the buffer. Returns the index `i`.
///
/// # Safety
/// The buffer must come from [`amphi_alloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn amphi_attach(ptr: *mut u8, len: usize) -> i32 {
    // SAFETY: the caller passes a buffer from `amphi_alloc`.
    let data = unsafe { take(ptr, len) };
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        s.attachments.push(data);
        i32::try_from(s.attachments.len() - 1).unwrap_or(i32::MAX)
    })
}

/// Frees a model.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_model_free(model: i32) {
    STATE.with(|s| {
        if let Some(slot) = slot(&mut s.borrow_mut().models, model) {
            *slot = None;
        }
    });
}

/// Runs `task` (e.g. `feature-extraction`) on a request in the Hugging Face inference shape
/// (`{"inputs": ..., "parameters": {...}}`). Takes both buffers. Returns [`STATUS_OK`] with the
/// result JSON in the result buffer, or [`STATUS_ERROR`].
///
/// # Safety
/// Both buffers must come from [`amphi_alloc`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn amphi_run(
    model: i32,
    task_ptr: *mut u8,
    task_len: usize,
    request_ptr: *mut u8,
    request_len: usize,
) -> i32 {
    // SAFETY: the caller passes buffers from `amphi_alloc`.
    let (task, request) = unsafe { (take_str(task_ptr, task_len), take(request_ptr, request_len)) };
    let attachments = STATE.with(|s| std::mem::take(&mut s.borrow_mut().attachments));
    let run = || -> Result<Step, Error> {
        let task: Task = task?.parse()?;
        let pipeline =
            with_model(model, |m| Pipeline::new(task, m.clone())).ok_or_else(|| {
                Error::InvalidInput {
                    message: format!("unknown model handle {model}"),
                }
            })??;
        Ok(match pipeline.start_json(&request, attachments)? {
            Started::Done(response) => Step::Done(response),
            Started::Pending(pending) => Step::Pending(pipeline, pending),
        })
    };
    finish(run())
}

enum Step {
    Done(Response),
    Pending(Pipeline, Pending),
}

fn finish(step: Result<Step, Error>) -> i32 {
    let response = match step {
        Ok(Step::Done(response)) => response,
        Ok(Step::Pending(pipeline, pending)) => {
            let body = serde_json::json!({"readback": pending.readback()});
            STATE.with(|s| s.borrow_mut().pending = Some((pipeline, pending)));
            set_result(body.to_string().into_bytes());
            return STATUS_PENDING;
        }
        Err(e) => return fail(&e),
    };
    STATE.with(|s| s.borrow_mut().tokens = response.tokens);
    match serde_json::to_vec(&response) {
        Ok(json) => {
            set_result(json);
            STATUS_OK
        }
        Err(e) => fail(&Error::Backend {
            message: e.to_string(),
        }),
    }
}

/// Finishes the request [`amphi_run`] left pending, once the host has written the readback's
/// bytes. Returns like [`amphi_run`].
#[unsafe(no_mangle)]
pub extern "C" fn amphi_resume() -> i32 {
    let step = || -> Result<Step, Error> {
        let (pipeline, pending) =
            STATE
                .with(|s| s.borrow_mut().pending.take())
                .ok_or_else(|| Error::InvalidInput {
                    message: "no request is waiting for a readback".to_owned(),
                })?;
        let bytes = gpu::ImportedGpu::detect()
            .and_then(|_| gpu::take_readback(pending.readback()))
            .ok_or_else(|| Error::Backend {
                message: format!("readback {} is unknown", pending.readback()),
            })?;
        Ok(Step::Done(pipeline.resume(pending, &bytes)?))
    };
    finish(step())
}

/// Tokens (special tokens included, padding excluded) the last successful [`amphi_run`] processed.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_last_tokens() -> usize {
    STATE.with(|s| s.borrow().tokens)
}

/// Pointer to the result buffer of the last call.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_result_ptr() -> *const u8 {
    STATE.with(|s| s.borrow().result.as_ptr())
}

/// Length of the result buffer of the last call.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_result_len() -> usize {
    STATE.with(|s| s.borrow().result.len())
}

/// Test hook: panics inside the module, so hosts can prove a guest panic does not take them down.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_debug_panic() {
    host::install_hooks();
    panic!("amphi_debug_panic called");
}

/// Test hook: spins for ever, so hosts can prove their deadline interrupts a runaway guest.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_debug_spin() {
    let mut x: u64 = 0;
    loop {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

/// Diagnostics (not part of the versioned model interface): the CPU kernels' microbenchmarks,
/// which a host times (`amphi_core::probe`). Floating-point operations per
/// [`amphi_probe_peak`] iteration.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_probe_peak_flops() -> u32 {
    amphi_core::probe::peak_flops_per_iter() as u32
}

/// Runs `iters` iterations of the SIMD128 peak loop; returns a checksum.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_probe_peak(iters: u32) -> f32 {
    amphi_core::probe::peak(iters)
}

/// Runs the matrix multiply on `[m, k] × [k, n]` `iters` times (`2·m·n·k` flops each); returns
/// a checksum.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_probe_matmul(m: u32, n: u32, k: u32, iters: u32) -> f32 {
    amphi_core::probe::matmul(m as usize, n as usize, k as usize, iters)
}
