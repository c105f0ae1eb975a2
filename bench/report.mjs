// Turns the runners' result files of one `cargo xtask bench` run into the Markdown report (also
// written to OUT_DIR/results.md): times per runtime and shape, amphi's ratio to each peer, the
// agreement check, the issue's targets, and the extras (memory, start-up, sizes). Exits 1 if any
// runtime's embeddings disagree with amphi native (cosine < 0.9999): its times would not count.
// With README.md as a second argument, the report replaces what lies between its
// `<!-- bench:start -->` and `<!-- bench:end -->` markers (the README's performance section).
//   node report.mjs OUT_DIR [README.md]
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

const [dir, readme] = process.argv.slice(2);
const FILES = [
  ['native', 'amphi-native.json'], ['wasm', 'amphi-wasm.json'], ['wasmPre', 'amphi-wasm-preemptive.json'],
  ['ort1', 'ort-1.json'], ['ortN', 'ort-all.json'],
  ['nodeAmphi', 'node-amphi.json'], ['nodeOrt', 'node-ort-web.json'],
  ['chromeAmphi', 'chromium-amphi.json'], ['chromeOrt', 'chromium-ort-web.json'], ['chromeTjs', 'chromium-transformers.json'],
];
const runs = {};
for (const [key, file] of FILES) {
  const path = join(dir, file);
  if (existsSync(path)) runs[key] = JSON.parse(readFileSync(path, 'utf8'));
}
const extras = existsSync(join(dir, 'extras.json')) ? JSON.parse(readFileSync(join(dir, 'extras.json'), 'utf8')) : {};
const shapeKey = (r) => `${r.batch}×${r.seq}`;
const shapes = runs.native.results.map(shapeKey);
const row = (run, shape) => run?.results.find((r) => shapeKey(r) === shape);
const fmt = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));

// Agreement with amphi native, per runtime: the smallest cosine over every embedding.
const cosine = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0)
  / Math.sqrt(a.reduce((s, x) => s + x * x, 0) * b.reduce((s, x) => s + x * x, 0));
const agreement = {};
for (const [key, run] of Object.entries(runs)) {
  let min = 1;
  for (const shape of shapes) {
    const mine = row(run, shape);
    const ref = row(runs.native, shape);
    if (!mine) continue;
    mine.embeddings.forEach((e, i) => { min = Math.min(min, cosine(e, ref.embeddings[i])); });
  }
  agreement[key] = min;
}

const out = [];
const p = (line = '') => out.push(line);
p(`Machine: ${extras.machine ?? '?'}. Every time is the median (min–max) in ms of one call embedding the whole batch (mean pooling + L2 normalisation), after warm-up, in one run of \`cargo xtask bench\` (${extras.date ?? ''}). Sequence lengths are exact token counts (special tokens included).`);
p();
p(`| runtime | ${shapes.join(' | ')} | min cosine to amphi native |`);
p(`|---|${shapes.map(() => '---|').join('')}---|`);
for (const [key, run] of Object.entries(runs)) {
  const cells = shapes.map((s) => { const r = row(run, s); return r ? `${fmt(r.median)} (${fmt(r.min)}–${fmt(r.max)})` : '–'; });
  p(`| ${run.runtime} | ${cells.join(' | ')} | ${agreement[key].toFixed(6)}${agreement[key] < 0.9999 ? ' ✗' : ''} |`);
}
p();
p('amphi\'s speed relative to each peer in the same run (peer median / amphi median: above 1 means amphi is faster):');
p();
p(`| amphi vs peer | ${shapes.join(' | ')} |`);
p(`|---|${shapes.map(() => '---|').join('')}`);
const PAIRS = [
  ['native', 'ort1'], ['native', 'ortN'], ['wasm', 'ort1'], ['wasmPre', 'ort1'],
  ['nodeAmphi', 'nodeOrt'], ['chromeAmphi', 'chromeOrt'], ['chromeAmphi', 'chromeTjs'],
];
const ratio = (a, b, s) => { const x = row(runs[a], s); const y = row(runs[b], s); return x && y ? y.median / x.median : undefined; };
for (const [a, b] of PAIRS) {
  if (!runs[a] || !runs[b]) continue;
  p(`| ${runs[a].runtime} vs ${runs[b].runtime} | ${shapes.map((s) => { const r = ratio(a, b, s); return r === undefined ? '–' : `${r.toFixed(2)}×`; }).join(' | ')} |`);
}
p();
// The arithmetic floor of each SIMD128 engine: MiniLM's flops at the ceiling of amphi's kernel in
// that engine, measured in this run. all-MiniLM-L6-v2: 6 layers, hidden 384, FFN 1536; per token the linear
// layers do 2·(384·1152 + 384·384 + 2·384·1536) flops per layer, and attention does 4·seq²·384 per
// sequence and layer (Q·Kᵀ and P·V). Embedding, layer norm, softmax, GELU and pooling are left
// out, so the floor is below what any fp32 SIMD128 implementation can reach.
const LAYERS = 6;
const HIDDEN = 384;
const FFN = 1536;
const flopsOf = (shape) => {
  const [batch, seq] = shape.split('×').map(Number);
  const linear = 2 * (HIDDEN * 3 * HIDDEN + HIDDEN * HIDDEN + 2 * HIDDEN * FFN);
  return LAYERS * batch * (seq * linear + 4 * seq * seq * HIDDEN);
};
// An engine's kernel ceiling: the peak probe, or what the multiply reached on MiniLM's shapes if
// that is higher (a probe that missed the engine's optimised code reads low).
const ceiling = (k) => Math.max(k.peak_gflops, ...k.shapes.map((s) => s.gflops));
const floorMs = (key, shape) => (runs[key]?.kernels ? flopsOf(shape) / (ceiling(runs[key].kernels) * 1e6) : undefined);
const limitNote = (key, peer, shape) => {
  const floor = floorMs(key, shape);
  const other = row(runs[peer], shape)?.median;
  return floor && other ? `${(other / floor).toFixed(2)}×` : '?';
};
const check = (ok) => (ok === undefined ? '?' : ok ? 'met' : '**not met**');
p('Targets (issue 6, MiniLM fp32, one thread):');
p();
for (const key of ['wasm', 'wasmPre'].filter((k) => runs[k])) {
  const floor = floorMs(key, '1×128');
  const ort = row(runs.ort1, '1×128')?.median;
  const limit = floor && ort ? `; MiniLM's multiplies alone, with amphi's kernel at its ceiling in this engine, take ${fmt(floor)} ms = ${(floor / ort).toFixed(2)}× onnxruntime's time` : '';
  p(`- ${runs[key].runtime} ≤ 3× native onnxruntime at 1×128: ${fmt(1 / (ratio(key, 'ort1', '1×128') ?? NaN))}× its time — ${check(ratio(key, 'ort1', '1×128') >= 1 / 3)}${limit}`);
}
for (const [a, b, where] of [['nodeAmphi', 'nodeOrt', 'Node'], ['chromeAmphi', 'chromeOrt', 'Chromium']]) {
  p(`- amphi in ${where} ≥ 1.5× faster than onnxruntime-web at 1×128: ${ratio(a, b, '1×128')?.toFixed(2)}× — ${check(ratio(a, b, '1×128') >= 1.5)}; ≥ 4× at 1×8: ${ratio(a, b, '1×8')?.toFixed(2)}× — ${check(ratio(a, b, '1×8') >= 4)}. With amphi's kernel at its ceiling in this engine and everything but the multiplies free, the most possible is ${limitNote(a, b, '1×128')} at 1×128 and ${limitNote(a, b, '1×8')} at 1×8`);
}
p(`- amphi native no slower than onnxruntime (1 thread) at every shape: ${shapes.map((s) => `${ratio('native', 'ort1', s)?.toFixed(2)}×`).join(', ')} — ${check(shapes.every((s) => ratio('native', 'ort1', s) >= 1))}`);
const simd = ['wasm', 'wasmPre', 'nodeAmphi', 'chromeAmphi'].filter((k) => runs[k]?.kernels);
if (simd.length) {
  p(`- the matrix multiply on MiniLM's shapes ≥ 70 % of the SIMD128 peak: ${simd.map((k) => `${(100 * runs[k].kernels.share_of_peak).toFixed(0)} % (${runs[k].runtime})`).join(', ')} — ${check(simd.every((k) => runs[k].kernels.share_of_peak >= 0.7))}`);
}
p();
const probed = Object.values(runs).filter((r) => r.kernels);
if (probed.length) {
  p('Kernel microbenchmarks (same run, one thread): the ceiling of the matrix-multiply kernel (in amphi.wasm the SIMD128 kernel itself — eight `f32x4` multiplies and eight adds per step, as SIMD128 has no fused multiply-add — on operands that stay in L1; natively twelve independent FMA chains of the kernel\'s width), and amphi\'s multiply on MiniLM\'s linear layers at 128 tokens (QKV 128×1152×384, attention output 128×384×384, FFN in 128×1536×384, FFN out 128×384×1536), weighted by their flops; each the best of five runs, as the machine\'s speed drifts:');
  p();
  p('| engine | kernel | peak GFLOP/s | matmul GFLOP/s (QKV, attn out, FFN in, FFN out) | matmul / peak |');
  p('|---|---|---|---|---|');
  for (const r of probed) {
    const k = r.kernels;
    p(`| ${r.runtime} | ${k.kernel} | ${k.peak_gflops.toFixed(1)} | ${k.matmul_gflops.toFixed(1)} (${k.shapes.map((x) => x.gflops.toFixed(1)).join(', ')}) | ${(100 * k.share_of_peak).toFixed(0)} % |`);
  }
  p();
}
// [amphi, peer, whether the peer runs in the same engine (then its share of that ceiling means something)]
const BOUNDS = [['wasm', 'ort1', false], ['wasmPre', 'ort1', false], ['nodeAmphi', 'nodeOrt', true], ['chromeAmphi', 'chromeOrt', true], ['chromeAmphi', 'chromeTjs', true]];
const bounded = BOUNDS.filter(([a, b]) => runs[a]?.kernels && runs[b]);
if (bounded.length) {
  p('How far the SIMD128 engines can go: each engine\'s floor is MiniLM\'s matrix-multiply flops (linear layers and attention; everything else left out) at the ceiling of amphi\'s kernel in that engine, measured in this run (its peak probe, or the multiply on MiniLM\'s shapes where that ran faster). "amphi / floor" is how close amphi runs to it; "peer at" is the peer\'s flops per second as a share of that ceiling (for a peer in the same engine); "best possible" is the peer\'s median divided by the floor, the most amphi could be faster than that peer in this engine without fused multiply-add:');
  p();
  p('| engine vs peer | ceiling GFLOP/s | shape | floor ms | amphi ms (amphi / floor) | peer ms (peer at) | best possible |');
  p('|---|---|---|---|---|---|---|');
  for (const [a, b, same] of bounded) {
    const top = ceiling(runs[a].kernels);
    for (const shape of shapes.filter((x) => x === '1×8' || x === '1×128')) {
      const floor = floorMs(a, shape);
      const mine = row(runs[a], shape)?.median;
      const peer = row(runs[b], shape)?.median;
      if (mine === undefined || peer === undefined) continue;
      p(`| ${runs[a].runtime} vs ${runs[b].runtime} | ${top.toFixed(1)} | ${shape} | ${fmt(floor)} | ${fmt(mine)} (${(mine / floor).toFixed(2)}×) | ${fmt(peer)}${same ? ` (${(100 * floor / peer).toFixed(0)} % of the ceiling)` : ''} | ${(peer / floor).toFixed(2)}× |`);
    }
  }
  p();
}
for (const [key, title] of [
  ['native', 'Where amphi native\'s time goes (1 thread, each op timed, share of the timed runs):'],
  ['wasmPre', 'Where amphi.wasm\'s time goes under wasmtime (its call stack sampled at every 5 ms epoch tick and charged to the backend op on it; so with preemptive deadlines, whose checks slow the multiply):'],
]) {
  const run = runs[key];
  const ops = [...new Set((run?.results ?? []).flatMap((r) => (r.profile ?? []).map((o) => o.op)))];
  if (!ops.length) continue;
  p(title);
  p();
  p(`| op | ${shapes.join(' | ')} |`);
  p(`|---|${shapes.map(() => '---|').join('')}`);
  for (const op of ops) {
    p(`| ${op} | ${shapes.map((s) => { const o = row(run, s)?.profile?.find((x) => x.op === op); return o ? `${(100 * o.share).toFixed(1)} %` : '–'; }).join(' | ')} |`);
  }
  p();
}
if (extras.serve) {
  p(`Serverless host (\`amphi serve --instances 1\`, MiniLM, precompiled module cached): first embedding served ${fmt(extras.serve.first_ms)} ms after process start; peak RSS ${(extras.serve.rss_kb / 1024).toFixed(0)} MiB after it.`);
}
if (extras.sizes) {
  const s = extras.sizes;
  p(`Sizes: amphi.wasm ${(s.amphi / 1e6).toFixed(2)} MB, ${(s.amphi_gz / 1e6).toFixed(2)} MB gzipped; onnxruntime-web's ort-wasm-simd-threaded.wasm ${(s.ort / 1e6).toFixed(2)} MB, ${(s.ort_gz / 1e6).toFixed(2)} MB gzipped (plus the model: 90.9 MB safetensors / 90.4 MB ONNX).`);
}
const text = out.join('\n');
writeFileSync(join(dir, 'results.md'), `${text}\n`);
if (readme) {
  const doc = readFileSync(readme, 'utf8');
  const [start, end] = ['<!-- bench:start -->', '<!-- bench:end -->'];
  const [i, j] = [doc.indexOf(start), doc.indexOf(end)];
  if (i < 0 || j < i) throw new Error(`${readme} has no ${start} … ${end} section`);
  writeFileSync(readme, `${doc.slice(0, i + start.length)}\n${text}\n${doc.slice(j)}`);
}
console.log(text);
const bad = Object.entries(agreement).filter(([, c]) => c < 0.9999);
if (bad.length) {
  console.error(`embeddings disagree with amphi native: ${bad.map(([k, c]) => `${runs[k].runtime} ${c}`).join(', ')}`);
  process.exit(1);
}
