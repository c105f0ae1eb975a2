// Reduces token vectors [batch*seq, hidden] to [batch, hidden]: the first token (how = 0) or
// the mean over tokens whose mask is 1 (how = 1).

struct Params {
    batch: u32,
    seq: u32,
    hidden: u32,
    how: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> mask: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn pool(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x;
    let b = gid.y;
    if (f >= p.hidden || b >= p.batch) {
        return;
    }
    if (p.how == 0u) {
        out[b * p.hidden + f] = x[b * p.seq * p.hidden + f];
        return;
    }
    var sum = 0.0;
    var count = 0.0;
    for (var s = 0u; s < p.seq; s++) {
        let m = mask[b * p.seq + s];
        sum = fma(x[(b * p.seq + s) * p.hidden + f], m, sum);
        count += m;
    }
    out[b * p.hidden + f] = sum / max(count, 1e-9);
}
