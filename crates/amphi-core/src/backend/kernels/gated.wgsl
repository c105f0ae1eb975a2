// A gated MLP's gate: x is [rows, 2*width] (the gate projection, then the up projection),
// out[r, j] = activate(x[r, j]) · x[r, width + j]. One invocation per output value, in rows of
// 65535 workgroups of 256.

struct Params {
    n: u32,
    width: u32,
    act: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn gated(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let r = i / p.width;
    let j = i % p.width;
    let base = r * 2u * p.width;
    out[i] = activate(x[base + j], p.act) * x[base + p.width + j];
}
