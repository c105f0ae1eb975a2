//! The GPU backend's kernels against the CPU backend, on random and ragged shapes.

use super::*;
use crate::backend::cpu::{Cpu, Packed};
use crate::backend::tests::random;

fn gpu() -> Gpu {
    gpu_with(Precision::F32)
}

fn gpu_with(precision: Precision) -> Gpu {
    let host = amphi_gpu::WgpuHost::new().unwrap_or_else(|e| {
        panic!("GPU kernel tests need a GPU adapter (in CI: Mesa lavapipe, apt-get install mesa-vulkan-drivers): {e}")
    });
    Gpu::new(Arc::new(host), precision).expect("kernels compile")
}

fn close(what: &str, gpu: &[f32], cpu: &[f32]) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    for (i, (g, c)) in gpu.iter().zip(cpu).enumerate() {
        let tol = 1e-4 * c.abs().max(1.0);
        assert!((g - c).abs() <= tol, "{what}[{i}]: gpu {g} vs cpu {c}");
    }
}

struct Both {
    gpu: Gpu,
}

impl Both {
    fn up(&self, data: &[f32], shape: &[usize]) -> (GpuTensor, candle_core::Tensor) {
        (
            self.gpu.upload(data.to_vec(), shape).expect("gpu upload"),
            Cpu.upload(data.to_vec(), shape).expect("cpu upload"),
        )
    }

    fn up_weight(&self, data: &[f32], out: usize, inp: usize) -> (GpuTensor, Packed) {
        (
            self.gpu
                .upload_weight(data.to_vec(), out, inp)
                .expect("gpu upload"),
            Cpu.upload_weight(data.to_vec(), out, inp)
                .expect("cpu upload"),
        )
    }

    fn check(&self, what: &str, g: Result<GpuTensor>, c: Result<candle_core::Tensor>) {
        let g = self.gpu.read(&g.expect("gpu op")).expect("gpu read");
        let c = Cpu.read(&c.expect("cpu op")).expect("cpu read");
        close(what, &g, &c);
    }
}

#[test]
fn linear_with_bias_and_activations() {
    let be = Both { gpu: gpu() };
    let acts = [
        Activation::None,
        Activation::GeluErf,
        Activation::GeluTanh,
        Activation::Relu,
        Activation::Tanh,
        Activation::Relu6,
    ];
    for (i, &(m, n, k)) in [
        (1, 1, 1),
        (5, 7, 3),
        (65, 130, 33),
        (128, 384, 384),
        (3, 1536, 17),
    ]
    .iter()
    .enumerate()
    {
        let (x, xc) = be.up(&random(m * k, i as u64), &[m, k]);
        let (w, wc) = be.up_weight(&random(n * k, 100 + i as u64), n, k);
        let (b, bc) = be.up(&random(n, 200 + i as u64), &[n]);
        for act in acts {
            be.check(
                &format!("linear {m}x{k}·{n}x{k}ᵀ {act:?}"),
                be.gpu.linear(&x, &w, Some(&b), act),
                Cpu.linear(&xc, &wc, Some(&bc), act),
            );
        }
        be.check(
            &format!("linear {m}x{k} no bias"),
            be.gpu.linear(&x, &w, None, Activation::None),
            Cpu.linear(&xc, &wc, None, Activation::None),
        );
    }
}

/// Odd sizes, kernels 3 and 5, strides 1 and 2, an image smaller than the kernel, channel
/// counts that are not multiples of anything, and a batch.
#[test]
fn depthwise_convolution() {
    use crate::backend::ImageShape;
    let be = Both { gpu: gpu() };
    for (i, &(batch, height, width, c, kernel, stride)) in [
        (1, 1, 1, 1, 3, 1),
        (2, 7, 9, 5, 3, 2),
        (1, 8, 8, 17, 3, 2),
        (3, 6, 11, 4, 5, 1),
        (1, 9, 7, 33, 5, 2),
        (1, 3, 2, 2, 5, 2),
        (2, 28, 28, 144, 5, 2),
    ]
    .iter()
    .enumerate()
    {
        let conv = Conv2d {
            input: ImageShape {
                batch,
                height,
                width,
            },
            kernel,
            stride,
        };
        let rows = conv.input.pixels();
        let (x, xc) = be.up(&random(rows * c, i as u64), &[rows, c]);
        let (w, wc) = be.up(
            &random(kernel * kernel * c, 100 + i as u64),
            &[kernel * kernel * c],
        );
        let (b, bc) = be.up(&random(c, 200 + i as u64), &[c]);
        for act in [Activation::None, Activation::Relu6] {
            be.check(
                &format!("depthwise {conv:?} {act:?}"),
                be.gpu.depthwise(&x, &w, &b, conv, act),
                Cpu.depthwise(&xc, &wc, &bc, conv, act),
            );
        }
    }
}

#[test]
fn layer_norm_with_and_without_residual() {
    let be = Both { gpu: gpu() };
    for (i, &(rows, cols)) in [(1, 5), (33, 384), (7, 1000)].iter().enumerate() {
        let (x, xc) = be.up(&random(rows * cols, i as u64), &[rows, cols]);
        let (r, rc) = be.up(&random(rows * cols, 10 + i as u64), &[rows, cols]);
        let (g, gc) = be.up(&random(cols, 20 + i as u64), &[cols]);
        let (b, bc) = be.up(&random(cols, 30 + i as u64), &[cols]);
        be.check(
            &format!("layer_norm {rows}x{cols}"),
            be.gpu.layer_norm(&x, None, &g, &b, 1e-12),
            Cpu.layer_norm(&xc, None, &gc, &bc, 1e-12),
        );
        be.check(
            &format!("layer_norm {rows}x{cols} + residual"),
            be.gpu.layer_norm(&x, Some(&r), &g, &b, 1e-5),
            Cpu.layer_norm(&xc, Some(&rc), &gc, &bc, 1e-5),
        );
    }
}

/// Padding at the end of every sequence but the first, as a tokenizer produces.
fn mask(shape: BatchShape) -> Vec<u32> {
    (0..shape.batch)
        .flat_map(|b| {
            (0..shape.seq).map(move |s| u32::from(b == 0 || s < shape.seq - b.min(shape.seq - 1)))
        })
        .collect()
}

#[test]
fn attention_with_key_mask() {
    let be = Both { gpu: gpu() };
    for (i, &(batch, seq, heads, head_dim)) in
        [(1, 1, 1, 4), (2, 7, 2, 5), (3, 65, 12, 32), (2, 130, 4, 16)]
            .iter()
            .enumerate()
    {
        let shape = BatchShape { batch, seq };
        let hidden = heads * head_dim;
        let (qkv, qkvc) = be.up(
            &random(batch * seq * 3 * hidden, i as u64),
            &[batch * seq, 3 * hidden],
        );
        let m = mask(shape);
        let (km, kmc) = (
            be.gpu.key_mask(&m, shape).expect("mask"),
            Cpu.key_mask(&m, shape).expect("mask"),
        );
        be.check(
            &format!("attention b{batch} s{seq} h{heads} d{head_dim}"),
            be.gpu.attention(&qkv, &km, shape, heads),
            Cpu.attention(&qkvc, &kmc, shape, heads),
        );
    }
}

#[test]
fn embed_pool_and_normalize() {
    let be = Both { gpu: gpu() };
    let (vocab, positions, types, hidden) = (50, 20, 2, 70);
    let (word, wordc) = be.up(&random(vocab * hidden, 1), &[vocab, hidden]);
    let (pos, posc) = be.up(&random(positions * hidden, 2), &[positions, hidden]);
    let (tt, ttc) = be.up(&random(types * hidden, 3), &[types, hidden]);
    let shape = BatchShape { batch: 3, seq: 11 };
    let ids: Vec<u32> = (0..shape.tokens() as u32)
        .map(|i| (i * 7) % vocab as u32)
        .collect();
    let type_ids: Vec<u32> = (0..shape.tokens() as u32).map(|i| i % 2).collect();
    let x = be
        .gpu
        .embed(
            [&word, &pos, &tt],
            &ids,
            &shape.positions(),
            &type_ids,
            shape,
        )
        .expect("embed");
    let xc = Cpu
        .embed(
            [&wordc, &posc, &ttc],
            &ids,
            &shape.positions(),
            &type_ids,
            shape,
        )
        .expect("embed");
    be.check("embed", Ok(x.clone()), Ok(xc.clone()));

    let m = mask(shape);
    let (km, kmc) = (
        be.gpu.key_mask(&m, shape).expect("mask"),
        Cpu.key_mask(&m, shape).expect("mask"),
    );
    for how in [Reduce::First, Reduce::MaskedMean] {
        be.check(
            &format!("reduce {how:?}"),
            be.gpu.reduce(&x, &km, shape, how),
            Cpu.reduce(&xc, &kmc, shape, how),
        );
    }
    be.check(
        "l2_normalize",
        be.gpu.l2_normalize(&x),
        Cpu.l2_normalize(&xc),
    );
    assert!(
        be.gpu
            .embed(
                [&word, &pos, &tt],
                &[vocab as u32; 33],
                &shape.positions(),
                &type_ids,
                shape
            )
            .is_err(),
        "an id outside the table is refused"
    );
}

/// The f16 kernels against the f32 CPU backend. Inputs are in [-1, 1); weights and
/// activations are rounded to f16 (relative error 2⁻¹¹) and products are summed in f16
/// over slices of 16 before an f32 sum, so the error grows like √k:
/// |gpu − cpu| ≤ 2e-3 · √k · max(1, |cpu|/√k) for the linear layer (about twice the largest
/// error seen on lavapipe: 1.2e-3 · √k), 1e-3 · max(1, |cpu|) for the embedding sum of three
/// f16 values. Adapters without `shader-f16` fall back to f32 weights, and fail this test.
#[test]
fn f16_weights_where_the_adapter_has_shader_f16() {
    let gpu = gpu_with(Precision::F16);
    if !gpu.pool.host.info().shader_f16 {
        assert_eq!(
            gpu.precision(),
            Precision::F32,
            "no shader-f16: f32 weights"
        );
        panic!(
            "{} has no shader-f16: the f16 kernels cannot be tested here (lavapipe has it)",
            gpu.adapter()
        );
    }
    assert_eq!(gpu.precision(), Precision::F16);
    let be = Both { gpu };
    for (i, &(m, n, k)) in [
        (1, 1, 1),
        (5, 7, 3),
        (65, 130, 33),
        (128, 384, 384),
        (3, 1536, 1536),
    ]
    .iter()
    .enumerate()
    {
        // Activations are computed on the GPU in f32; upload them as such.
        let xs = random(m * k, i as u64);
        let x = be
            .gpu
            .upload_bytes(bytemuck::cast_slice(&xs), m, k)
            .expect("x");
        let xc = Cpu.upload(xs, &[m, k]).expect("x");
        let (w, wc) = be.up_weight(&random(n * k, 100 + i as u64), n, k);
        assert!(w.f16, "weight matrices are f16");
        let (b, bc) = be.up(&random(n, 200 + i as u64), &[n]);
        assert!(!b.f16, "vectors stay f32");
        for act in [Activation::None, Activation::GeluErf] {
            let g = be.gpu.linear(&x, &w, Some(&b), act).expect("gpu linear");
            let g = be.gpu.read(&g).expect("read");
            let c = Cpu
                .read(&Cpu.linear(&xc, &wc, Some(&bc), act).expect("cpu"))
                .expect("read");
            let root = (k as f32).sqrt();
            let worst: f32 = g
                .iter()
                .zip(&c)
                .map(|(g, c)| (g - c).abs() / (c.abs() / root).max(1.0))
                .fold(0.0f32, f32::max);
            assert!(
                worst <= 2e-3 * root,
                "f16 linear {m}x{k}·{n}x{k}ᵀ {act:?}: scaled error {worst} > {}",
                2e-3 * root
            );
        }
    }
    let (vocab, positions, hidden) = (50, 20, 70);
    let (word, wordc) = be.up(&random(vocab * hidden, 1), &[vocab, hidden]);
    let (pos, posc) = be.up(&random(positions * hidden, 2), &[positions, hidden]);
    let (tt, ttc) = be.up(&random(2 * hidden, 3), &[2, hidden]);
    let shape = BatchShape { batch: 2, seq: 9 };
    let ids: Vec<u32> = (0..18).map(|i| (i * 7) % vocab as u32).collect();
    let type_ids: Vec<u32> = (0..18).map(|i| i % 2).collect();
    let g = be
        .gpu
        .embed(
            [&word, &pos, &tt],
            &ids,
            &shape.positions(),
            &type_ids,
            shape,
        )
        .expect("embed");
    let g = be.gpu.read(&g).expect("read");
    let c = Cpu
        .read(
            &Cpu.embed(
                [&wordc, &posc, &ttc],
                &ids,
                &shape.positions(),
                &type_ids,
                shape,
            )
            .expect("embed"),
        )
        .expect("read");
    for (i, (g, c)) in g.iter().zip(&c).enumerate() {
        assert!(
            (g - c).abs() <= 1e-3 * c.abs().max(1.0),
            "f16 embed[{i}]: {g} vs {c}"
        );
    }
}

#[test]
fn buffers_are_pooled() {
    let gpu = gpu();
    let a = gpu.upload(random(1000, 1), &[10, 100]).expect("upload");
    let id = a.id();
    drop(a);
    let b = gpu.upload(random(1000, 2), &[10, 100]).expect("upload");
    assert_eq!(
        b.id(),
        id,
        "a dropped tensor's buffer is reused for the same size"
    );
    assert_eq!(gpu.read(&b).expect("read"), random(1000, 2));
}
