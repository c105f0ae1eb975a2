// A test kernel for GPU hosts: dst[i] = src[i] * p.k for i < p.n (entry point `scale`).
struct P { k: f32, n: u32, a: u32, b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;
@compute @workgroup_size(64)
fn scale(@builtin(global_invocation_id) id: vec3<u32>) {
    if (id.x < p.n) { dst[id.x] = src[id.x] * p.k; }
}
