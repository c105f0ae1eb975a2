// Node.js runners for `cargo xtask bench`: amphi's npm package and onnxruntime-web's wasm backend
// (one thread), on the shapes of inputs.json. The amphi runner also times the kernel
// microbenchmarks that amphi.wasm exports (`amphi_probe_*`: the SIMD128 peak and the matrix
// multiply on MiniLM's shapes) in V8. Usage:
//   node node.mjs amphi|ort-web INPUTS.json MODEL_DIR ONNX_FILE OUT.json
import { readFileSync, writeFileSync } from 'node:fs';
import { kernelProbes, measure, ortEmbedder } from './timing.mjs';

const [runner, inputsPath, modelDir, onnxFile, outPath] = process.argv.slice(2);
const { shapes } = JSON.parse(readFileSync(inputsPath, 'utf8'));
const log = (line) => console.error(`${runner} (Node): ${line}`);

let name;
let embed;
let kernels = null;
if (runner === 'amphi') {
  const { pipeline } = await import('amphi');
  const extractor = await pipeline('feature-extraction', modelDir, { device: 'cpu' });
  name = 'amphi npm (Node)';
  embed = async (shape) => (await extractor(shape.texts, { pooling: 'mean', normalize: true, max_length: shape.seq }));
  kernels = await kernelProbes(readFileSync(new URL(import.meta.resolve('amphi/amphi.wasm'))));
  log(`peak ${kernels.peak_gflops.toFixed(1)} GFLOP/s; matmul on MiniLM's shapes ${kernels.matmul_gflops.toFixed(1)} GFLOP/s (${(100 * kernels.share_of_peak).toFixed(0)} % of peak)`);
} else if (runner === 'ort-web') {
  const ort = await import('onnxruntime-web');
  ort.env.wasm.numThreads = 1;
  name = `onnxruntime-web ${ort.env.versions.web} wasm (Node)`;
  embed = await ortEmbedder(ort, readFileSync(onnxFile));
} else {
  throw new Error(`unknown runner ${runner}`);
}
const results = await measure(shapes, embed, undefined, log);
writeFileSync(outPath, JSON.stringify({ runtime: name, kernels, results }));
