// The playground and the npm package in headless Chromium (Debian's /usr/bin/chromium driven by
// playwright-core; never a downloaded browser), served by `amphi serve` on loopback: each page is
// used as a visitor would (type, click, read the numbers) and checked against the goldens; the
// golden bodies of ./support/checks.mjs run inside the page (main thread) and in a Web Worker;
// the model cache works offline; the served and packaged amphi.wasm are byte-identical.
// Screenshots go to target/screenshots (or $AMPHI_SCREENSHOTS).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

import * as checks from './support/checks.mjs';
import { artifact, fixtures, golden, screenshots } from './support/paths.mjs';
import { startServer } from './support/serve.mjs';

const FLAGS = ['--headless', '--no-sandbox', '--enable-unsafe-webgpu', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-quic'];

let server;
let context;
let profile;

before(async () => {
  server = await startServer();
  profile = mkdtempSync(join(tmpdir(), 'amphi-chromium-'));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    viewport: { width: 1200, height: 900 },
  });
  mkdirSync(screenshots, { recursive: true });
  console.log(`screenshots: ${screenshots}`);
});

after(async () => {
  await context?.close();
  await server?.stop();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

async function open(path) {
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e));
  // Optional model files (tokenizer_config.json, …) that a folder lacks answer 404, which the
  // browser logs; anything else on the console is an error.
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 404/.test(m.text())) errors.push(m.text());
  });
  const started = Date.now();
  const response = await page.goto(`${server.url}/${path}`);
  assert.equal(response.status(), 200);
  return { page, errors, started };
}

async function runPage(page) {
  await page.click('#run');
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 120_000 });
  assert.equal(await page.textContent('#error'), '', 'the page shows an error');
}

const sha256 = (bytes) => createHash('sha256').update(bytes).digest('hex');

test('served and packaged amphi.wasm are byte-identical; pages are cross-origin isolated', async () => {
  const packaged = readFileSync(createRequire(import.meta.url).resolve('amphi/amphi.wasm'));
  const served = Buffer.from(await (await fetch(`${server.url}/amphi.wasm`)).arrayBuffer());
  const page = await fetch(`${server.url}/pkg/amphi/dist/amphi.wasm`);
  assert.equal(page.headers.get('content-type'), 'application/wasm');
  const inPlayground = Buffer.from(await page.arrayBuffer());
  const want = sha256(readFileSync(artifact));
  assert.equal(sha256(packaged), want, 'npm package');
  assert.equal(sha256(served), want, 'GET /amphi.wasm (what the serverless host runs)');
  assert.equal(sha256(inPlayground), want, 'the playground\'s copy');

  const { page: index, errors } = await open('index.html');
  assert.equal(await index.evaluate(() => globalThis.crossOriginIsolated), true);
  await index.waitForFunction(() => !document.getElementById('webgpu').textContent.includes('checking'));
  await index.screenshot({ path: join(screenshots, 'index.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await index.close();
});

test('feature-extraction page: the similarity matrix matches the golden embeddings (Web Worker)', async () => {
  const g = golden('minilm-hello-world.json').cases.find((c) => c.name === 'batch_padded');
  const { page, errors, started } = await open('feature-extraction.html?device=cpu');
  await page.fill('#inputs', g.texts.join('\n'));
  await page.fill('#query', 'a fast animal');
  await runPage(page);
  console.log(`chromium feature-extraction (worker, all-MiniLM-L6-v2): page open to first result ${Date.now() - started} ms; `
    + `load ${await page.textContent('#load-ms')} ms, inference ${await page.textContent('#run-ms')} ms`);
  assert.match(await page.textContent('#device-used'), /CPU/);
  assert.equal(await page.textContent('#thread-used'), 'Web Worker');

  // Cosine of the golden (normalised) embeddings. Each component is within 1e-5 of the
  // reference, so the cosine is within 1e-4.
  const [a, b] = [0, 1].map((i) => g.embedding.data.slice(i * 384, (i + 1) * 384));
  const want = a.reduce((s, x, i) => s + x * b[i], 0);
  const cell = async (i, j) => Number(await page.getAttribute(`td[data-i="${i}"][data-j="${j}"]`, 'data-value'));
  assert.ok(Math.abs((await cell(0, 1)) - want) <= 1e-4, `${await cell(0, 1)} vs ${want}`);
  assert.ok(Math.abs((await cell(1, 0)) - want) <= 1e-4);
  assert.ok(Math.abs((await cell(0, 0)) - 1) <= 1e-5);
  const ranked = await page.$$eval('#search li', (li) => li.map((l) => l.textContent));
  assert.match(ranked[0], /quick brown fox/);
  await page.screenshot({ path: join(screenshots, 'feature-extraction.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test('feature-extraction page on WebGPU: the same matrix, the device shown', async () => {
  const g = golden('minilm-hello-world.json').cases.find((c) => c.name === 'batch_padded');
  const { page, errors } = await open('feature-extraction.html?device=webgpu&worker=0');
  await page.fill('#inputs', g.texts.join('\n'));
  await runPage(page);
  assert.match(await page.textContent('#device-used'), /WebGPU/);
  const [a, b] = [0, 1].map((i) => g.embedding.data.slice(i * 384, (i + 1) * 384));
  const want = a.reduce((s, x, i) => s + x * b[i], 0);
  const got = Number(await page.getAttribute('td[data-i="0"][data-j="1"]', 'data-value'));
  assert.ok(Math.abs(got - want) <= 1e-4, `${got} vs ${want}`);
  console.log(`chromium feature-extraction on WebGPU (SwiftShader): load ${await page.textContent('#load-ms')} ms, inference ${await page.textContent('#run-ms')} ms`);
  await page.screenshot({ path: join(screenshots, 'feature-extraction-webgpu.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test('text-classification page: every label and probability matches the golden (main thread)', async () => {
  const cases = golden('tiny-bert-seqcls.json').cases.filter((c) => !c.text_pairs && c.texts.length === 1 && c.texts[0].trim() === c.texts[0] && c.texts[0]);
  const { page, errors } = await open('text-classification.html?device=cpu&worker=0');
  await page.fill('#inputs', cases.map((c) => c.texts[0]).join('\n'));
  await runPage(page);
  assert.equal(await page.textContent('#thread-used'), 'main thread');
  for (const [i, c] of cases.entries()) {
    const shown = await page.$$eval(`.result[data-index="${i}"] .labels`, ([el]) => {
      const labels = [...el.querySelectorAll('.label')].map((l) => l.dataset.label);
      const scores = [...el.querySelectorAll('.score')].map((s) => Number(s.dataset.score));
      return labels.map((label, k) => ({ label, score: scores[k] }));
    });
    const want = c.outputs.pipeline_all_labels[0];
    assert.deepEqual(shown.map((l) => l.label), want.map((l) => l.label), c.name);
    shown.forEach((l, k) => assert.ok(Math.abs(l.score - want[k].score) <= checks.TOL_PROB, `${c.name}: ${l.score} vs ${want[k].score}`));
  }
  await page.screenshot({ path: join(screenshots, 'text-classification.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test('token-classification page: grouped entities match the golden and are highlighted', async () => {
  const c = golden('tiny-bert-tokcls.json').cases.find((x) => x.name === 'sentence');
  const { page, errors } = await open('token-classification.html?device=cpu&worker=0');
  await page.fill('#inputs', c.texts[0]);
  await runPage(page);
  const shown = await page.$$eval('#entities tr', (rows) => rows.map((r) => JSON.parse(r.dataset.entity)));
  const want = c.outputs.pipeline_aggregation_simple[0];
  assert.equal(shown.length, want.length);
  shown.forEach((e, i) => {
    const { score, ...rest } = want[i];
    assert.deepEqual({ ...e, score: undefined }, { ...rest, score: undefined });
    assert.ok(Math.abs(e.score - score) <= checks.TOL_PROB);
  });
  const marks = await page.$$eval('#highlighted mark', (m) => m.map((x) => x.firstChild.textContent));
  assert.deepEqual(marks, want.map((e) => c.texts[0].slice(e.start, e.end)));
  await page.screenshot({ path: join(screenshots, 'token-classification.png'), fullPage: true });
  assert.deepEqual(errors, []);
  await page.close();
});

test('image-classification page: a dropped photo gets the golden top 5 with bars; examples; ImageBitmap and canvas inputs', async () => {
  const g = golden('efficientnet-lite0-coffee.json').cases[0];
  const { page, errors } = await open('image-classification.html?device=cpu&worker=1');
  // Drop coffee.png on the page, as a visitor dragging a file from their desktop would.
  const b64 = readFileSync(join(fixtures, g.image)).toString('base64');
  const dataTransfer = await page.evaluateHandle((b64) => {
    const dt = new DataTransfer();
    const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
    dt.items.add(new File([bytes], 'coffee.png', { type: 'image/png' }));
    return dt;
  }, b64);
  await page.dispatchEvent('#drop', 'drop', { dataTransfer });
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 120_000 });
  assert.equal(await page.textContent('#error'), '', 'the page shows an error');
  const labels = await page.$$eval('#results .label', (els) => els.map((e) => e.dataset.label));
  const scores = await page.$$eval('#results .score', (els) => els.map((e) => Number(e.dataset.score)));
  assert.deepEqual(labels, g.top5.map((t) => t.label), 'top 5 in the golden order');
  scores.forEach((s, k) => assert.ok(Math.abs(s - g.top5[k].probability) <= 1e-4, `${labels[k]}: ${s} vs ${g.top5[k].probability}`));
  assert.equal(await page.textContent('#device-used'), 'CPU (wasm SIMD)');
  assert.ok(Number(await page.textContent('#run-ms')) > 0, 'inference time shown');
  assert.equal(await page.$$eval('#results .bar', (b) => b.length), 5, 'five bars');
  await page.screenshot({ path: join(screenshots, 'image-classification.png'), fullPage: true });

  // An example image: a click classifies it (chelsea is a tabby cat).
  await page.evaluate(() => { document.body.dataset.state = 'idle'; });
  await page.click('#examples button[data-src$="chelsea.png"]');
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 120_000 });
  const top = await page.$eval('#results .label', (e) => e.dataset.label);
  assert.match(top, /cat/, `chelsea.png: ${top}`);

  // The browser's own image objects: pixels drawn once, no re-encoding. Chromium decodes
  // (and colour-manages) the PNG itself, so only the top label is compared.
  const viaBrowser = await page.evaluate(async (b64) => {
    const { pipeline } = await import('amphi');
    const p = await pipeline('image-classification', '/models/efficientnet-lite0/', { device: 'cpu' });
    const blob = new Blob([Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0))], { type: 'image/png' });
    const bitmap = await createImageBitmap(blob);
    const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
    canvas.getContext('2d').drawImage(bitmap, 0, 0);
    const out = [(await p(bitmap, { top_k: 1 }))[0], (await p(canvas, { top_k: 1 }))[0]];
    await p.dispose();
    return out;
  }, b64);
  for (const r of viaBrowser) assert.equal(r.label, 'espresso', JSON.stringify(viaBrowser));
  assert.deepEqual(errors, []);
  await page.close();
});

/** Runs the golden bodies inside a page: pipelines are created there with `import('amphi')`. */
/** Image descriptors of ./support/checks.mjs: files travel as base64 (a Blob in the page). */
function toPage(d) {
  if (Array.isArray(d)) return d.map(toPage);
  return d.file ? { b64: readFileSync(join(fixtures, d.file)).toString('base64') } : d;
}

function pageRunner(page, worker, device = 'cpu') {
  const run = (task, model, inputs, parameters) => page.evaluate(async ([task, model, inputs, parameters, worker, device]) => {
    const { pipeline } = await import('amphi');
    globalThis.pipes ??= {};
    const key = `${task}/${model}/${device}/${worker}`;
    globalThis.pipes[key] ??= pipeline(task, `/models/${model}/`, { device, worker });
    const p = await globalThis.pipes[key];
    if (p.device !== (device === 'cpu' ? 'cpu' : 'gpu')) throw new Error(`${key} runs on ${p.device}`);
    // Files as Blobs, raw pixels as ImageData: the browser's own input types.
    const image = (d) => {
      if (Array.isArray(d)) return d.map(image);
      if (d.b64) return new Blob([Uint8Array.from(atob(d.b64), (ch) => ch.charCodeAt(0))], { type: 'image/png' });
      const data = new Uint8ClampedArray(d.width * d.height * 4);
      for (let i = 0; i < d.width * d.height; i++) {
        data.set(d.rgb.slice(3 * i, 3 * i + 3), 4 * i);
        data[4 * i + 3] = 255;
      }
      return new ImageData(data, d.width, d.height);
    };
    return p(task === 'image-classification' ? image(inputs) : inputs, parameters);
  }, [task, model, task === 'image-classification' ? toPage(inputs) : inputs, parameters, worker, device]);
  // `pipe.stream` inside the page: the chunks as they arrived, and the code that ended it.
  run.stream = (task, model, inputs, parameters) => page.evaluate(async ([task, model, inputs, parameters, worker, device]) => {
    const { pipeline } = await import('amphi');
    globalThis.pipes ??= {};
    const key = `${task}/${model}/${device}/${worker}`;
    globalThis.pipes[key] ??= pipeline(task, `/models/${model}/`, { device, worker });
    const p = await globalThis.pipes[key];
    const chunks = [];
    try {
      for await (const chunk of p.stream(inputs, parameters)) chunks.push(chunk);
      return { chunks };
    } catch (e) {
      return { chunks, error: e.code ?? String(e) };
    }
  }, [task, model, inputs, parameters, worker, device]);
  return run;
}

test('chat page: SmolLM2-135M-Instruct from its GGUF file streams Transformers\' reply in a Worker; Stop aborts', async () => {
  const { page, errors } = await open('chat.html?device=cpu&worker=1');
  // Every text the reply shows while it streams: more than one means it came in pieces.
  await page.evaluate(() => {
    globalThis.seen = [];
    new MutationObserver(() => {
      const el = document.querySelector('.message.assistant.streaming');
      if (el && globalThis.seen.at(-1) !== el.textContent) globalThis.seen.push(el.textContent);
    }).observe(document.getElementById('conversation'), { childList: true, subtree: true, characterData: true });
  });
  await page.fill('#prompt', 'What is the capital of France?');
  await page.fill('#max-new-tokens', '20');
  await page.click('#run');
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 300_000 });
  assert.equal(await page.textContent('#error'), '', 'the page shows an error');
  // Transformers 5.24 on the same file, greedy, default system prompt (fixtures REGISTRY.md):
  // "The capital of France is Paris.<|im_end|>" — 8 tokens, the last one end-of-sequence.
  const messages = await page.$$eval('.message', (els) => els.map((e) => [e.dataset.role, e.textContent]));
  assert.deepEqual(messages, [['user', 'What is the capital of France?'], ['assistant', 'The capital of France is Paris.']]);
  assert.equal(await page.evaluate(() => document.body.dataset.finish), 'stop');
  assert.equal(await page.evaluate(() => document.body.dataset.tokens), '8');
  const seen = await page.evaluate(() => globalThis.seen);
  assert.ok(seen.length >= 3, `the reply streamed in pieces: ${JSON.stringify(seen)}`);
  assert.equal(await page.textContent('#device-used'), 'CPU (wasm SIMD)');
  assert.equal(await page.textContent('#thread-used'), 'Web Worker');
  assert.ok(Number(await page.textContent('#tokens-per-second')) > 0, 'tokens per second shown');
  assert.ok(Number(await page.textContent('#ttft-ms')) > 0, 'time to first token shown');
  await page.screenshot({ path: join(screenshots, 'chat.png'), fullPage: true });

  // A second turn, stopped after its first piece: the reply so far stays, marked aborted.
  await page.evaluate(() => { document.body.dataset.state = 'idle'; });
  await page.fill('#prompt', 'Tell me a long story about a dragon.');
  await page.fill('#max-new-tokens', '400');
  await page.click('#run');
  await page.waitForSelector('.message.assistant.streaming:not(:empty)', { timeout: 120_000 });
  await page.click('#stop');
  await page.waitForSelector('body[data-state="done"], body[data-state="error"]', { timeout: 120_000 });
  assert.equal(await page.textContent('#error'), '');
  assert.equal(await page.evaluate(() => document.body.dataset.finish), 'aborted');
  const tokens = Number(await page.evaluate(() => document.body.dataset.tokens));
  assert.ok(tokens >= 1 && tokens < 400, `stopped after ${tokens} tokens`);
  assert.equal(await page.$$eval('.message', (els) => els.length), 4, 'two turns shown');
  assert.deepEqual(errors, []);
  await page.close();
});

test('goldens inside Chromium: tiny models on the main thread, all-MiniLM-L6-v2 and text generation in a Web Worker', async () => {
  const { page, errors } = await open('index.html');
  const main = pageRunner(page, false);
  await checks.tinyBertHiddenStates(main, golden('tiny-bert.json'));
  await checks.tinySeqcls(main, golden('tiny-bert-seqcls.json'));
  await checks.tinyRobertaSeqcls(main, golden('tiny-roberta-seqcls.json'));
  await checks.tinyXlmr(main, golden('tiny-xlmr.json'));
  await checks.streaming(main, golden('tiny-xlmr.json'));
  await checks.textGeneration(main, golden('tiny-llama.json'), 'tiny-llama');
  await checks.tinyTokcls(main, golden('tiny-bert-tokcls.json'));
  await checks.tinyVit(main, golden('tiny-vit.json'));
  const inWorker = pageRunner(page, true);
  await checks.streaming(inWorker, golden('tiny-xlmr.json'));
  await checks.textGeneration(inWorker, golden('tiny-llama.json'), 'tiny-llama');
  await checks.minilm(inWorker, golden('minilm-hello-world.json'));
  await checks.efficientnet(inWorker, golden('efficientnet-lite0-coffee.json'));
  const where = await page.evaluate(async () => {
    const p = await globalThis.pipes['feature-extraction/all-MiniLM-L6-v2/cpu/true'];
    return { worker: p.worker instanceof Worker, device: p.device };
  });
  assert.deepEqual(where, { worker: true, device: 'cpu' });
  assert.deepEqual(errors, []);
  await page.close();
});

test('WebGPU (SwiftShader): every golden through the WGSL kernels, on the main thread and in a Web Worker', async () => {
  const { page, errors } = await open('index.html');
  const adapter = await page.evaluate(async () => Boolean(await navigator.gpu?.requestAdapter()));
  assert.ok(adapter, 'Chromium has no WebGPU adapter (needs --enable-unsafe-webgpu; SwiftShader)');
  const main = pageRunner(page, false, 'webgpu');
  await checks.tinyBertHiddenStates(main, golden('tiny-bert.json'));
  await checks.tinySeqcls(main, golden('tiny-bert-seqcls.json'));
  await checks.tinyRobertaSeqcls(main, golden('tiny-roberta-seqcls.json'));
  await checks.tinyXlmr(main, golden('tiny-xlmr.json'));
  await checks.streaming(main, golden('tiny-xlmr.json'));
  await checks.textGeneration(main, golden('tiny-llama.json'), 'tiny-llama');
  await checks.tinyTokcls(main, golden('tiny-bert-tokcls.json'));
  await checks.tinyVit(main, golden('tiny-vit.json'));
  await checks.streaming(pageRunner(page, true, 'webgpu'), golden('tiny-xlmr.json'));
  await checks.textGeneration(pageRunner(page, true, 'webgpu'), golden('tiny-llama.json'), 'tiny-llama');
  await checks.minilm(pageRunner(page, true, 'webgpu'), golden('minilm-hello-world.json'));
  await checks.efficientnet(pageRunner(page, true, 'webgpu'), golden('efficientnet-lite0-coffee.json'));
  const info = await page.evaluate(async () => (await globalThis.pipes['feature-extraction/all-MiniLM-L6-v2/webgpu/true']).info);
  assert.equal(info.device, 'gpu');
  console.log(`chromium WebGPU adapter: ${info.adapter}`);
  assert.deepEqual(errors, []);
  await page.close();
});

test('browser errors carry codes; dispose; the Cache API serves models offline', async () => {
  const { page } = await open('index.html');
  const codes = await page.evaluate(async () => {
    const { pipeline } = await import('amphi');
    const code = (p) => p.then(() => 'resolved', (e) => `${e.name}:${e.code}`);
    const p = await pipeline('text-classification', '/models/tiny-bert-seqcls/');
    await p.dispose();
    return {
      missing: await code(pipeline('feature-extraction', '/models/no-such-model/')),
      task: await code(pipeline('text-classification', '/models/tiny-bert/')),
      empty: await code(pipeline('feature-extraction', '/models/tiny-bert/').then((x) => x([]))),
      disposed: await code(p('x')),
      worker: await code(pipeline('feature-extraction', '/models/no-such-model/', { worker: true })),
    };
  });
  assert.deepEqual(codes, {
    missing: 'AmphiError:model_not_found',
    task: 'AmphiError:unsupported_task',
    empty: 'AmphiError:invalid_input',
    disposed: 'AmphiError:disposed',
    worker: 'AmphiError:model_not_found',
  });

  // Every model file was cached by the loads above; cut the network and load again.
  await page.route('**/models/**', (route) => route.abort('internetdisconnected'));
  await context.setOffline(true);
  const offline = await page.evaluate(async () => {
    const { pipeline } = await import('amphi');
    const events = [];
    const p = await pipeline('text-classification', '/models/tiny-bert-seqcls/', { progress: (e) => events.push(e) });
    const out = await p('offline');
    await p.dispose();
    return { cached: events.filter((e) => e.status === 'done').map((e) => e.cached), labels: out.length };
  });
  await context.setOffline(false);
  assert.ok(offline.cached.length >= 3 && offline.cached.every(Boolean), JSON.stringify(offline));
  assert.equal(offline.labels, 1);
  await page.close();
});
