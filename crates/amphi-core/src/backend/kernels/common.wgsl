// Shared by the kernels (prepended to each at build time). Literals are ones both Naga (wgpu)
// and Tint (browsers) accept.

const F32_LOWEST: f32 = -3.4028234663852886e38;

// erf, Abramowitz & Stegun 7.1.26: |error| < 1.5e-7.
fn erf_approx(x: f32) -> f32 {
    let a = abs(x);
    let t = 1.0 / (1.0 + 0.3275911 * a);
    let poly = ((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t - 0.284496736) * t + 0.254829592) * t;
    return sign(x) * (1.0 - poly * exp(-a * a));
}

// tanh without overflow for large |x| (exp(2x) stays finite).
fn tanh_safe(x: f32) -> f32 {
    let c = clamp(x, -15.0, 15.0);
    let e = exp(2.0 * c);
    return (e - 1.0) / (e + 1.0);
}

// Activations of `linear` and `depthwise`: 0 none, 1 GELU (erf), 2 GELU (tanh), 3 ReLU, 4 tanh,
// 5 ReLU6, 6 SiLU.
fn activate(x: f32, act: u32) -> f32 {
    switch act {
        case 1u: { return 0.5 * x * (1.0 + erf_approx(x * 0.7071067811865476)); }
        case 2u: { return 0.5 * x * (1.0 + tanh_safe(0.7978845608028654 * (x + 0.044715 * x * x * x))); }
        case 3u: { return max(x, 0.0); }
        case 4u: { return tanh_safe(x); }
        case 5u: { return clamp(x, 0.0, 6.0); }
        case 6u: { return x / (1.0 + exp(-max(x, -87.0))); }
        default: { return x; }
    }
}
