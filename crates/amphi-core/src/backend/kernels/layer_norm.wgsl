// out = LayerNorm(x + residual) · gamma + beta over each row; one workgroup per row.

struct Params {
    rows: u32,
    cols: u32,
    eps: f32,
    has_residual: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> residual: array<f32>;
@group(0) @binding(3) var<storage, read> gamma: array<f32>;
@group(0) @binding(4) var<storage, read> beta: array<f32>;
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

fn load(i: u32) -> f32 {
    var v = x[i];
    if (p.has_residual != 0u) {
        v += residual[i];
    }
    return v;
}

fn reduce_sum(v: f32, lane: u32) -> f32 {
    red[lane] = v;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lane < s) {
            red[lane] += red[lane + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn layer_norm(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let base = wid.x * p.cols;
    var sum = 0.0;
    for (var c = lid.x; c < p.cols; c += WG) {
        sum += load(base + c);
    }
    let mean = reduce_sum(sum, lid.x) / f32(p.cols);
    var sq = 0.0;
    for (var c = lid.x; c < p.cols; c += WG) {
        let d = load(base + c) - mean;
        sq += d * d;
    }
    let inv_std = 1.0 / sqrt(reduce_sum(sq, lid.x) / f32(p.cols) + p.eps);
    for (var c = lid.x; c < p.cols; c += WG) {
        out[base + c] = (load(base + c) - mean) * inv_std * gamma[c] + beta[c];
    }
}
