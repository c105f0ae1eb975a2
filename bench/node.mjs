// Node.js runners for `cargo xtask bench`: amphi's npm package and onnxruntime-web's wasm backend
// (one thread), on the shapes of inputs.json, in one process and timed interleaved (see
// `measureInterleaved`). The amphi runner also times the kernel microbenchmarks that amphi.wasm
// exports (`amphi_probe_*`: the SIMD128 peak and the matrix multiply on MiniLM's shapes) in V8.
// Each runner's { runtime, kernels, results } goes to OUT_DIR/node-RUNNER.json. Usage:
//   node node.mjs INPUTS.json MODEL_DIR ONNX_FILE OUT_DIR RUNNER...   (RUNNER: amphi, ort-web)
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { kernelProbes, measureInterleaved, ortEmbedder } from './timing.mjs';

const [inputsPath, modelDir, onnxFile, outDir, ...runners] = process.argv.slice(2);
const { shapes } = JSON.parse(readFileSync(inputsPath, 'utf8'));

async function amphi(log) {
  const { pipeline } = await import('amphi');
  const extractor = await pipeline('feature-extraction', modelDir, { device: 'cpu' });
  const kernels = await kernelProbes(readFileSync(new URL(import.meta.resolve('amphi/amphi.wasm'))));
  log(`peak ${kernels.peak_gflops.toFixed(1)} GFLOP/s; matmul on MiniLM's shapes ${kernels.matmul_gflops.toFixed(1)} GFLOP/s (${(100 * kernels.share_of_peak).toFixed(0)} % of peak)`);
  const embed = async (shape) => (await extractor(shape.texts, { pooling: 'mean', normalize: true, max_length: shape.seq }));
  return { runtime: 'amphi npm (Node)', kernels, embed };
}

async function ortWeb() {
  const ort = await import('onnxruntime-web');
  ort.env.wasm.numThreads = 1;
  const embed = await ortEmbedder(ort, readFileSync(onnxFile));
  return { runtime: `onnxruntime-web ${ort.env.versions.web} wasm (Node)`, kernels: null, embed };
}

const logs = runners.map((runner) => (line) => console.error(`${runner} (Node): ${line}`));
const made = [];
for (const [i, runner] of runners.entries()) {
  const make = { amphi, 'ort-web': ortWeb }[runner];
  if (!make) throw new Error(`unknown runner ${runner}`);
  made.push(await make(logs[i]));
}
const rows = await measureInterleaved(shapes, made.map((m) => m.embed), undefined, logs);
runners.forEach((runner, i) => {
  const { runtime, kernels } = made[i];
  writeFileSync(join(outDir, `node-${runner}.json`), JSON.stringify({ runtime, kernels, results: rows[i] }));
});
