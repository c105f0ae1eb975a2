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

#[test]
fn decoder_ops_match_an_f64_reference() {
    let report = crate::backend::checks::run(&gpu(), 1e-4);
    assert!(report.checked > 40, "{} checks", report.checked);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
}

/// The same checks on an f16 GPU: activations stay f32, tables uploaded as weights are f16
/// (`gather_f16`). Adapters without `shader-f16` run f32 here (the f16 weight test above fails
/// on them).
#[test]
fn decoder_ops_match_an_f64_reference_with_f16_weights() {
    let gpu = gpu_with(Precision::F16);
    assert_eq!(gpu.f16, gpu.pool.host.info().shader_f16);
    let report = crate::backend::checks::run(&gpu, 1e-4);
    assert!(report.checked > 40, "{} checks", report.checked);
    assert!(report.failures.is_empty(), "{:#?}", report.failures);
    if gpu.f16 {
        let table = gpu.upload(random(6 * 5, 1), &[6, 5]).expect("table");
        assert!(table.f16, "2-D tables are f16");
        assert!(gpu.gather(&table, &[6]).is_err(), "an id past the table");
    }
}

fn spec(batch: usize, queries: usize, keys: usize, heads: usize, d: usize) -> AttentionSpec {
    AttentionSpec {
        batch,
        queries,
        keys,
        heads,
        kv_heads: heads,
        head_dim: d,
        scale: 1.0,
        causal: false,
        offset: 0,
        window: None,
    }
}

/// Shapes the kernel cannot take, or that disagree, are errors, not panics or garbage.
#[test]
fn attend_refuses_what_it_cannot_take() {
    let gpu = gpu();
    let t = |rows, cols| {
        gpu.activations(vec![0.5; rows * cols], rows, cols)
            .expect("up")
    };
    // Heads past the kernel's workgroup memory.
    let s = spec(1, 1, 2, 1, 513);
    let err = gpu.attend(&t(1, 513), &t(2, 513), &t(2, 513), None, &s);
    assert!(matches!(err, Err(Error::Backend { .. })), "head_dim 513");
    // The largest head it takes: uniform keys average the values.
    let s = spec(1, 1, 2, 1, 512);
    let out = gpu.attend(&t(1, 512), &t(2, 512), &t(2, 512), None, &s);
    let out = gpu.read(&out.expect("head_dim 512")).expect("read");
    assert!(out.iter().all(|&x| (x - 0.5).abs() < 1e-6));
    // Values of another shape than the keys, a mask of the wrong shape, an invalid spec.
    let s = spec(1, 2, 3, 2, 4);
    assert!(gpu.attend(&t(2, 8), &t(3, 8), &t(2, 8), None, &s).is_err());
    let mask = gpu
        .key_mask(&[1, 1], BatchShape { batch: 1, seq: 2 })
        .expect("mask");
    assert!(
        gpu.attend(&t(2, 8), &t(3, 8), &t(3, 8), Some(&mask), &s)
            .is_err()
    );
    let bad = AttentionSpec { keys: 0, ..s };
    assert!(
        gpu.attend(&t(2, 8), &t(0, 8), &t(0, 8), None, &bad)
            .is_err()
    );
    // A cache whose length is not the spec's keys.
    let mut cache = gpu.kv_cache(1, 8, 4).expect("cache");
    gpu.kv_append(&mut cache, &t(2, 8), &t(2, 8))
        .expect("append");
    assert!(gpu.attend_cached(&t(2, 8), &cache, None, &s).is_err());
    let s = AttentionSpec { keys: 2, ..s };
    assert!(gpu.attend_cached(&t(2, 8), &cache, None, &s).is_ok());
    assert!(gpu.kv_append(&mut cache, &t(2, 7), &t(2, 7)).is_err());
}

/// More query rows than one dispatch axis holds (65,535 workgroups), and RMSNorm over more
/// groups than that.
#[test]
fn dispatches_past_one_axis() {
    let gpu = gpu();
    let rows = 70_000;
    let q = gpu.activations(random(rows, 1), rows, 1).expect("q");
    let k = gpu.activations(vec![1.0; 2], 2, 1).expect("k");
    let v = gpu.activations(vec![3.0, 5.0], 2, 1).expect("v");
    let s = spec(1, rows, 2, 1, 1);
    let out = gpu
        .read(&gpu.attend(&q, &k, &v, None, &s).expect("attend"))
        .expect("read");
    assert!(
        out.iter().all(|&x| (x - 4.0).abs() < 1e-5),
        "equal keys average the values"
    );
    // Groups of one positive value: x / |x| · gamma.
    let x: Vec<f32> = random(rows * 2, 2).iter().map(|x| x + 1.5).collect();
    let gamma = gpu.upload(vec![2.0], &[1]).expect("gamma");
    let x = gpu.activations(x, rows, 2).expect("x");
    let got = gpu
        .read(&gpu.rms_norm(&x, &gamma, 0.0).expect("rms_norm"))
        .expect("read");
    assert!(got.iter().all(|&g| (g - 2.0).abs() < 1e-5));
}

/// A cache's buffers return to the pool when it is dropped, and its size is what it holds.
#[test]
fn kv_caches_grow_and_free_their_buffers() {
    use crate::backend::KvCache;
    let gpu = gpu();
    let mut cache = gpu.kv_cache(2, 3, 2).expect("cache");
    assert_eq!((cache.len(), cache.bytes()), (0, 2 * 2 * 2 * 3 * 4));
    let k = gpu.activations(random(2 * 3 * 3, 1), 6, 3).expect("k");
    gpu.kv_append(&mut cache, &k, &k).expect("append");
    // Grown to max(2·2, 3) = 4 positions.
    assert_eq!((cache.len(), cache.bytes()), (3, 2 * 2 * 4 * 3 * 4));
    let free = |gpu: &Gpu| -> usize {
        gpu.pool
            .free
            .lock()
            .expect("pool")
            .values()
            .map(Vec::len)
            .sum()
    };
    let before = free(&gpu);
    drop(cache);
    assert_eq!(free(&gpu), before + 2, "both buffers back in the pool");
}

/// Masked keys take no part: not even a NaN in their values reaches the output.
#[test]
fn masked_keys_are_skipped() {
    let gpu = gpu();
    let q = gpu.activations(vec![1.0, 0.0], 1, 2).expect("q");
    let k = gpu.activations(vec![1.0, 2.0, 3.0, 4.0], 2, 2).expect("k");
    let v = gpu
        .activations(vec![f32::NAN, f32::INFINITY, 7.0, -1.0], 2, 2)
        .expect("v");
    let mask = gpu
        .key_mask(&[0, 1], BatchShape { batch: 1, seq: 2 })
        .expect("mask");
    let out = gpu.attend(&q, &k, &v, Some(&mask), &spec(1, 1, 2, 1, 2));
    assert_eq!(gpu.read(&out.expect("attend")).expect("read"), [7.0, -1.0]);
}
