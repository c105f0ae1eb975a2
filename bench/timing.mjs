// What the JavaScript runners share (Node and the browser page): the timing loop and the pooling
// that turns an ONNX model's last_hidden_state into sentence embeddings. Same rules as
// `amphi bench`: one untimed run whose output is kept, `warmup - 1` more, then at least
// `minRuns` and at most `maxRuns` timed runs within `budgetMs`.

export const DEFAULTS = { warmup: 2, minRuns: 3, maxRuns: 15, budgetMs: 4000 };

const now = () => globalThis.performance.now();

/** Times `embed(shape)` on every shape; returns rows as `amphi bench` writes them. */
export async function measure(shapes, embed, options = DEFAULTS, log = () => {}) {
  const rows = [];
  for (const shape of shapes) {
    const embeddings = await embed(shape);
    for (let i = 1; i < options.warmup; i++) await embed(shape);
    const ms = [];
    const started = now();
    while (ms.length < options.minRuns || (ms.length < options.maxRuns && now() - started < options.budgetMs)) {
      const t = now();
      await embed(shape);
      ms.push(now() - t);
    }
    const sorted = [...ms].sort((a, b) => a - b);
    const row = {
      batch: shape.batch, seq: shape.seq, ms,
      median: sorted[sorted.length >> 1], min: sorted[0], max: sorted[sorted.length - 1],
      embeddings,
    };
    log(`${shape.batch}x${shape.seq}: median ${row.median.toFixed(2)} ms (${row.min.toFixed(2)}–${row.max.toFixed(2)}, ${ms.length} runs)`);
    rows.push(row);
  }
  return rows;
}

/** The ids of a shape as the int64 feeds of the ONNX export (no padding: every row is `seq` long). */
export function feeds(ort, shape) {
  const n = shape.batch * shape.seq;
  const ids = new BigInt64Array(n);
  shape.ids.flat().forEach((id, i) => { ids[i] = BigInt(id); });
  const dims = [shape.batch, shape.seq];
  return {
    input_ids: new ort.Tensor('int64', ids, dims),
    attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), dims),
    token_type_ids: new ort.Tensor('int64', new BigInt64Array(n), dims),
  };
}

/** Mean over the tokens of each row of `[batch, seq, hidden]`, then L2 normalisation. */
export function meanPoolNormalize(data, batch, seq, hidden) {
  const out = [];
  for (let b = 0; b < batch; b++) {
    const v = new Float64Array(hidden);
    for (let s = 0; s < seq; s++) {
      const base = (b * seq + s) * hidden;
      for (let h = 0; h < hidden; h++) v[h] += data[base + h];
    }
    let norm = 0;
    for (let h = 0; h < hidden; h++) { v[h] /= seq; norm += v[h] * v[h]; }
    norm = Math.max(Math.sqrt(norm), 1e-12);
    out.push(Array.from(v, (x) => x / norm));
  }
  return out;
}

/** onnxruntime-web (any build): a session on `modelUrl` and an `embed(shape)` for `measure`. */
export async function ortEmbedder(ort, model) {
  const session = await ort.InferenceSession.create(model, { executionProviders: ['wasm'] });
  return async (shape) => {
    const out = await session.run(feeds(ort, shape));
    const hidden = out.last_hidden_state;
    return meanPoolNormalize(hidden.data, shape.batch, shape.seq, hidden.dims[2]);
  };
}

/** MiniLM's linear layers at 128 tokens, as `amphi bench` times them: [m, n, k]. */
export const MATMUL_SHAPES = [[128, 1152, 384], [128, 384, 384], [128, 1536, 384], [128, 384, 1536]];

/**
 * The kernel microbenchmarks exported by amphi.wasm (`amphi_probe_*`), timed here as
 * `amphi bench` times them under wasmtime: iterations doubled until a run takes 50 ms, then the
 * median of 5. The module is instantiated on its own; the probes call no import.
 */
export async function kernelProbes(bytes) {
  const module = await WebAssembly.compile(bytes);
  const imports = {};
  for (const { module: m, name } of WebAssembly.Module.imports(module)) {
    (imports[m] ??= {})[name] = () => { throw new Error(`${m}.${name} is not available to the kernel probes`); };
  }
  const { exports: x } = await WebAssembly.instantiate(module, imports);
  const gflops = (flopsPerIter, run) => {
    const once = (iters) => { const t = now(); run(iters); return (flopsPerIter * iters) / ((now() - t) / 1e3) / 1e9; };
    let iters = 1;
    while (iters < 2 ** 30 && (flopsPerIter * iters) / (once(iters) * 1e9) < 0.05) iters *= 2;
    const runs = Array.from({ length: 5 }, () => once(iters)).sort((a, b) => a - b);
    return runs[2];
  };
  const peak = gflops(x.amphi_probe_peak_flops(), (i) => x.amphi_probe_peak(i));
  const shapes = MATMUL_SHAPES.map(([m, n, k]) => ({ m, n, k, gflops: gflops(2 * m * n * k, (i) => x.amphi_probe_matmul(m, n, k, i)) }));
  const flops = shapes.reduce((s, r) => s + 2 * r.m * r.n * r.k, 0);
  const secs = shapes.reduce((s, r) => s + (2 * r.m * r.n * r.k) / r.gflops, 0);
  const matmul = flops / secs;
  return { kernel: 'amphi.wasm simd128 (V8)', peak_gflops: peak, matmul_gflops: matmul, share_of_peak: matmul / peak, shapes };
}
