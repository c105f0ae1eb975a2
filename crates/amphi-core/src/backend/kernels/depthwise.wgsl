// Depthwise convolution over NHWC rows with TF "SAME" zero padding: x is [batch*h*w, c], w is
// [k*k, c] (tap ky*k + kx, then channel), b is [c], out is [batch*oh*ow, c]. One invocation per
// output value, in rows of 65535 workgroups of 256 so any size fits the dispatch limits;
// neighbouring invocations read neighbouring channels.

struct Params {
    n: u32,
    h: u32,
    w: u32,
    c: u32,
    oh: u32,
    ow: u32,
    k: u32,
    stride: u32,
    pad_top: u32,
    pad_left: u32,
    act: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn depthwise(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let ch = i % p.c;
    let pixel = i / p.c;
    let ox = pixel % p.ow;
    let oy = (pixel / p.ow) % p.oh;
    let image = pixel / (p.ow * p.oh);
    let base = image * p.h * p.w;
    var acc = b[ch];
    for (var ky = 0u; ky < p.k; ky++) {
        // Unsigned: rows above the image wrap around to large values and fail the bound check.
        let iy = oy * p.stride + ky - p.pad_top;
        if (oy * p.stride + ky < p.pad_top || iy >= p.h) {
            continue;
        }
        for (var kx = 0u; kx < p.k; kx++) {
            let ix = ox * p.stride + kx - p.pad_left;
            if (ox * p.stride + kx < p.pad_left || ix >= p.w) {
                continue;
            }
            acc = fma(x[((base + iy * p.w + ix) * p.c) + ch], w[(ky * p.k + kx) * p.c + ch], acc);
        }
    }
    out[i] = activate(acc, p.act);
}
