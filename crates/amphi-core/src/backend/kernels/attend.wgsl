// Scaled dot-product attention with separate q, k and v, flash-style: one workgroup of 64
// invocations per (query row, head) walks its keys in tiles of 64 with a running maximum and
// sum (an online softmax), so any number of keys fits; the query and the head's output
// accumulator stay in workgroup memory (head_dim ≤ 512).
//
// q and out are [batch*queries, heads*head_dim]; k and v are [batch*kv_stride,
// kv_heads*head_dim] (sequence b's key j at row b*kv_stride + j: a cache with spare capacity);
// query head h reads key head h / (heads / kv_heads). Query i sits at position offset + i and
// attends key j < keys when mask[b*keys + j] != 0 (with has_mask), j <= offset + i (causal)
// and j + window > offset + i (window != 0). A row that attends no key gets zeros.
//
// Grid: rows split over x and y (row = x + y * num_workgroups.x), heads along z.

struct Params {
    rows: u32,
    queries: u32,
    keys: u32,
    kv_stride: u32,
    heads: u32,
    kv_heads: u32,
    head_dim: u32,
    scale: f32,
    causal: u32,
    offset: u32,
    window: u32,
    has_mask: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> q: array<f32>;
@group(0) @binding(2) var<storage, read> k: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read> mask: array<f32>; // [batch, keys], 1 = attend
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

const WG: u32 = 64u;
const MAX_HEAD_DIM: u32 = 512u;

var<workgroup> qs: array<f32, MAX_HEAD_DIM>;
// Invocation t owns dimensions t, t + 64, …: only it reads and writes them.
var<workgroup> acc: array<f32, MAX_HEAD_DIM>;
var<workgroup> scores: array<f32, WG>;
var<workgroup> weights: array<f32, WG>;

@compute @workgroup_size(64)
fn attend(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = wid.x + wid.y * nwg.x;
    if (row >= p.rows) {
        return;
    }
    let h = wid.z;
    let b = row / p.queries;
    let i = row % p.queries;
    let d = p.head_dim;
    let qw = p.heads * d;
    let kw = p.kv_heads * d;
    let g = h / (p.heads / p.kv_heads);
    let q0 = row * qw + h * d;
    let kv0 = b * p.kv_stride * kw + g * d;
    for (var c = lid.x; c < d; c += WG) {
        qs[c] = q[q0 + c];
        acc[c] = 0.0;
    }

    // The keys [start, end) the causal mask and the window leave.
    let at = p.offset + i;
    var end = p.keys;
    if (p.causal != 0u) {
        end = min(end, at + 1u);
    }
    var start = 0u;
    if (p.window != 0u && at + 1u > p.window) {
        start = at + 1u - p.window;
    }
    workgroupBarrier();

    // The running maximum and sum; every invocation computes the same values.
    var m = F32_LOWEST;
    var l = 0.0;
    for (var t0 = start; t0 < end; t0 += WG) {
        let n = min(WG, end - t0);
        let j = t0 + lid.x;
        var ok = lid.x < n;
        if (ok && p.has_mask != 0u) {
            ok = mask[b * p.keys + j] != 0.0;
        }
        var s = F32_LOWEST;
        if (ok) {
            let k0 = kv0 + j * kw;
            var dot = 0.0;
            for (var c = 0u; c < d; c++) {
                dot = fma(qs[c], k[k0 + c], dot);
            }
            s = dot * p.scale;
        }
        scores[lid.x] = s;
        workgroupBarrier();

        var top = m;
        for (var t = 0u; t < n; t++) {
            top = max(top, scores[t]);
        }
        var w = 0.0;
        if (ok) {
            w = exp(s - top);
        }
        weights[lid.x] = w;
        // 1 while nothing was attended (m = top = F32_LOWEST): acc and l are still 0.
        let correction = exp(m - top);
        m = top;
        workgroupBarrier();

        var sum = 0.0;
        for (var t = 0u; t < n; t++) {
            sum += weights[t];
        }
        l = l * correction + sum;
        for (var c = lid.x; c < d; c += WG) {
            var a = acc[c] * correction;
            for (var t = 0u; t < n; t++) {
                // Masked keys are skipped, not weighted by 0: their values may be anything.
                let w = weights[t];
                if (w > 0.0) {
                    a = fma(w, v[kv0 + (t0 + t) * kw + c], a);
                }
            }
            acc[c] = a;
        }
        // The next tile writes `scores` after every invocation has passed the barrier above
        // (done reading them) and `weights` after its own first barrier (done reading these).
    }

    var inv = 0.0;
    if (l > 0.0) {
        inv = 1.0 / l;
    }
    for (var c = lid.x; c < d; c += WG) {
        out[q0 + c] = acc[c] * inv;
    }
}
