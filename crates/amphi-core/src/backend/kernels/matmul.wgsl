// y[m, n] = act(x[m, k] · w[n, k]ᵀ + b[n]) — a linear layer with PyTorch's [out, in] weights.
// Each 16×16 workgroup computes a 64×64 tile of y, 4×4 outputs per invocation, stepping
// through k in slices of 16 staged in workgroup memory. Ragged edges are zero-padded.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    act: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TILE: u32 = 64u;
const KT: u32 = 16u;

var<workgroup> xs: array<f32, 1024>; // [TILE rows of x][KT]
var<workgroup> ws: array<f32, 1024>; // [TILE rows of w][KT]

@compute @workgroup_size(16, 16)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let t = lid.y * 16u + lid.x;
    var acc: array<f32, 16>;
    for (var i = 0u; i < 16u; i++) {
        acc[i] = 0.0;
    }
    for (var k0 = 0u; k0 < p.k; k0 += KT) {
        for (var i = 0u; i < 4u; i++) {
            let e = t + i * 256u;
            let r = e / KT;
            let c = k0 + e % KT;
            var xv = 0.0;
            if (row0 + r < p.m && c < p.k) {
                xv = x[(row0 + r) * p.k + c];
            }
            xs[e] = xv;
            var wv = 0.0;
            if (col0 + r < p.n && c < p.k) {
                wv = w[(col0 + r) * p.k + c];
            }
            ws[e] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < KT; kk++) {
            var a: array<f32, 4>;
            var bw: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                a[i] = xs[(lid.y + i * 16u) * KT + kk];
                bw[i] = ws[(lid.x + i * 16u) * KT + kk];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i * 4u + j] = fma(a[i], bw[j], acc[i * 4u + j]);
                }
            }
        }
        workgroupBarrier();
    }
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + i * 16u;
        for (var j = 0u; j < 4u; j++) {
            let c = col0 + lid.x + j * 16u;
            if (r < p.m && c < p.n) {
                var v = acc[i * 4u + j];
                if (p.has_bias != 0u) {
                    v += b[c];
                }
                y[r * p.n + c] = activate(v, p.act);
            }
        }
    }
}
