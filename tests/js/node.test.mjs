// The packed npm package under Node, as a user installs it (`cargo xtask test` installs
// target/npm/amphi-*.tgz into tests/js/node_modules): goldens, errors, dispose, hub loading
// with progress and an offline cache, and recovery from a trap.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  readFileSync, mkdtempSync, mkdirSync, copyFileSync, writeFileSync, realpathSync, readdirSync, statSync,
} from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createRequire } from 'node:module';

import { pipeline, env, AmphiError, artifactPath, engineMemoryBytes, __debug } from 'amphi';
import * as checks from './support/checks.mjs';
import { artifact, fixtures, golden, modelDir } from './support/paths.mjs';
import { startHub } from './support/hub.mjs';

const sha256 = (path) => createHash('sha256').update(readFileSync(path)).digest('hex');

test('the package resolves from node_modules and holds amphi.wasm byte for byte', () => {
  const resolved = realpathSync(createRequire(import.meta.url).resolve('amphi/amphi.wasm'));
  assert.match(resolved, /node_modules\/amphi\/dist\/amphi\.wasm$/);
  assert.equal(realpathSync(artifactPath), resolved);
  assert.equal(sha256(resolved), sha256(artifact), 'npm package amphi.wasm != target/amphi.wasm');
});

/**
 * An image descriptor of ./support/checks.mjs as Node inputs: a file as its path, or as a
 * Uint8Array (alternately, so both paths run); raw pixels as an ImageData-like object.
 */
let flip = false;
function nodeImage(d) {
  if (Array.isArray(d)) return d.map(nodeImage);
  if (d.file) {
    flip = !flip;
    return flip ? join(fixtures, d.file) : new Uint8Array(readFileSync(join(fixtures, d.file)));
  }
  const data = new Uint8ClampedArray(d.width * d.height * 4);
  for (let i = 0; i < d.width * d.height; i++) {
    data.set(d.rgb.slice(3 * i, 3 * i + 3), 4 * i);
    data[4 * i + 3] = 255;
  }
  return { data, width: d.width, height: d.height };
}

/** One pipeline per (task, model), loaded from the fixture folders. */
function nodeRunner() {
  const loaded = new Map();
  const get = (task, model) => {
    const key = `${task}/${model}`;
    if (!loaded.has(key)) loaded.set(key, pipeline(task, modelDir(model), { device: 'cpu' }));
    return loaded.get(key);
  };
  const run = async (task, model, inputs, parameters) => {
    const input = task === 'image-classification' ? nodeImage(inputs) : inputs;
    return (await get(task, model))(input, parameters);
  };
  run.stream = async (task, model, inputs, parameters) => checks.collect(await get(task, model), inputs, parameters);
  run.dispose = async () => Promise.all([...loaded.values()].map(async (p) => (await p).dispose()));
  return run;
}

test('goldens: tiny models and all-MiniLM-L6-v2 within the fixtures tolerances', async () => {
  const run = nodeRunner();
  await checks.tinyBertHiddenStates(run, golden('tiny-bert.json'));
  await checks.tinySeqcls(run, golden('tiny-bert-seqcls.json'));
  await checks.tinyRobertaSeqcls(run, golden('tiny-roberta-seqcls.json'));
  await checks.tinyXlmr(run, golden('tiny-xlmr.json'));
  await checks.tinyTokcls(run, golden('tiny-bert-tokcls.json'));
  await checks.streaming(run, golden('tiny-xlmr.json'));
  await checks.minilm(run, golden('minilm-hello-world.json'));
  await run.dispose();
});

test('text-generation: greedy goldens whole and streamed, chat, AbortSignal, a break frees the request', async () => {
  const run = nodeRunner();
  await checks.textGeneration(run, golden('tiny-llama.json'), 'tiny-llama');
  await checks.textGeneration(run, golden('tiny-gemma3.json'), 'tiny-gemma3');
  await run.dispose();

  const qwen = await pipeline('text-generation', modelDir('tiny-qwen2'), { device: 'cpu' });
  assert.equal(qwen.info.chat_template, true);
  const messages = golden('tiny-qwen2.json').chat_template_case.messages;
  const [chat] = await qwen(messages, { max_new_tokens: 4 });
  assert.deepEqual(chat.generated_text.slice(0, -1), messages);
  assert.equal(chat.generated_text.at(-1).role, 'assistant');
  assert.ok(qwen.lastRun.tokens > 4, `${qwen.lastRun.tokens} tokens`);

  // An aborted signal stops the call between two tokens; the pipeline keeps serving.
  const controller = new AbortController();
  const long = { max_new_tokens: 200, do_sample: true, seed: 3, stop_token_ids: [] };
  let seen = 0;
  await assert.rejects(async () => {
    for await (const _ of qwen.stream('Once upon a time', { ...long, signal: controller.signal })) {
      if (++seen === 3) controller.abort();
    }
  }, (e) => e.code === 'aborted');
  assert.equal(seen, 3);
  await assert.rejects(qwen('x', { signal: AbortSignal.abort() }), (e) => e.code === 'aborted');
  const timed = AbortSignal.timeout(1);
  await new Promise((r) => setTimeout(r, 5));
  await assert.rejects(qwen('x', { ...long, signal: timed }), (e) => e.code === 'aborted');
  // A break frees the session: memory is reused.
  const firstOnly = async () => {
    for await (const _ of qwen.stream('hello', long)) break;
  };
  for (let i = 0; i < 3; i++) await firstOnly();
  const warm = await engineMemoryBytes();
  for (let i = 0; i < 20; i++) await firstOnly();
  assert.equal(await engineMemoryBytes(), warm, 'engine memory grew');
  const [again] = await qwen('hello', { max_new_tokens: 2 });
  assert.equal(again.finish_reason, 'length');
  await assert.rejects(qwen('x', { temperature: -1 }), (e) => e.code === 'invalid_input');
  await qwen.dispose();
});

test('a GGUF file by its path: SmolLM2-135M-Instruct gives Transformers\' greedy tokens', async () => {
  // Transformers 5.24 on the same file (fixtures REGISTRY.md): " Paris.\n\nThe answer is: 2".
  const dir = modelDir('SmolLM2-135M-Instruct');
  const gen = await pipeline('text-generation', join(dir, 'SmolLM2-135M-Instruct.Q4_1.gguf'), { device: 'cpu' });
  const options = { max_new_tokens: 10, do_sample: false, return_full_text: false };
  const ids = [];
  for await (const { output } of gen.stream('The capital of France is', options)) ids.push(...output.token_ids);
  assert.deepEqual(ids, [7042, 30, 198, 198, 504, 2988, 314, 42, 216, 34]);
  const [out] = await gen('The capital of France is', options);
  assert.equal(out.generated_text, ' Paris.\n\nThe answer is: 2');
  await gen.dispose();
  // The folder that holds it reads the same (its one *.gguf is model.gguf); a folder with
  // neither config.json nor a GGUF file is model_not_found.
  const folder = await pipeline('text-generation', dir, { device: 'cpu' });
  const [chat] = await folder([{ role: 'user', content: 'What is the capital of France?' }], { max_new_tokens: 20, do_sample: false });
  assert.equal(chat.generated_text.at(-1).content, 'The capital of France is Paris.');
  assert.equal(chat.finish_reason, 'stop');
  await folder.dispose();
  const empty = mkdtempSync(join(tmpdir(), 'amphi-empty-'));
  await assert.rejects(pipeline('text-generation', empty), (e) => e.code === 'model_not_found');
});

test('stream: a break after the first chunk frees the request (memory is reused)', async () => {
  const p = await pipeline('feature-extraction', modelDir('tiny-xlmr'), { device: 'cpu' });
  const texts = Array.from({ length: 32 }, (_, i) => `sentence number ${i} of many`);
  const firstOnly = async () => {
    for await (const chunk of p.stream(texts)) {
      assert.equal(chunk.index, 0);
      break;
    }
  };
  for (let i = 0; i < 3; i++) await firstOnly();
  const warm = await engineMemoryBytes();
  for (let i = 0; i < 30; i++) await firstOnly();
  assert.equal(await engineMemoryBytes(), warm, 'engine memory grew');
  assert.equal((await p(['hello world'])).length, 1, 'the pipeline keeps serving');
  await p.dispose();
  await assert.rejects(async () => {
    for await (const _ of p.stream(['x'])) { /* nothing */ }
  }, (e) => e.code === 'disposed');
});

test('image classification: tiny-vit and EfficientNet-Lite0 within the fixtures tolerances', async () => {
  const run = nodeRunner();
  await checks.tinyVit(run, golden('tiny-vit.json'));
  await checks.efficientnet(run, golden('efficientnet-lite0-coffee.json'));
  await run.dispose();
});

test('bad images give typed errors; the pixel limit is configurable', async () => {
  const vit = await pipeline('image-classification', join(fixtures, 'models/tiny-vit'), { device: 'cpu', maxImagePixels: 10_000 });
  const png = new Uint8Array(readFileSync(join(fixtures, 'images/chelsea.png')));
  const code = (p) => p.then(() => 'ok', (e) => (e instanceof AmphiError ? e.code : `not an AmphiError: ${e}`));
  assert.equal(await code(vit(new Uint8Array([1, 2, 3]))), 'invalid_image');
  assert.equal(await code(vit(png.slice(0, 1000))), 'invalid_image');
  assert.equal(await code(vit(new Uint8Array())), 'invalid_image');
  assert.equal(await code(vit(png)), 'input_too_large', '451×300 is over 10 000 pixels');
  assert.equal(await code(vit({ data: new Uint8ClampedArray(12), width: 2, height: 2 })), 'invalid_input');
  assert.equal(await code(vit({ data: new Uint8ClampedArray(0), width: 0, height: 0 })), 'invalid_image');
  assert.equal(await code(vit(42)), 'invalid_input');
  assert.equal(await code(vit('/nonexistent.png')), 'invalid_input');
  const small = { data: new Uint8ClampedArray(64 * 64 * 4).fill(128), width: 64, height: 64 };
  assert.equal((await vit(small)).length, 3, 'still runs after bad images');
  await vit.dispose();
});

test('bad input gives an AmphiError with a stable code', async () => {
  const rejects = (promise, code) => assert.rejects(promise, (e) => {
    assert.ok(e instanceof AmphiError, `${e} is not an AmphiError`);
    assert.equal(e.code, code, e.message);
    return true;
  });
  const tiny = modelDir('tiny-bert');
  await rejects(pipeline('summarization', tiny), 'unsupported_task');
  await rejects(pipeline('text-classification', tiny), 'unsupported_task');
  await rejects(pipeline('feature-extraction', join(fixtures, 'models/tiny-vit')), 'unsupported_task');
  await rejects(pipeline('image-classification', tiny), 'unsupported_task');
  await rejects(pipeline('feature-extraction', '/nonexistent/model'), 'model_not_found');
  await rejects(pipeline('feature-extraction', 'not a model id!'), 'invalid_input');
  await rejects(pipeline('feature-extraction', tiny, { device: 'tpu' }), 'invalid_input');
  await rejects(pipeline('feature-extraction', tiny, { device: 'webgpu' }), 'device_unavailable');
  await rejects(pipeline('feature-extraction', tiny, { dtype: 'q4' }), 'invalid_input');

  // Corrupt weights: the safetensors file cut in half.
  const broken = mkdtempSync(join(tmpdir(), 'amphi-broken-'));
  for (const f of ['config.json', 'tokenizer.json']) copyFileSync(join(tiny, f), join(broken, f));
  const weights = readFileSync(join(tiny, 'model.safetensors'));
  writeFileSync(join(broken, 'model.safetensors'), weights.subarray(0, weights.length >> 1));
  await rejects(pipeline('feature-extraction', broken), 'invalid_weights');

  // fp16 applies to GPU weights only: on the CPU the model loads (and says it runs) in f32.
  const fp16 = await pipeline('feature-extraction', tiny, { dtype: 'fp16' });
  assert.equal(fp16.info.precision, 'f32');
  await fp16.dispose();

  const extractor = await pipeline('feature-extraction', tiny);
  await rejects(extractor([]), 'invalid_input');
  await rejects(extractor('x', { top_k: 2 }), 'invalid_input');
  await rejects(extractor('x', { pooling: 'max' }), 'invalid_input');
  await rejects(extractor(42), 'invalid_input');
  await rejects(extractor('word '.repeat(300_000)), 'input_too_large');
  // The engine is still fine after all that.
  assert.equal((await extractor('still works')).length, 1);
  await extractor.dispose();
});

test('dispose frees the model: later calls fail, memory is reused', async () => {
  const seqcls = modelDir('tiny-bert-seqcls');
  const first = await pipeline('text-classification', seqcls);
  await first('warm up');
  await first.dispose();
  assert.equal(first.disposed, true);
  await assert.rejects(first('x'), { code: 'disposed' });
  await first.dispose(); // twice is fine

  const before = await engineMemoryBytes();
  for (let i = 0; i < 8; i++) {
    const p = await pipeline('text-classification', seqcls);
    await p(['a batch', 'of two']);
    await p.dispose();
  }
  const after = await engineMemoryBytes();
  assert.ok(after <= before + (1 << 20), `engine memory grew from ${before} to ${after} bytes over 8 load/dispose cycles`);
});

test('hub ids and URLs: progress, sha256 check, a cache that works offline', async () => {
  env.cacheDir = mkdtempSync(join(tmpdir(), 'amphi-cache-'));
  const hub = await startHub(
    { 'amphi-test/tiny-seqcls': modelDir('tiny-bert-seqcls'), 'amphi-test/bad-sha': modelDir('tiny-bert-seqcls') },
    { corrupt: ['amphi-test/bad-sha'] },
  );
  try {
    const events = [];
    const p = await pipeline('text-classification', 'amphi-test/tiny-seqcls', {
      endpoint: hub.url,
      progress: (e) => events.push(e),
    });
    const statuses = new Set(events.map((e) => e.status));
    for (const s of ['initiate', 'progress', 'done', 'ready']) assert.ok(statuses.has(s), `no ${s} event`);
    const last = events.filter((e) => e.file === 'model.safetensors' && e.status === 'progress').at(-1);
    assert.equal(last.loaded, last.total);
    assert.equal(last.progress, 100);
    const want = golden('tiny-bert-seqcls.json').cases.find((c) => c.name === 'sentence');
    const got = await p(want.texts, { top_k: null });
    assert.equal(got[0][0].label, want.outputs.pipeline_all_labels[0][0].label);
    await p.dispose();
    // The cache follows the serverless host's layout.
    const cached = join(env.cacheDir, 'hub/amphi-test--tiny-seqcls/main');
    assert.equal(sha256(join(cached, 'model.safetensors')), sha256(join(modelDir('tiny-bert-seqcls'), 'model.safetensors')));

    // The same model by URL, and errors.
    const byUrl = await pipeline('text-classification', `${hub.url}/amphi-test/tiny-seqcls/resolve/main/`, { cache: false });
    await byUrl.dispose();
    await assert.rejects(pipeline('text-classification', 'amphi-test/missing', { endpoint: hub.url }), { code: 'model_not_found' });
    await assert.rejects(pipeline('text-classification', 'amphi-test/bad-sha', { endpoint: hub.url }), { code: 'download_failed' });
  } finally {
    await hub.close();
  }
  // Offline: the hub is gone; the cache serves the model.
  const events = [];
  const offline = await pipeline('text-classification', 'amphi-test/tiny-seqcls', { endpoint: hub.url, progress: (e) => events.push(e) });
  assert.ok(events.filter((e) => e.status === 'done').every((e) => e.cached));
  assert.equal((await offline('still here')).length, 1);
  await offline.dispose();
  await assert.rejects(pipeline('text-classification', 'amphi-test/other', { endpoint: hub.url }), { code: 'download_failed' });
  delete env.cacheDir;
});

test('hub downloads: a revision never climbs out of the cache; files without a checksum are refused unless allowed', async () => {
  const root = mkdtempSync(join(tmpdir(), 'amphi-revision-'));
  env.cacheDir = join(root, 'cache');
  const hub = await startHub(
    { 'amphi-test/tiny-seqcls': modelDir('tiny-bert-seqcls'), 'amphi-test/plain': modelDir('tiny-bert-seqcls') },
    { unverified: ['amphi-test/plain'] },
  );
  try {
    // Before the fix this downloaded into {cacheDir}/../../escaped (after an `rm -rf` of it).
    for (const revision of ['../../escaped', '..', 'a/../../../escaped', 'a\\b', 'x\0y']) {
      await assert.rejects(
        pipeline('text-classification', 'amphi-test/tiny-seqcls', { endpoint: hub.url, revision }),
        { code: 'invalid_input' },
        revision,
      );
    }
    assert.deepEqual(readdirSync(root), [], 'something was written');
    assert.equal(hub.requests.length, 0, 'an unsafe revision reached the hub');

    await assert.rejects(pipeline('text-classification', 'amphi-test/plain', { endpoint: hub.url }), { code: 'unverified_download' });
    const plain = await pipeline('text-classification', 'amphi-test/plain', { endpoint: hub.url, allowUnverified: true });
    await plain.dispose();
    await assert.rejects(
      pipeline('text-classification', 'amphi-test/tiny-seqcls', { endpoint: hub.url, cache: false, maxFileBytes: 1000 }),
      { code: 'download_too_large' },
    );
    const cached = join(env.cacheDir, 'hub/amphi-test--plain/main');
    assert.equal(statSync(cached).mode & 0o777, 0o700);
  } finally {
    await hub.close();
    delete env.cacheDir;
  }
});

test('a trap in the engine is an engine_crashed error; the pipeline recovers on its next call', async () => {
  const p = await pipeline('text-classification', modelDir('tiny-bert-seqcls'));
  const want = await p('recover me');
  await assert.rejects(__debug.panic(), { code: 'engine_crashed', message: /amphi_debug_panic called/ });
  assert.deepEqual(await p('recover me'), want);
  await p.dispose();
});
