// Node.js runner for `cargo xtask bench-vision`: amphi's npm package classifying one image file
// (decoding and preprocessing included), timed like `amphi bench --image`. Usage:
//   node vision-node.mjs MODEL_DIR IMAGE OUT.json
import { readFileSync, writeFileSync } from 'node:fs';
import { pipeline } from 'amphi';

const [modelDir, image, outPath] = process.argv.slice(2);
const [WARMUP, MIN_RUNS, MAX_RUNS, BUDGET_MS] = [2, 3, 15, 4000];

const classify = await pipeline('image-classification', modelDir, { device: 'cpu' });
const bytes = new Uint8Array(readFileSync(image));
const top5 = await classify(bytes, { top_k: 5 });
for (let i = 1; i < WARMUP; i++) await classify(bytes, { top_k: 5 });
const ms = [];
const started = performance.now();
while (ms.length < MIN_RUNS || (ms.length < MAX_RUNS && performance.now() - started < BUDGET_MS)) {
  const t = performance.now();
  await classify(bytes, { top_k: 5 });
  ms.push(performance.now() - t);
}
const s = [...ms].sort((a, b) => a - b);
const out = { runtime: 'amphi npm (Node)', ms, median: s[Math.floor(s.length / 2)], min: s[0], max: s[s.length - 1], top5 };
console.error(`amphi npm (Node): median ${out.median.toFixed(2)} ms (${out.min.toFixed(2)}–${out.max.toFixed(2)}, ${ms.length} runs)`);
writeFileSync(outPath, JSON.stringify(out));
await classify.dispose();
