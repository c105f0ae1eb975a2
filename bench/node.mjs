// Node.js runners for `cargo xtask bench`: amphi's npm package and onnxruntime-web's wasm backend
// (one thread), on the shapes of inputs.json. Usage:
//   node node.mjs amphi|ort-web INPUTS.json MODEL_DIR ONNX_FILE OUT.json
import { readFileSync, writeFileSync } from 'node:fs';
import { measure, ortEmbedder } from './timing.mjs';

const [runner, inputsPath, modelDir, onnxFile, outPath] = process.argv.slice(2);
const { shapes } = JSON.parse(readFileSync(inputsPath, 'utf8'));
const log = (line) => console.error(`${runner} (Node): ${line}`);

let name;
let embed;
if (runner === 'amphi') {
  const { pipeline } = await import('amphi');
  const extractor = await pipeline('feature-extraction', modelDir, { device: 'cpu' });
  name = 'amphi npm (Node)';
  embed = async (shape) => (await extractor(shape.texts, { pooling: 'mean', normalize: true, max_length: shape.seq }));
} else if (runner === 'ort-web') {
  const ort = await import('onnxruntime-web');
  ort.env.wasm.numThreads = 1;
  name = `onnxruntime-web ${ort.env.versions.web} wasm (Node)`;
  embed = await ortEmbedder(ort, readFileSync(onnxFile));
} else {
  throw new Error(`unknown runner ${runner}`);
}
const results = await measure(shapes, embed, undefined, log);
writeFileSync(outPath, JSON.stringify({ runtime: name, results }));
