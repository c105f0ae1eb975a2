// RMSNorm over groups of `size` consecutive values (a row, or a head of a row):
// out = x / sqrt(mean(x²) + eps) · gamma. One workgroup per group, the groups split over x and
// y (group = x + y * num_workgroups.x).

struct Params {
    groups: u32,
    size: u32,
    eps: f32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn rms_norm(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let gi = wid.x + wid.y * nwg.x;
    if (gi >= p.groups) {
        return;
    }
    let base = gi * p.size;
    var sq = 0.0;
    for (var c = lid.x; c < p.size; c += WG) {
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
    let inv = 1.0 / sqrt(red[0] / f32(p.size) + p.eps);
    for (var c = lid.x; c < p.size; c += WG) {
        out[base + c] = x[base + c] * inv * gamma[c];
    }
}
