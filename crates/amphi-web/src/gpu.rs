//! The artifact's `amphi_gpu` imports in browsers: `amphi_gpu::WgpuHost` on WebGPU (wgpu's
//! `webgpu` backend). Readbacks are asynchronous: `read_buffer` answers 1 (pending), the bridge
//! awaits the mapping, writes the bytes where the guest asked, and calls `amphi_resume`.
//!
//! Without WebGPU (Node, or a browser without an adapter) every host still provides the imports:
//! [`NoGpu`] answers `info` with -1.

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use amphi_gpu::{BufferId, GpuHost, PipelineId, Readback, WgpuHost};
use js_sys::{Object, Reflect, Uint8Array, WebAssembly};
use wasm_bindgen::prelude::*;

/// The guest's memory, set once the instance exists.
pub(crate) type MemorySlot = Rc<RefCell<Option<WebAssembly::Memory>>>;

fn bytes(memory: &MemorySlot, ptr: i32, len: i32) -> Result<Vec<u8>, String> {
    let memory = memory.borrow();
    let memory = memory.as_ref().ok_or("no guest memory")?;
    let buffer = memory.buffer().unchecked_into::<js_sys::ArrayBuffer>();
    let (start, len) = (ptr as u32 as f64, len as u32 as f64);
    if start + len > buffer.byte_length() as f64 {
        return Err("a GPU call pointed outside guest memory".to_owned());
    }
    Ok(Uint8Array::new_with_byte_offset_and_length(&buffer, ptr as u32, len as u32).to_vec())
}

/// Checks that `[ptr, ptr + len)` lies in guest memory (which only grows), before a readback
/// is started that will write there.
fn check_destination(memory: &MemorySlot, ptr: i32, len: i32) -> Result<(), String> {
    let memory = memory.borrow();
    let memory = memory.as_ref().ok_or("no guest memory")?;
    let buffer = memory.buffer().unchecked_into::<js_sys::ArrayBuffer>();
    if ptr as u32 as f64 + len as u32 as f64 > buffer.byte_length() as f64 {
        return Err("a GPU readback pointed outside guest memory".to_owned());
    }
    Ok(())
}

pub(crate) fn write(memory: &MemorySlot, ptr: i32, data: &[u8]) -> Result<(), String> {
    let memory = memory.borrow();
    let memory = memory.as_ref().ok_or("no guest memory")?;
    let buffer = memory.buffer().unchecked_into::<js_sys::ArrayBuffer>();
    if ptr as u32 as f64 + data.len() as f64 > buffer.byte_length() as f64 {
        return Err("a GPU readback pointed outside guest memory".to_owned());
    }
    Uint8Array::new_with_byte_offset_and_length(&buffer, ptr as u32, data.len() as u32)
        .copy_from(data);
    Ok(())
}

/// State shared by the imports of one instance.
pub(crate) struct WebGpu {
    pub(crate) host: WgpuHost,
    memory: MemorySlot,
    buffers: RefCell<HashSet<u32>>,
    last_error: RefCell<String>,
    /// The readback the guest is waiting for, and where its bytes go.
    pub(crate) pending: RefCell<Option<(u32, i32)>>,
}

impl Drop for WebGpu {
    fn drop(&mut self) {
        for id in self.buffers.borrow_mut().drain() {
            self.host.destroy_buffer(BufferId(id));
        }
    }
}

type F2 = Closure<dyn Fn(i32, i32) -> i32>;
type F1 = Closure<dyn Fn(i32) -> i32>;
type F4 = Closure<dyn Fn(i32, i32, i32, i32) -> i32>;
type F8 = Closure<dyn Fn(i32, i32, i32, i32, i32, i32, i32, i32) -> i32>;
type Unit = Closure<dyn Fn(i32)>;
type Const = Closure<dyn Fn() -> i32>;

/// The closures behind the imports (kept alive with the engine).
pub(crate) struct Imports {
    object: Object,
    _closures: (F2, F1, F4, Unit, F4, F8, F4, F2),
}

impl Imports {
    pub(crate) fn object(&self) -> &Object {
        &self.object
    }
}

impl WebGpu {
    pub(crate) fn new(host: WgpuHost, memory: MemorySlot) -> Rc<Self> {
        Rc::new(Self {
            host,
            memory,
            buffers: RefCell::default(),
            last_error: RefCell::default(),
            pending: RefCell::default(),
        })
    }

    pub(crate) fn memory_slot(&self) -> MemorySlot {
        self.memory.clone()
    }

    /// The adapter's name.
    pub(crate) fn adapter(&self) -> String {
        self.host.info().name.clone()
    }

    fn fail<T>(&self, message: String, fallback: T) -> T {
        *self.last_error.borrow_mut() = message;
        fallback
    }

    fn owned(&self, id: i32) -> Result<BufferId, String> {
        match self.buffers.borrow().contains(&(id as u32)) {
            true => Ok(BufferId(id as u32)),
            false => Err(format!("buffer {id} does not belong to this instance")),
        }
    }

    pub(crate) fn imports(self: &Rc<Self>) -> Result<Imports, JsValue> {
        let g = self.clone();
        let info: F2 = Closure::new(move |ptr: i32, cap: i32| {
            let i = g.host.info();
            let json = format!(
                r#"{{"name":{},"backend":{},"software":{},"shader_f16":{},"max_storage_binding":{},"max_workgroup_invocations":{}}}"#,
                js_string(&i.name),
                js_string(&i.backend),
                i.software,
                i.shader_f16,
                i.max_storage_binding,
                i.max_workgroup_invocations
            );
            if json.len() <= cap as usize
                && let Err(e) = write(&g.memory, ptr, json.as_bytes())
            {
                return g.fail(e, -1);
            }
            json.len() as i32
        });
        let g = self.clone();
        let create_buffer: F1 =
            Closure::new(
                move |size: i32| match g.host.create_buffer(u64::from(size as u32)) {
                    Ok(id) => {
                        g.buffers.borrow_mut().insert(id.0);
                        id.0 as i32
                    }
                    Err(e) => g.fail(e.to_string(), 0),
                },
            );
        let g = self.clone();
        let write_buffer: F4 = Closure::new(move |buffer: i32, offset: i32, ptr: i32, len: i32| {
            let r = (|| {
                let id = g.owned(buffer)?;
                let data = bytes(&g.memory, ptr, len)?;
                g.host
                    .write_buffer(id, u64::from(offset as u32), &data)
                    .map_err(|e| e.to_string())
            })();
            match r {
                Ok(()) => 0,
                Err(e) => g.fail(e, -1),
            }
        });
        let g = self.clone();
        let destroy_buffer: Unit = Closure::new(move |buffer: i32| {
            if g.buffers.borrow_mut().remove(&(buffer as u32)) {
                g.host.destroy_buffer(BufferId(buffer as u32));
            }
        });
        let g = self.clone();
        let create_pipeline: F4 =
            Closure::new(move |src: i32, src_len: i32, entry: i32, entry_len: i32| {
                let r = (|| {
                    let wgsl = String::from_utf8(bytes(&g.memory, src, src_len)?)
                        .map_err(|_| "WGSL is not UTF-8".to_owned())?;
                    let entry = String::from_utf8(bytes(&g.memory, entry, entry_len)?)
                        .map_err(|_| "entry point is not UTF-8".to_owned())?;
                    g.host
                        .create_pipeline(&wgsl, &entry)
                        .map_err(|e| e.to_string())
                })();
                match r {
                    Ok(PipelineId(id)) => id as i32,
                    Err(e) => g.fail(e, 0),
                }
            });
        let g = self.clone();
        let dispatch: F8 = Closure::new(
            move |pipeline: i32,
                  params: i32,
                  params_len: i32,
                  buffers: i32,
                  count: i32,
                  x: i32,
                  y: i32,
                  z: i32| {
                let r = (|| {
                    let params = bytes(&g.memory, params, params_len)?;
                    let handles = bytes(&g.memory, buffers, count.saturating_mul(4))?;
                    let ids = handles
                        .chunks_exact(4)
                        .map(|c| g.owned(i32::from_le_bytes([c[0], c[1], c[2], c[3]])))
                        .collect::<Result<Vec<_>, _>>()?;
                    g.host
                        .dispatch(
                            PipelineId(pipeline as u32),
                            &params,
                            &ids,
                            [x as u32, y as u32, z as u32],
                        )
                        .map_err(|e| e.to_string())
                })();
                match r {
                    Ok(()) => 0,
                    Err(e) => g.fail(e, -1),
                }
            },
        );
        let g = self.clone();
        let read_buffer: F4 = Closure::new(move |buffer: i32, offset: i32, size: i32, dst: i32| {
            let r = (|| {
                let id = g.owned(buffer)?;
                check_destination(&g.memory, dst, size)?;
                match g
                    .host
                    .read_buffer(id, u64::from(offset as u32), u64::from(size as u32))
                    .map_err(|e| e.to_string())?
                {
                    Readback::Ready(data) => write(&g.memory, dst, &data).map(|()| 0),
                    Readback::Pending(readback) => {
                        *g.pending.borrow_mut() = Some((readback, dst));
                        Ok(1)
                    }
                }
            })();
            r.unwrap_or_else(|e| g.fail(e, -1))
        });
        let g = self.clone();
        let last_error: F2 = Closure::new(move |ptr: i32, cap: i32| {
            let message = std::mem::take(&mut *g.last_error.borrow_mut());
            let n = message.len().min(cap.max(0) as usize);
            let _ = write(&g.memory, ptr, &message.as_bytes()[..n]);
            message.len() as i32
        });

        let object = import_object([
            info.as_ref(),
            create_buffer.as_ref(),
            write_buffer.as_ref(),
            destroy_buffer.as_ref(),
            create_pipeline.as_ref(),
            dispatch.as_ref(),
            read_buffer.as_ref(),
            last_error.as_ref(),
        ])?;
        Ok(Imports {
            object,
            _closures: (
                info,
                create_buffer,
                write_buffer,
                destroy_buffer,
                create_pipeline,
                dispatch,
                read_buffer,
                last_error,
            ),
        })
    }
}

/// The `amphi_gpu` import names (docs/abi.md), in the order [`import_object`] takes them.
const IMPORTS: [&str; 8] = [
    "info",
    "create_buffer",
    "write_buffer",
    "destroy_buffer",
    "create_pipeline",
    "dispatch",
    "read_buffer",
    "last_error",
];

/// The import object `{info, create_buffer, …}` from functions in [`IMPORTS`] order.
fn import_object(functions: [&JsValue; 8]) -> Result<Object, JsValue> {
    let object = Object::new();
    for (name, f) in IMPORTS.iter().zip(functions) {
        Reflect::set(&object, &(*name).into(), f)?;
    }
    Ok(object)
}

/// A JSON string literal.
fn js_string(s: &str) -> String {
    js_sys::JSON::stringify(&JsValue::from_str(s))
        .ok()
        .and_then(|s| s.as_string())
        .unwrap_or_else(|| "\"\"".to_owned())
}

/// The `amphi_gpu` imports of a host without a GPU (`info` answers -1, so the engine never
/// calls the others; they fail if it did).
pub(crate) struct NoGpu {
    fail: Const,
    zero: Const,
    noop: Closure<dyn Fn()>,
    object: Object,
}

impl NoGpu {
    pub(crate) fn new() -> Result<Self, JsValue> {
        let fail: Const = Closure::new(|| -1);
        let zero: Const = Closure::new(|| 0);
        let noop: Closure<dyn Fn()> = Closure::new(|| {});
        let object = import_object([
            fail.as_ref(),
            zero.as_ref(),
            fail.as_ref(),
            noop.as_ref(),
            zero.as_ref(),
            fail.as_ref(),
            fail.as_ref(),
            zero.as_ref(),
        ])?;
        Ok(Self {
            fail,
            zero,
            noop,
            object,
        })
    }

    pub(crate) fn object(&self) -> &Object {
        let _ = (&self.fail, &self.zero, &self.noop);
        &self.object
    }
}
