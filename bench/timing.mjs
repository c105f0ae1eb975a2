// What the JavaScript runners share (Node and the browser page): the timing loop and the pooling
// that turns an ONNX model's last_hidden_state into sentence embeddings. Same rules as
// `amphi bench`: one untimed run whose output is kept, `warmup - 1` more, then at least
// `minRuns` and at most `maxRuns` timed runs within `budgetMs`; but here the warm-up also lasts
// at least `warmupMs`. V8 compiles WebAssembly in two tiers: every function at once with its
// baseline compiler (Liftoff), then, once it is hot, again with TurboFan on a background
// thread. On this 2-core machine that took about a second of calls: at 1×8 in Node, amphi's
// calls went from 50 ms to a steady 5.1–5.3 and onnxruntime-web's from 113 to 6.1–6.7, and with
// two warm-up calls the timed runs still straddled the switch (amphi 5.1–22.6 ms, onnxruntime-web
// 9.4–35.4 in one run), which measured the compiler rather than the runtime.

export const DEFAULTS = { warmup: 2, warmupMs: 1500, minRuns: 3, maxRuns: 15, budgetMs: 4000 };

const now = () => globalThis.performance.now();

/**
 * The pacing every runner of one engine shares: `warm(r)` for each runner, then rounds of one
 * `once(r)` per runner (in alternating order, skipping runners at `maxRuns`) until each has
 * `minRuns` and either all have `maxRuns` or `budgetMs` per runner is spent. On a shared machine
 * whose speed drifts, the runners of one round see the same drift, so their ratio holds.
 * Returns what `once` returned, per runner.
 */
export async function rounds(count, warm, once, options = DEFAULTS) {
  for (let r = 0; r < count; r++) await warm(r);
  const out = Array.from({ length: count }, () => []);
  const started = now();
  const done = () => out.every((m) => m.length >= options.minRuns)
    && (out.every((m) => m.length >= options.maxRuns) || now() - started >= options.budgetMs * count);
  for (let round = 0; !done(); round++) {
    const order = [...Array(count).keys()];
    if (round % 2) order.reverse();
    for (const r of order) {
      if (out[r].length < options.maxRuns) out[r].push(await once(r));
    }
  }
  return out;
}

/**
 * Times every embedder on every shape in `rounds`: one untimed run whose output is
 * kept and `warmup - 1` more (and more until `warmupMs` have passed), then timed runs.
 * Returns, per embedder, rows as `amphi bench` writes them.
 */
export async function measureInterleaved(shapes, embeds, options = DEFAULTS, logs = []) {
  const rows = embeds.map(() => []);
  for (const shape of shapes) {
    const outputs = [];
    const warm = async (i) => {
      const started = now();
      outputs[i] = await embeds[i](shape);
      for (let w = 1; w < options.warmup || now() - started < options.warmupMs; w++) await embeds[i](shape);
    };
    const once = async (i) => {
      const t = now();
      await embeds[i](shape);
      return now() - t;
    };
    const ms = await rounds(embeds.length, warm, once, options);
    embeds.forEach((_, i) => {
      const sorted = [...ms[i]].sort((a, b) => a - b);
      const row = {
        batch: shape.batch, seq: shape.seq, ms: ms[i],
        median: sorted[sorted.length >> 1], min: sorted[0], max: sorted[sorted.length - 1],
        embeddings: outputs[i],
      };
      logs[i]?.(`${shape.batch}x${shape.seq}: median ${row.median.toFixed(2)} ms (${row.min.toFixed(2)}–${row.max.toFixed(2)}, ${ms[i].length} runs)`);
      rows[i].push(row);
    });
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
 * best of 5 runs (what the code can do; this shared machine's speed drifts). The module is
 * instantiated on its own; the probes call no import. V8 compiles wasm in its baseline tier
 * first and swaps in optimised code only on a later call (no on-stack replacement), in the
 * background: the whole set of probes runs twice and only the second round counts, and before
 * each timing the tab or process is left idle for a moment so that a pending optimising compile
 * can finish.
 */
export async function kernelProbes(bytes) {
  const module = await WebAssembly.compile(bytes);
  const imports = {};
  for (const { module: m, name } of WebAssembly.Module.imports(module)) {
    (imports[m] ??= {})[name] = () => { throw new Error(`${m}.${name} is not available to the kernel probes`); };
  }
  const { exports: x } = await WebAssembly.instantiate(module, imports);
  const idle = (ms) => new Promise((resolve) => { setTimeout(resolve, ms); });
  const gflops = async (flopsPerIter, run) => {
    const once = (iters) => { const t = now(); run(iters); return (flopsPerIter * iters) / ((now() - t) / 1e3) / 1e9; };
    let iters = 1;
    while (iters < 2 ** 30 && (flopsPerIter * iters) / (once(iters) * 1e9) < 0.05) iters *= 2;
    await idle(200);
    const runs = Array.from({ length: 5 }, () => once(iters)).sort((a, b) => a - b);
    return runs[4];
  };
  let peak;
  let shapes;
  for (let round = 0; round < 2; round++) {
    peak = await gflops(x.amphi_probe_peak_flops(), (i) => x.amphi_probe_peak(i));
    shapes = [];
    for (const [m, n, k] of MATMUL_SHAPES) {
      shapes.push({ m, n, k, gflops: await gflops(2 * m * n * k, (i) => x.amphi_probe_matmul(m, n, k, i)) });
    }
  }
  const flops = shapes.reduce((s, r) => s + 2 * r.m * r.n * r.k, 0);
  const secs = shapes.reduce((s, r) => s + (2 * r.m * r.n * r.k) / r.gflops, 0);
  const matmul = flops / secs;
  return { kernel: 'amphi.wasm simd128 (V8)', peak_gflops: peak, matmul_gflops: matmul, share_of_peak: matmul / peak, shapes };
}
