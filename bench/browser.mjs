// The Chromium runners of `cargo xtask bench` (page ?runners=R1,R2… with R one of amphi, ort-web,
// transformers): they time embeddings on the shapes of /inputs.json in this tab's main thread, on
// the CPU (wasm, one thread), interleaved (see `measureInterleaved`), and leave
// { runs: [{ runner, runtime, kernels, results }] } (or { error }) in `window.benchResult`. The
// amphi runner also times amphi.wasm's kernel probes in this tab's V8.
import { kernelProbes, measureInterleaved, ortEmbedder } from './timing.mjs';

const runners = new URLSearchParams(location.search).get('runners').split(',');
const logger = (runner) => (line) => { document.getElementById('log').textContent += `${line}\n`; console.log(`${runner} (Chromium): ${line}`); };

async function amphi() {
  const { pipeline } = await import('amphi');
  const extractor = await pipeline('feature-extraction', new URL('/models/minilm/', location.href).href, { device: 'cpu' });
  return ['amphi npm (Chromium)', (shape) => extractor(shape.texts, { pooling: 'mean', normalize: true, max_length: shape.seq })];
}

async function ortWeb() {
  const ort = await import('./node_modules/onnxruntime-web/dist/ort.wasm.min.mjs');
  ort.env.wasm.numThreads = 1;
  ort.env.wasm.wasmPaths = new URL('./node_modules/onnxruntime-web/dist/', location.href).href;
  const model = await (await fetch('/peer-models/minilm-l6-v2-onnx/onnx/model.onnx')).arrayBuffer();
  return [`onnxruntime-web ${ort.env.versions.web} wasm (Chromium)`, await ortEmbedder(ort, new Uint8Array(model))];
}

/** Transformers.js end to end: its tokenizer (truncating at the shape's length) and model. */
async function transformers() {
  const { env, AutoTokenizer, AutoModel, mean_pooling } = await import('@huggingface/transformers');
  env.allowRemoteModels = false;
  env.allowLocalModels = true;
  env.localModelPath = '/peer-models/';
  env.useBrowserCache = false;
  env.backends.onnx.wasm.numThreads = 1;
  env.backends.onnx.wasm.wasmPaths = new URL('./node_modules/@huggingface/transformers/node_modules/onnxruntime-web/dist/', location.href).href;
  const id = 'minilm-l6-v2-onnx';
  const tokenizer = await AutoTokenizer.from_pretrained(id);
  const model = await AutoModel.from_pretrained(id, { device: 'wasm', dtype: 'fp32' });
  return ['Transformers.js 4.3.1 wasm (Chromium)', async (shape) => {
    const inputs = tokenizer(shape.texts, { padding: true, truncation: true, max_length: shape.seq });
    const { last_hidden_state } = await model(inputs);
    return mean_pooling(last_hidden_state, inputs.attention_mask).normalize(2, -1).tolist();
  }];
}

try {
  const { shapes } = await (await fetch('/inputs.json')).json();
  const logs = runners.map(logger);
  const made = [];
  for (const [i, runner] of runners.entries()) {
    const make = { amphi, 'ort-web': ortWeb, transformers }[runner];
    if (!make) throw new Error(`unknown runner ${runner}`);
    const [runtime, embed] = await make();
    let kernels = null;
    if (runner === 'amphi') {
      const wasm = await (await fetch('./node_modules/amphi/dist/amphi.wasm')).arrayBuffer();
      kernels = { ...(await kernelProbes(wasm)), kernel: 'amphi.wasm simd128 (Chromium V8)' };
      logs[i](`peak ${kernels.peak_gflops.toFixed(1)} GFLOP/s; matmul on MiniLM's shapes ${kernels.matmul_gflops.toFixed(1)} GFLOP/s`);
    }
    made.push({ runner, runtime, kernels, embed });
  }
  const rows = await measureInterleaved(shapes, made.map((m) => m.embed), undefined, logs);
  window.benchResult = { runs: made.map(({ runner, runtime, kernels }, i) => ({ runner, runtime, kernels, results: rows[i] })) };
} catch (e) {
  console.log(`error: ${e?.stack ?? e}`);
  window.benchResult = { error: String(e?.stack ?? e) };
}
