// y[m, n] = act(x[m, k] · w[n, k]ᵀ + b[n]) — a linear layer with PyTorch's [out, in] weights.
// Each 16×16 workgroup computes a 64×64 tile of y, 4×4 outputs per invocation (in vec4
// registers), stepping
// through k in slices of 16 staged in workgroup memory k-major (a padded row of 65, so that
// neither the staging stores nor the inner-loop loads hit the same bank twice). Ragged edges
// are zero-padded. `WElem` (the weights' storage type) and `Mul` (the type of the products
// and of each slice's partial sums) come from the precision prelude: f32/f32, or f16/f16 with
// the partial sums of every slice accumulated in f32.

struct Params {
    m: u32,
    n: u32,
    k: u32,
    act: u32,
    has_bias: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<WElem>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const TILE: u32 = 64u;
const KT: u32 = 16u;
const LD: u32 = 65u;

var<workgroup> xs: array<Mul, 1040>; // [KT][LD]: rows of x along the padded row
var<workgroup> ws: array<Mul, 1040>; // [KT][LD]: rows of w along the padded row

@compute @workgroup_size(16, 16)
fn matmul(@builtin(local_invocation_id) lid: vec3<u32>, @builtin(workgroup_id) wid: vec3<u32>) {
    let row0 = wid.y * TILE;
    let col0 = wid.x * TILE;
    let t = lid.y * 16u + lid.x;
    var acc0 = vec4<f32>(0.0);
    var acc1 = vec4<f32>(0.0);
    var acc2 = vec4<f32>(0.0);
    var acc3 = vec4<f32>(0.0);
    for (var k0 = 0u; k0 < p.k; k0 += KT) {
        for (var i = 0u; i < 4u; i++) {
            let e = t + i * 256u;
            let r = e / KT;
            let c = e % KT;
            var xv = 0.0;
            if (row0 + r < p.m && k0 + c < p.k) {
                xv = x[(row0 + r) * p.k + k0 + c];
            }
            xs[c * LD + r] = Mul(xv);
            var wv = WElem(0.0);
            if (col0 + r < p.n && k0 + c < p.k) {
                wv = w[(col0 + r) * p.k + k0 + c];
            }
            ws[c * LD + r] = Mul(wv);
        }
        workgroupBarrier();
        // The 4×4 outputs live in four vec4 registers (rows i, columns j): no arrays indexed at
        // run time, which some drivers would keep in memory instead of registers.
        var p0 = vec4<Mul>(Mul(0.0));
        var p1 = vec4<Mul>(Mul(0.0));
        var p2 = vec4<Mul>(Mul(0.0));
        var p3 = vec4<Mul>(Mul(0.0));
        for (var kk = 0u; kk < KT; kk++) {
            let xr = kk * LD + lid.y;
            let wr = kk * LD + lid.x;
            let bw = vec4<Mul>(ws[wr], ws[wr + 16u], ws[wr + 32u], ws[wr + 48u]);
            p0 = fma(vec4<Mul>(xs[xr]), bw, p0);
            p1 = fma(vec4<Mul>(xs[xr + 16u]), bw, p1);
            p2 = fma(vec4<Mul>(xs[xr + 32u]), bw, p2);
            p3 = fma(vec4<Mul>(xs[xr + 48u]), bw, p3);
        }
        acc0 += vec4<f32>(p0);
        acc1 += vec4<f32>(p1);
        acc2 += vec4<f32>(p2);
        acc3 += vec4<f32>(p3);
        workgroupBarrier();
    }
    store(row0 + lid.y, col0 + lid.x, acc0);
    store(row0 + lid.y + 16u, col0 + lid.x, acc1);
    store(row0 + lid.y + 32u, col0 + lid.x, acc2);
    store(row0 + lid.y + 48u, col0 + lid.x, acc3);
}

// Writes y[r, c + 16 j] = act(v[j] + b) for the columns inside the matrix.
fn store(r: u32, c: u32, v: vec4<f32>) {
    if (r >= p.m) {
        return;
    }
    for (var j = 0u; j < 4u; j++) {
        let cj = c + j * 16u;
        if (cj < p.n) {
            var o = v[j];
            if (p.has_bias != 0u) {
                o += b[cj];
            }
            y[r * p.n + cj] = activate(o, p.act);
        }
    }
}
