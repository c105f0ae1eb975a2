//! Sequences of `amphi_gpu` import calls from one or two guest instances, through the serverless
//! host's own import code (`amphi_serve`'s GPU imports over a stand-in guest memory) on the
//! machine's GPU (`WgpuHost`; in CI Mesa lavapipe, `WGPU_BACKEND=vulkan`).
//!
//! The bytes are decoded into calls: create, write, destroy and read back buffers, create
//! pipelines from a few fixed WGSL kernels or from garbage, dispatch with arbitrary bindings,
//! parameters and workgroup counts, read to arbitrary guest pointers, drop an instance and start a
//! fresh one. Besides "never panics", each call is checked against a model:
//! - every failed call leaves a message in `last_error`, and the instance stays within its quota;
//! - a failed call writes nothing into guest memory;
//! - a buffer's contents are known while only writes touch it (zeros when created, also when the
//!   host hands out a recycled one), and a readback of it must return exactly them, whatever the
//!   other instance does meanwhile.
//!
//! Workgroup counts are kept small (or far over the limit, which must be refused) so that no
//! input makes the device run for long. Without a GPU adapter every input fails.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use amphi_gpu::{GpuHost, GpuQuota, WgpuConfig, WgpuHost};
use amphi_serve::Runtime;

/// Guest memory of each instance.
const MEMORY: usize = 64 * 1024;

/// Limits small enough to be reached (and not to exhaust the machine).
const QUOTA: GpuQuota = GpuQuota {
    max_buffers: 12,
    max_bytes: 1 << 20,
    max_pipelines: 8,
};

/// The fixed kernels: (WGSL, entry point).
const KERNELS: [(&str, &str); 4] = [
    (amphi_gpu::testing::SCALE_WGSL, "scale"),
    (
        "@group(0) @binding(0) var<uniform> p: vec4<u32>;
@group(0) @binding(1) var<storage, read_write> a: array<u32>;
@compute @workgroup_size(8, 2, 1)
fn fill(@builtin(global_invocation_id) id: vec3<u32>) {
    a[id.x + id.y * 16u + p.y] = p.x + id.z;
}",
        "fill",
    ),
    (
        "@group(0) @binding(0) var<uniform> p: vec4<u32>;
@group(0) @binding(1) var<storage, read_write> count: atomic<u32>;
@group(0) @binding(2) var<storage, read> xs: array<vec4<f32>>;
var<workgroup> tile: array<f32, 64>;
@compute @workgroup_size(64)
fn reduce(@builtin(local_invocation_index) i: u32, @builtin(global_invocation_id) id: vec3<u32>) {
    tile[i] = xs[id.x % max(arrayLength(&xs), 1u)].x;
    workgroupBarrier();
    if (i == 0u && tile[63] >= f32(p.x)) { atomicAdd(&count, 1u); }
}",
        "reduce",
    ),
    (
        "struct S { m: mat4x4<f32>, v: vec4<f32> }
@group(0) @binding(0) var<uniform> p: S;
@group(0) @binding(1) var<storage, read_write> o: array<vec4<f32>>;
@compute @workgroup_size(4)
fn mat(@builtin(global_invocation_id) id: vec3<u32>) { o[id.x] = p.m * p.v; }",
        "mat",
    ),
];

/// Workgroup counts per dimension: small ones, and ones over the limit of 65,535.
const WORKGROUPS: [u32; 8] = [0, 1, 2, 3, 4, 65_536, 1 << 20, u32::MAX];

/// Buffer sizes worth trying besides small arbitrary ones.
const SIZES: [u32; 8] = [0, 1, 4, 64, 4096, 65_536, 1 << 20, u32::MAX];

fn host() -> Arc<dyn GpuHost> {
    static HOST: OnceLock<Arc<WgpuHost>> = OnceLock::new();
    HOST.get_or_init(|| {
        let config = WgpuConfig {
            pool_bytes: 4 << 20,
            pool_buffers: 32,
            poll_timeout: Duration::from_secs(20),
        };
        match WgpuHost::with_config(config) {
            Ok(host) => Arc::new(host),
            Err(e) => panic!(
                "the gpu_imports fuzz target needs a GPU adapter (Mesa lavapipe: apt-get install \
                 mesa-vulkan-drivers; WGPU_BACKEND=vulkan): {e}"
            ),
        }
    })
    .clone()
}

/// Reads the input front to back; zeros once it is used up.
struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// A guest pointer: usually in memory and 4-aligned, sometimes anywhere.
    fn ptr(&mut self) -> u32 {
        match self.u8() % 8 {
            0 => self.u32(),
            1 => (MEMORY as u32).wrapping_sub(u32::from(self.u8())),
            _ => (u32::from(self.u16()) * 4) % MEMORY as u32,
        }
    }

    /// A length: usually small, sometimes anything.
    fn len(&mut self) -> u32 {
        match self.u8() % 8 {
            0 => self.u32(),
            1 => u32::from(self.u16()),
            _ => u32::from(self.u8()) * 4,
        }
    }

    /// An offset into a buffer: usually 4-aligned and small.
    fn offset(&mut self) -> u32 {
        match self.u8() % 8 {
            0 => self.u32(),
            1 => u32::from(self.u8()),
            _ => u32::from(self.u8() % 64) * 4,
        }
    }
}

/// What the model knows of one buffer: its size and, while only writes touched it, its bytes.
struct Known {
    owner: usize,
    contents: Option<Vec<u8>>,
}

/// Runs the calls `data` describes; panics when the host breaks its contract.
pub fn gpu_imports(data: &[u8]) {
    let gpu = host();
    let fresh = || Runtime::gpu_import_harness(Some(gpu.clone()), QUOTA, MEMORY);
    let mut instances = [fresh(), fresh()];
    let mut known: HashMap<u32, Known> = HashMap::new();
    let mut pipelines: Vec<u32> = Vec::new();
    let mut input = Bytes(data);
    let mut calls = 0;
    while !input.0.is_empty() && calls < 256 {
        calls += 1;
        let op = input.u8();
        let who = usize::from(op >> 7);
        // A handle: one seen (of either instance), or any number.
        let handle = |input: &mut Bytes<'_>, known: &HashMap<u32, Known>| {
            let pick = input.u8();
            let mut ids: Vec<u32> = known.keys().copied().collect();
            ids.sort_unstable();
            match (pick as usize).checked_rem(ids.len() + 1) {
                Some(i) if i < ids.len() => ids[i],
                _ => input.u32() % 64,
            }
        };
        let g = &mut instances[who];
        // Calls that write nothing into guest memory before the import; the others check
        // around the import themselves.
        let untouched = matches!(op % 12, 0..=3 | 8..=10);
        let before_failure = if untouched {
            g.memory().to_vec()
        } else {
            Vec::new()
        };
        // Whether the call failed (so: a message, and guest memory untouched).
        let failed = match op % 12 {
            0 | 1 => {
                let size = match input.u8() % 4 {
                    0 => SIZES[usize::from(input.u8() % 8)],
                    1 => input.u32(),
                    _ => u32::from(input.u16()),
                };
                let id = g.create_buffer(size);
                if id != 0 {
                    let bytes = u64::from(size).max(4).next_multiple_of(4) as usize;
                    let previous = known.insert(
                        id,
                        Known {
                            owner: who,
                            contents: Some(vec![0; bytes]),
                        },
                    );
                    assert!(previous.is_none(), "handle {id} handed out twice");
                }
                id == 0
            }
            2 => {
                let id = handle(&mut input, &known);
                let (offset, ptr, len) = (input.offset(), input.ptr(), input.len());
                let status = g.write_buffer(id, offset, ptr, len);
                assert!(
                    status == 0 || status == -1,
                    "write_buffer answered {status}"
                );
                if status == 0 {
                    let k = known
                        .get_mut(&id)
                        .expect("a write to a buffer that is not known");
                    assert_eq!(k.owner, who, "wrote into another instance's buffer");
                    let src = &g.memory()[ptr as usize..ptr as usize + len as usize];
                    if let Some(c) = &mut k.contents {
                        c[offset as usize..offset as usize + len as usize].copy_from_slice(src);
                    }
                }
                status != 0
            }
            3 => {
                let id = handle(&mut input, &known);
                g.destroy_buffer(id);
                if known.get(&id).is_some_and(|k| k.owner == who) {
                    known.remove(&id);
                }
                false
            }
            4 | 5 => {
                let (src, src_len, entry, entry_len) = match input.u8() % 6 {
                    k @ 0..4 => {
                        let (wgsl, name) = KERNELS[usize::from(k)];
                        let at = (u32::from(input.u8()) * 64) % (MEMORY as u32 - 8192);
                        g.memory_mut()[at as usize..at as usize + wgsl.len()]
                            .copy_from_slice(wgsl.as_bytes());
                        let name_at = MEMORY as u32 - 64;
                        let name = if input.u8() % 8 == 0 { "main" } else { name };
                        g.memory_mut()[name_at as usize..name_at as usize + name.len()]
                            .copy_from_slice(name.as_bytes());
                        (at, wgsl.len() as u32, name_at, name.len() as u32)
                    }
                    4 => {
                        // Garbage (or a mutated kernel) already in guest memory.
                        (input.ptr(), input.len(), input.ptr(), input.len() % 32)
                    }
                    _ => {
                        // WGSL straight from the input.
                        let n = usize::from(input.u8());
                        let text = input.take(n).to_vec();
                        g.memory_mut()[..text.len()].copy_from_slice(&text);
                        let name_at = MEMORY as u32 - 64;
                        g.memory_mut()[name_at as usize..name_at as usize + 4]
                            .copy_from_slice(b"main");
                        (0, text.len() as u32, name_at, 4)
                    }
                };
                let before = g.memory().to_vec();
                let id = g.create_pipeline(src, src_len, entry, entry_len);
                assert_eq!(
                    g.memory(),
                    &before[..],
                    "create_pipeline wrote guest memory"
                );
                if id != 0 && !pipelines.contains(&id) {
                    pipelines.push(id);
                }
                id == 0
            }
            6 | 7 => {
                let pipeline = match (usize::from(input.u8())).checked_rem(pipelines.len() + 1) {
                    Some(i) if i < pipelines.len() => pipelines[i],
                    _ => input.u32() % 16,
                };
                let params_len = match input.u8() % 4 {
                    0 => input.len(),
                    _ => u32::from(input.u8() % 5) * 16,
                };
                let params = 1024u32;
                let bytes = input.take(params_len.min(256) as usize).to_vec();
                g.memory_mut()[params as usize..params as usize + bytes.len()]
                    .copy_from_slice(&bytes);
                let count = match input.u8() % 8 {
                    0 => input.u32(),
                    n => u32::from(n % 4),
                };
                let handles_at = 2048u32;
                let mut bound = Vec::new();
                for i in 0..count.min(8) {
                    let id = handle(&mut input, &known);
                    bound.push(id);
                    let at = (handles_at + i * 4) as usize;
                    g.memory_mut()[at..at + 4].copy_from_slice(&id.to_le_bytes());
                }
                let handles = if input.u8() % 16 == 0 {
                    input.ptr()
                } else {
                    handles_at
                };
                let [x, y, z] = [0; 3].map(|_| WORKGROUPS[usize::from(input.u8() % 8)]);
                // Keep valid grids small: a large count in one dimension only.
                let (y, z) = if x > 4 { (y.min(1), z.min(1)) } else { (y, z) };
                let before = g.memory().to_vec();
                let status = g.dispatch(pipeline, params, params_len, handles, count, x, y, z);
                assert!(status == 0 || status == -1, "dispatch answered {status}");
                assert_eq!(g.memory(), &before[..], "dispatch wrote guest memory");
                if status == 0 {
                    // What the kernel does to them is not modelled.
                    for id in bound {
                        let k = known
                            .get_mut(&id)
                            .expect("bound a buffer that is not known");
                        assert_eq!(k.owner, who, "bound another instance's buffer");
                        k.contents = None;
                    }
                }
                status != 0
            }
            8 | 9 => {
                let id = handle(&mut input, &known);
                let (offset, size, dst) = (input.offset(), input.len(), input.ptr());
                let status = g.read_buffer(id, offset, size, dst);
                assert!(status == 0 || status == -1, "read_buffer answered {status}");
                if status == 0 {
                    let k = known.get(&id).expect("read a buffer that is not known");
                    assert_eq!(k.owner, who, "read another instance's buffer");
                    if let Some(contents) = &k.contents {
                        let want = &contents[offset as usize..(offset + size) as usize];
                        let got = &g.memory()[dst as usize..(dst + size) as usize];
                        assert!(
                            want == got,
                            "buffer {id} read back other bytes than written"
                        );
                    }
                }
                status != 0
            }
            10 => {
                let (ptr, cap) = (input.ptr(), input.len());
                // The length alone (nothing fits in 0 bytes), then the call under test.
                let len = g.info(0, 0);
                assert!(len > 0, "info failed with a GPU");
                let n = g.info(ptr, cap);
                let outside = len as u32 <= cap && ptr as usize + len as usize > MEMORY;
                assert!(
                    n == if outside { -1 } else { len },
                    "info({ptr}, {cap}) answered {n} (length {len}, guest memory {MEMORY})"
                );
                n < 0
            }
            _ => {
                if input.u8() % 4 == 0 {
                    // The instance ends (its buffers go back to the host) and a fresh one starts.
                    known.retain(|_, k| k.owner != who);
                    instances[who] = fresh();
                } else {
                    // Guest bytes from the input.
                    let at = input.ptr() as usize % MEMORY;
                    let n = usize::from(input.u8());
                    let bytes = input.take(n.min(MEMORY - at)).to_vec();
                    g.memory_mut()[at..at + bytes.len()].copy_from_slice(&bytes);
                }
                false
            }
        };
        let g = &mut instances[who];
        if failed {
            if untouched {
                assert!(
                    g.memory() == before_failure,
                    "a failed call wrote guest memory"
                );
            }
            assert!(!g.last_error().is_empty(), "a failed call left no message");
        } else {
            let _ = g.last_error();
        }
        let (count, bytes) = g.held();
        assert!(
            count <= QUOTA.max_buffers as usize && bytes <= QUOTA.max_bytes,
            "over quota: {count} buffers, {bytes} bytes"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fixed_kernels_compile() {
        let mut g = Runtime::gpu_import_harness(Some(host()), QUOTA, MEMORY);
        for (wgsl, entry) in KERNELS {
            g.memory_mut()[..wgsl.len()].copy_from_slice(wgsl.as_bytes());
            g.memory_mut()[8192..8192 + entry.len()].copy_from_slice(entry.as_bytes());
            let id = g.create_pipeline(0, wgsl.len() as u32, 8192, entry.len() as u32);
            assert_ne!(id, 0, "{entry}: {}", g.last_error());
        }
    }

    #[test]
    fn a_short_program_runs() {
        // create 64 B; write 64 B from 0; read it back to 256; dispatch `fill`; read again.
        let mut p = vec![0u8, 0, 3, 64];
        p.extend([2, 0, 2, 0, 2, 0, 0, 2, 16]);
        p.extend([8, 0, 2, 0, 2, 16, 2, 64, 0]);
        gpu_imports(&p);
        gpu_imports(&[]);
        gpu_imports(&[0xff; 64]);
        gpu_imports(&(0..=255).collect::<Vec<u8>>());
    }
}
