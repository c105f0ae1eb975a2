// Divides each row by its L2 norm (at least 1e-12); one workgroup per row.

struct Params {
    rows: u32,
    cols: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn l2_normalize(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let base = wid.x * p.cols;
    var sq = 0.0;
    for (var c = lid.x; c < p.cols; c += WG) {
        sq = fma(x[base + c], x[base + c], sq);
    }
    red[lid.x] = sq;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            red[lid.x] += red[lid.x + s];
        }
        workgroupBarrier();
    }
    let inv = 1.0 / max(sqrt(red[0]), 1e-12);
    for (var c = lid.x; c < p.cols; c += WG) {
        out[base + c] = x[base + c] * inv;
    }
}
