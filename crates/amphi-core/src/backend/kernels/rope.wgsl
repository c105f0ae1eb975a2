// Rotary position embeddings, half-split ("NeoX", Hugging Face's `rotate_half`): x is [rows,
// cols] of heads of head_dim values; table row r holds rotary_dim/2 cosines then rotary_dim/2
// sines. In each head, value e < rotary_dim/2 becomes x1·cos − x2·sin and value e + half
// becomes x2·cos + x1·sin (x1 = x[e], x2 = x[e + half]); values past rotary_dim pass through.
// One invocation per value, in rows of 65535 workgroups of 256.

struct Params {
    n: u32,
    cols: u32,
    head_dim: u32,
    rotary_dim: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> table: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn rope(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let r = i / p.cols;
    let e = (i % p.cols) % p.head_dim;
    let rot_half = p.rotary_dim / 2u;
    let t0 = r * p.rotary_dim;
    var o = x[i];
    if (e < rot_half) {
        o = x[i] * table[t0 + e] - x[i + rot_half] * table[t0 + rot_half + e];
    } else if (e < p.rotary_dim) {
        let f = e - rot_half;
        o = x[i] * table[t0 + f] + x[i - rot_half] * table[t0 + rot_half + f];
    }
    out[i] = o;
}
