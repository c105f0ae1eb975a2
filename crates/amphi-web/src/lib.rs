//! The browser and Node.js host of `amphi.wasm`.
//!
//! This crate is compiled to its own small wasm module with `wasm-bindgen` (`cargo xtask npm`
//! puts it in the npm package beside `amphi.wasm`). It instantiates the **unchanged** artifact —
//! the bytes the serverless host runs — with `WebAssembly.instantiate`, implements the artifact's
//! host interface (`amphi_host.random_fill` on `crypto.getRandomValues`, `amphi_host.log` on a
//! callback or the console, `amphi_host.interrupted` always 0: no deadlines here), and bridges
//! calls: model files in, JSON requests in, JSON results out. Pipelines, tokenization and
//! numerics all live in the engine; this crate only converts types. Errors cross as JS `Error`
//! objects with a stable `code` (the engine's codes, plus `engine_crashed`, `disposed` and
//! `abi_mismatch` from this host).
//!
//! From JavaScript (the npm package's `lib/engine.js` does exactly this):
//!
//! ```js
//! import init, { Engine } from './amphi_web.js';
//! await init({ module_or_path: new URL('./amphi_web_bg.wasm', import.meta.url) });
//! const engine = await Engine.create(await WebAssembly.compileStreaming(fetch('amphi.wasm')));
//! const model = engine.load(new Map([['config.json', bytes], /* … */]), '{"device":"cpu"}');
//! const vectors = model.run('feature-extraction', { inputs: ['Hello world'] });
//! model.dispose();
//! ```
//!
//! The ABI is documented in `docs/abi.md`.

mod gpu;
mod stream;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use gpu::{Imports, MemorySlot, NoGpu, WebGpu};

use js_sys::{Function, Object, Reflect, Uint8Array, WebAssembly};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

/// The ABI version this host speaks.
const ABI_VERSION: i32 = 5;

#[wasm_bindgen]
extern "C" {
    /// The artifact's exports (docs/abi.md). Every call may trap, hence `catch`.
    #[derive(Debug)]
    type Exports;

    #[wasm_bindgen(method, getter)]
    fn memory(this: &Exports) -> WebAssembly::Memory;
    #[wasm_bindgen(method, catch)]
    fn amphi_abi_version(this: &Exports) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_alloc(this: &Exports, len: i32) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_files_new(this: &Exports) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_files_add(
        this: &Exports,
        files: i32,
        name_ptr: i32,
        name_len: i32,
        data_ptr: i32,
        data_len: i32,
    ) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_model_load(
        this: &Exports,
        files: i32,
        options_ptr: i32,
        options_len: i32,
    ) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_model_info(this: &Exports, model: i32) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_model_free(this: &Exports, model: i32) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_run(
        this: &Exports,
        model: i32,
        task_ptr: i32,
        task_len: i32,
        request_ptr: i32,
        request_len: i32,
    ) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_attach(this: &Exports, ptr: i32, len: i32) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_last_tokens(this: &Exports) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_result_ptr(this: &Exports) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_result_len(this: &Exports) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_resume(this: &Exports) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_debug_panic(this: &Exports) -> Result<(), JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_session_open(
        this: &Exports,
        model: i32,
        task_ptr: i32,
        task_len: i32,
        request_ptr: i32,
        request_len: i32,
    ) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_session_step(this: &Exports, session: i32) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_session_resume(this: &Exports, session: i32) -> Result<i32, JsValue>;
    #[wasm_bindgen(method, catch)]
    fn amphi_session_free(this: &Exports, session: i32) -> Result<i32, JsValue>;

    /// `globalThis.crypto.getRandomValues`: browsers, workers and Node ≥ 19.
    #[wasm_bindgen(js_namespace = crypto, js_name = getRandomValues, catch)]
    fn get_random_values(buf: &Uint8Array) -> Result<JsValue, JsValue>;
}

/// A JS `Error` with a stable `code`.
fn error(code: &str, message: &str) -> JsValue {
    let e = js_sys::Error::new(message);
    e.set_name("AmphiError");
    // Setting a property on a fresh Error object cannot fail.
    let _ = Reflect::set(&e, &"code".into(), &code.into());
    e.into()
}

/// A view of `len` bytes at guest address `ptr`. Taken anew after every guest call: memory
/// growth detaches the previous buffer.
fn view(memory: &WebAssembly::Memory, ptr: i32, len: i32) -> Uint8Array {
    Uint8Array::new_with_byte_offset_and_length(&memory.buffer(), ptr as u32, len as u32)
}

fn decode(bytes: &Uint8Array) -> String {
    String::from_utf8_lossy(&bytes.to_vec()).into_owned()
}

type RandomFill = Closure<dyn Fn(i32, i32) -> i32>;
type Log = Closure<dyn Fn(i32, i32, i32)>;
type Interrupted = Closure<dyn Fn() -> i32>;

/// One instance of the artifact, shared by the models loaded into it.
struct Guest {
    exports: Exports,
    memory: WebAssembly::Memory,
    /// Set once the instance has trapped: its state is unknown from then on.
    crashed: RefCell<Option<String>>,
    /// The last error-level message the guest logged (a panic message arrives this way).
    last_error: Rc<RefCell<Option<String>>>,
    /// The instance's GPU, if the engine was created with one.
    gpu: Option<Rc<WebGpu>>,
    _imports: (RandomFill, Log, Interrupted, GpuImports),
}

/// Whichever `amphi_gpu` imports the instance got.
enum GpuImports {
    WebGpu(Imports),
    None(NoGpu),
}

impl Guest {
    fn check_alive(&self) -> Result<(), JsValue> {
        match &*self.crashed.borrow() {
            Some(why) => Err(error("engine_crashed", why)),
            None => Ok(()),
        }
    }

    /// Turns a trap into `engine_crashed` and poisons the instance.
    fn trapped(&self, e: JsValue) -> JsValue {
        let trap = e
            .dyn_ref::<js_sys::Error>()
            .map(|e| String::from(e.message()))
            .unwrap_or_else(|| "unknown trap".into());
        let why = match self.last_error.borrow_mut().take() {
            Some(logged) => format!("amphi.wasm trapped ({trap}): {logged}"),
            None => format!("amphi.wasm trapped: {trap}"),
        };
        *self.crashed.borrow_mut() = Some(why.clone());
        error("engine_crashed", &why)
    }

    fn call<T>(&self, f: impl FnOnce(&Exports) -> Result<T, JsValue>) -> Result<T, JsValue> {
        self.check_alive()?;
        f(&self.exports).map_err(|e| self.trapped(e))
    }

    /// Copies bytes into a fresh guest buffer (which the next call takes ownership of).
    fn put(&self, bytes: &Uint8Array) -> Result<(i32, i32), JsValue> {
        let len = i32::try_from(bytes.length())
            .map_err(|_| error("input_too_large", "a buffer of 2 GiB or more"))?;
        let ptr = self.call(|x| x.amphi_alloc(len))?;
        if len > 0 {
            view(&self.memory, ptr, len).set(bytes, 0);
        }
        Ok((ptr, len))
    }

    fn put_str(&self, s: &str) -> Result<(i32, i32), JsValue> {
        self.put(&Uint8Array::from(s.as_bytes()))
    }

    fn result(&self) -> Result<String, JsValue> {
        let ptr = self.call(|x| x.amphi_result_ptr())?;
        let len = self.call(|x| x.amphi_result_len())?;
        Ok(decode(&view(&self.memory, ptr, len)))
    }

    /// Status ≥ 0 passes; -1 becomes the engine's typed error.
    fn check(&self, status: i32) -> Result<i32, JsValue> {
        if status >= 0 {
            return Ok(status);
        }
        let text = self.result()?;
        let parsed = js_sys::JSON::parse(&text).ok();
        let field = |name: &str| {
            parsed
                .as_ref()
                .and_then(|p| Reflect::get(p, &name.into()).ok())
                .and_then(|v| v.as_string())
        };
        Err(error(
            &field("code").unwrap_or_else(|| "internal_error".into()),
            &field("message").unwrap_or(text),
        ))
    }

    fn result_json(&self) -> Result<JsValue, JsValue> {
        js_sys::JSON::parse(&self.result()?)
            .map_err(|_| error("internal_error", "amphi.wasm returned malformed JSON"))
    }

    /// Awaits the GPU readback the guest is waiting for and writes its bytes into guest memory
    /// (after status 1; the caller then resumes the request or session).
    async fn finish_readback(&self) -> Result<(), JsValue> {
        let gpu = self
            .gpu
            .clone()
            .ok_or_else(|| error("internal_error", "a readback is pending without a GPU"))?;
        let (readback, dst) = gpu.pending.borrow_mut().take().ok_or_else(|| {
            error(
                "internal_error",
                "amphi.wasm is waiting for an unknown readback",
            )
        })?;
        let data = gpu
            .host
            .finish_read(readback)
            .await
            .map_err(|e| error("backend_error", &e.to_string()))?;
        gpu::write(&gpu.memory_slot(), dst, &data).map_err(|e| error("backend_error", &e))
    }
}

/// An instance of `amphi.wasm`.
#[wasm_bindgen]
pub struct Engine {
    guest: Rc<Guest>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("crashed", &self.guest.crashed.borrow())
            .finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl Engine {
    /// Instantiates a compiled `amphi.wasm`. `log(level, message)` receives the guest's log
    /// lines (level 0 error … 3 debug); without it they go to the console. With `webgpu`, the
    /// instance gets the browser's GPU (WebGPU) when there is an adapter.
    pub async fn create(
        module: WebAssembly::Module,
        log: Option<Function>,
        webgpu: bool,
    ) -> Result<Engine, JsValue> {
        let memory: MemorySlot = Rc::default();
        let last_error: Rc<RefCell<Option<String>>> = Rc::default();

        let mem = memory.clone();
        let random_fill: RandomFill = Closure::new(move |ptr: i32, len: i32| {
            let Some(memory) = &*mem.borrow() else {
                return 1;
            };
            // getRandomValues fills at most 65536 bytes per call.
            let mut done = 0;
            while done < len {
                let n = (len - done).min(65536);
                if get_random_values(&view(memory, ptr + done, n)).is_err() {
                    return 1;
                }
                done += n;
            }
            0
        });
        let (mem, last) = (memory.clone(), last_error.clone());
        let log_line: Log = Closure::new(move |level: i32, ptr: i32, len: i32| {
            let Some(memory) = &*mem.borrow() else {
                return;
            };
            let message = decode(&view(memory, ptr, len));
            if level == 0 {
                *last.borrow_mut() = Some(message.clone());
            }
            match &log {
                Some(f) => {
                    let _ = f.call2(&JsValue::NULL, &level.into(), &message.into());
                }
                None if level == 0 => web_sys::console::error_1(&message.into()),
                None if level == 1 => web_sys::console::warn_1(&message.into()),
                None => {}
            }
        });

        // Calls here have no deadline: a call runs to its end (the page or worker decides
        // whether to wait for it).
        let interrupted: Interrupted = Closure::new(|| 0);

        let host = Object::new();
        Reflect::set(&host, &"random_fill".into(), random_fill.as_ref())?;
        Reflect::set(&host, &"log".into(), log_line.as_ref())?;
        Reflect::set(&host, &"interrupted".into(), interrupted.as_ref())?;
        let webgpu = match webgpu {
            true => match amphi_gpu::WgpuHost::new_async().await {
                Ok(host) => Some(WebGpu::new(host, memory.clone())),
                Err(e) => {
                    web_sys::console::info_1(
                        &format!("amphi: no WebGPU ({e}); running on the CPU").into(),
                    );
                    None
                }
            },
            false => None,
        };
        let gpu_imports = match &webgpu {
            Some(g) => GpuImports::WebGpu(g.imports()?),
            None => GpuImports::None(NoGpu::new()?),
        };
        let imports = Object::new();
        Reflect::set(&imports, &"amphi_host".into(), &host)?;
        let gpu_object = match &gpu_imports {
            GpuImports::WebGpu(i) => i.object(),
            GpuImports::None(n) => n.object(),
        };
        Reflect::set(&imports, &"amphi_gpu".into(), gpu_object)?;

        let instance: WebAssembly::Instance =
            JsFuture::from(WebAssembly::instantiate_module(&module, &imports))
                .await?
                .dyn_into()?;
        let exports: Exports = instance.exports().unchecked_into();
        let guest_memory = exports.memory();
        *memory.borrow_mut() = Some(guest_memory.clone());

        let version = exports.amphi_abi_version()?;
        if version != ABI_VERSION {
            return Err(error(
                "abi_mismatch",
                &format!("amphi.wasm speaks ABI {version}; this host speaks {ABI_VERSION}"),
            ));
        }
        Ok(Engine {
            guest: Rc::new(Guest {
                exports,
                memory: guest_memory,
                crashed: RefCell::new(None),
                last_error,
                gpu: webgpu,
                _imports: (random_fill, log_line, interrupted, gpu_imports),
            }),
        })
    }

    /// The ABI version of the instantiated artifact.
    #[wasm_bindgen(getter, js_name = abiVersion)]
    pub fn abi_version(&self) -> i32 {
        ABI_VERSION
    }

    /// Bytes of linear memory the instance holds (it grows, never shrinks; freed memory is
    /// reused).
    #[wasm_bindgen(getter, js_name = memoryBytes)]
    pub fn memory_bytes(&self) -> f64 {
        self.guest
            .memory
            .buffer()
            .unchecked_into::<js_sys::ArrayBuffer>()
            .byte_length() as f64
    }

    /// The WebGPU adapter the instance can use, if any.
    #[wasm_bindgen(getter)]
    pub fn adapter(&self) -> Option<String> {
        self.guest.gpu.as_ref().map(|g| g.adapter())
    }

    /// Whether the instance trapped (every later call fails with `engine_crashed`).
    #[wasm_bindgen(getter)]
    pub fn crashed(&self) -> bool {
        self.guest.crashed.borrow().is_some()
    }

    /// Loads a model from its files (`Map` of Hugging Face file names to bytes) and options
    /// JSON (`{"device": "auto"|"cpu"|"gpu", "max_length": n}`).
    pub fn load(&self, files: &js_sys::Map, options: &str) -> Result<Model, JsValue> {
        let g = &self.guest;
        let set = g.call(|x| x.amphi_files_new())?;
        let mut failure = None;
        files.for_each(&mut |data, name| {
            if failure.is_some() {
                return;
            }
            let added = (|| {
                let name = name
                    .as_string()
                    .ok_or_else(|| error("invalid_input", "file names must be strings"))?;
                let data = data.dyn_into::<Uint8Array>().map_err(|_| {
                    error(
                        "invalid_input",
                        &format!("{name}: bytes must be a Uint8Array"),
                    )
                })?;
                let (np, nl) = g.put_str(&name)?;
                let (dp, dl) = g.put(&data)?;
                let status = g.call(|x| x.amphi_files_add(set, np, nl, dp, dl))?;
                g.check(status)
            })();
            if let Err(e) = added {
                failure = Some(e);
            }
        });
        let (op, ol) = g.put_str(options)?;
        // The set is consumed by amphi_model_load, also when a file failed to add.
        let status = g.call(|x| x.amphi_model_load(set, op, ol))?;
        if let Some(e) = failure {
            if status > 0 {
                g.call(|x| x.amphi_model_free(status))?;
            }
            return Err(e);
        }
        let handle = g.check(status)?;
        Ok(Model {
            guest: self.guest.clone(),
            handle: Cell::new(handle),
        })
    }

    /// Test hook: makes the guest panic, to prove a trap is contained.
    #[doc(hidden)]
    #[wasm_bindgen(js_name = __debugPanic)]
    pub fn debug_panic(&self) -> Result<(), JsValue> {
        self.guest.call(|x| x.amphi_debug_panic())
    }
}

/// A model loaded into an [`Engine`].
#[wasm_bindgen]
pub struct Model {
    guest: Rc<Guest>,
    handle: Cell<i32>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("handle", &self.handle.get())
            .finish_non_exhaustive()
    }
}

#[wasm_bindgen]
impl Model {
    fn handle(&self) -> Result<i32, JsValue> {
        match self.handle.get() {
            0 => Err(error("disposed", "this model was disposed")),
            h => Ok(h),
        }
    }

    /// `{device, tasks, architectures, hidden_size, max_length, labels, embedding_defaults}`.
    pub fn info(&self) -> Result<JsValue, JsValue> {
        let h = self.handle()?;
        let status = self.guest.call(|x| x.amphi_model_info(h))?;
        self.guest.check(status)?;
        self.guest.result_json()
    }

    /// Runs a pipeline: `task` and a request `{inputs, parameters}` in the Hugging Face shape;
    /// resolves to the pipeline's output. `attachments` (`Uint8Array`s: encoded images or raw
    /// RGBA pixels) are what the request's `{"blob": i}` inputs refer to. On WebGPU the engine
    /// returns to this host while the GPU reads back; the host awaits the mapping and resumes it.
    pub fn run(
        &self,
        task: &str,
        request: &JsValue,
        attachments: Option<js_sys::Array>,
    ) -> js_sys::Promise {
        let started = (|| {
            let h = self.handle()?;
            let json = js_sys::JSON::stringify(request)
                .ok()
                .and_then(|s| s.as_string())
                .ok_or_else(|| error("invalid_input", "the request is not JSON-serialisable"))?;
            let g = &self.guest;
            for item in attachments.iter().flat_map(|a| a.iter()) {
                let bytes = item
                    .dyn_into::<Uint8Array>()
                    .map_err(|_| error("invalid_input", "attachments must be Uint8Arrays"))?;
                let (p, l) = g.put(&bytes)?;
                g.call(|x| x.amphi_attach(p, l))?;
            }
            let (tp, tl) = g.put_str(task)?;
            let (rp, rl) = g.put_str(&json)?;
            g.call(|x| x.amphi_run(h, tp, tl, rp, rl))
        })();
        let guest = self.guest.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut status = started?;
            while status == 1 {
                guest.finish_readback().await?;
                status = guest.call(|x| x.amphi_resume())?;
            }
            guest.check(status)?;
            guest.result_json()
        })
    }

    /// Opens a session (`docs/abi.md`, ABI v5) for `task` on a request `{inputs, parameters,
    /// stream}`: a [`stream::Stream`] whose `next()` computes the next chunk.
    #[wasm_bindgen(js_name = openStream)]
    pub fn open_stream(&self, task: &str, request: &JsValue) -> Result<stream::Stream, JsValue> {
        let h = self.handle()?;
        let json = js_sys::JSON::stringify(request)
            .ok()
            .and_then(|s| s.as_string())
            .ok_or_else(|| error("invalid_input", "the request is not JSON-serialisable"))?;
        let g = &self.guest;
        let (tp, tl) = g.put_str(task)?;
        let (rp, rl) = g.put_str(&json)?;
        let status = g.call(|x| x.amphi_session_open(h, tp, tl, rp, rl))?;
        let session = g.check(status)?;
        Ok(stream::Stream::new(self.guest.clone(), session))
    }

    /// Tokens processed by the last successful `run` of this engine.
    #[wasm_bindgen(js_name = lastTokens)]
    pub fn last_tokens(&self) -> Result<i32, JsValue> {
        self.guest.call(|x| x.amphi_last_tokens())
    }

    /// Frees the model's memory inside the engine. Later calls fail with code `disposed`.
    pub fn dispose(&self) {
        let h = self.handle.replace(0);
        if h != 0 && self.guest.check_alive().is_ok() {
            // A trap here has already poisoned the guest; nothing else to release.
            let _ = self.guest.call(|x| x.amphi_model_free(h));
        }
    }

    /// Whether `dispose` was called.
    #[wasm_bindgen(getter)]
    pub fn disposed(&self) -> bool {
        self.handle.get() == 0
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        self.dispose();
    }
}
