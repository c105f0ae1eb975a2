// Multi-head scaled dot-product attention over a fused QKV projection, in one pass per query:
// scores (with the key mask), softmax and the weighted sum of values. One workgroup per
// (query, head, sequence); the scores of a row stay in workgroup memory (sequences ≤ 512).

struct Params {
    batch: u32,
    seq: u32,
    heads: u32,
    head_dim: u32,
    scale: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> qkv: array<f32>;  // [batch*seq, 3*hidden]
@group(0) @binding(2) var<storage, read> mask: array<f32>; // [batch*seq], 1 = attend
@group(0) @binding(3) var<storage, read_write> out: array<f32>; // [batch*seq, hidden]

const WG: u32 = 64u;
const MAX_SEQ: u32 = 512u;

var<workgroup> scores: array<f32, MAX_SEQ>;
var<workgroup> red: array<f32, WG>;

@compute @workgroup_size(64)
fn attention(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let i = wid.x;
    let h = wid.y;
    let b = wid.z;
    let hidden = p.heads * p.head_dim;
    let stride = 3u * hidden;
    let q0 = (b * p.seq + i) * stride + h * p.head_dim;

    var local_max = F32_LOWEST;
    for (var j = lid.x; j < p.seq; j += WG) {
        var s = F32_LOWEST;
        if (mask[b * p.seq + j] != 0.0) {
            let k0 = (b * p.seq + j) * stride + hidden + h * p.head_dim;
            var dot = 0.0;
            for (var d = 0u; d < p.head_dim; d++) {
                dot = fma(qkv[q0 + d], qkv[k0 + d], dot);
            }
            s = dot * p.scale;
            local_max = max(local_max, s);
        }
        scores[j] = s;
    }
    red[lid.x] = local_max;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            red[lid.x] = max(red[lid.x], red[lid.x + s]);
        }
        workgroupBarrier();
    }
    let m = red[0];
    workgroupBarrier();

    var local_sum = 0.0;
    for (var j = lid.x; j < p.seq; j += WG) {
        var e = 0.0;
        if (mask[b * p.seq + j] != 0.0) {
            e = exp(scores[j] - m);
        }
        scores[j] = e;
        local_sum += e;
    }
    red[lid.x] = local_sum;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid.x < s) {
            red[lid.x] += red[lid.x + s];
        }
        workgroupBarrier();
    }
    let total = red[0];
    var inv = 0.0;
    if (total > 0.0) {
        inv = 1.0 / total;
    }

    let o0 = (b * p.seq + i) * hidden + h * p.head_dim;
    for (var d = lid.x; d < p.head_dim; d += WG) {
        var acc = 0.0;
        for (var j = 0u; j < p.seq; j++) {
            acc = fma(scores[j], qkv[(b * p.seq + j) * stride + 2u * hidden + h * p.head_dim + d], acc);
        }
        out[o0 + d] = acc * inv;
    }
}
