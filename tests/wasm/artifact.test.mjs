// The artifact itself (target/amphi.wasm, the bytes the serverless host runs) under Node's V8:
// a second, independent host of the same ABI (docs/abi.md), written in plain JavaScript (CPU only). It
// checks the imports, reference parity on the goldens, typed errors, and recovery from a trap.
//
//   cargo xtask artifact && node --test tests/wasm/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, existsSync, statSync } from 'node:fs';
import { webcrypto, createHash } from 'node:crypto';
import { homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const wasmPath = process.env.AMPHI_WASM ?? join(root, 'target/amphi.wasm');
const fixtures = process.env.AMPHI_FIXTURES ?? join(root, '../shared/fixtures');
const cache = process.env.AMPHI_CACHE_DIR ?? join(homedir(), '.cache/amphi');
const minilm = process.env.AMPHI_MINILM_DIR ?? join(cache, 'models/all-MiniLM-L6-v2');
const FILES = ['config.json', 'model.safetensors', 'tokenizer.json', 'preprocessor_config.json', 'tokenizer_config.json',
  'special_tokens_map.json', 'modules.json', 'sentence_bert_config.json', '1_Pooling/config.json',
  'generation_config.json', 'chat_template.jinja'];

assert.ok(existsSync(wasmPath), `${wasmPath} missing: run \`cargo xtask artifact\` first`);
const bytes = readFileSync(wasmPath);
const module = await WebAssembly.compile(bytes);

/** The `amphi_gpu` imports of a host without a GPU (docs/abi.md): `info` says so. */
const noGpu = {
  info: () => -1,
  create_buffer: () => 0,
  write_buffer: () => -1,
  destroy_buffer: () => {},
  create_pipeline: () => 0,
  dispatch: () => -1,
  read_buffer: () => -1,
  last_error: () => 0,
};

/** A minimal host of ABI v4 (CPU only). */
class Amphi {
  static async create() {
    const self = new Amphi();
    self.logs = [];
    self.stop = false;
    const imports = {
      amphi_host: {
        random_fill: (ptr, len) => {
          webcrypto.getRandomValues(new Uint8Array(self.memory.buffer, ptr, len));
          return 0;
        },
        log: (level, ptr, len) => {
          self.logs.push([level, new TextDecoder().decode(new Uint8Array(self.memory.buffer, ptr, len))]);
        },
        interrupted: () => (self.stop ? 1 : 0),
      },
      amphi_gpu: noGpu,
    };
    self.instance = await WebAssembly.instantiate(module, imports);
    self.x = self.instance.exports;
    self.memory = self.x.memory;
    assert.equal(self.x.amphi_abi_version(), 5);
    return self;
  }

  put(data) {
    const buf = typeof data === 'string' ? new TextEncoder().encode(data) : data;
    const ptr = this.x.amphi_alloc(buf.length);
    if (buf.length) new Uint8Array(this.memory.buffer, ptr, buf.length).set(buf);
    return [ptr, buf.length];
  }

  result() {
    const ptr = this.x.amphi_result_ptr();
    const len = this.x.amphi_result_len();
    return new TextDecoder().decode(new Uint8Array(this.memory.buffer, ptr, len));
  }

  check(status) {
    if (status >= 0) return status;
    const { code, message } = JSON.parse(this.result());
    throw Object.assign(new Error(message), { code });
  }

  loadModel(dir, options = {}) {
    const files = this.x.amphi_files_new();
    for (const name of FILES) {
      const path = join(dir, name);
      if (existsSync(path) && statSync(path).isFile()) {
        this.check(this.x.amphi_files_add(files, ...this.put(name), ...this.put(readFileSync(path))));
      }
    }
    return this.check(this.x.amphi_model_load(files, ...this.put(JSON.stringify(options))));
  }

  /** Attaches bytes to the next run, which names them `{"blob": i}`. */
  attach(bytes) {
    return this.x.amphi_attach(...this.put(bytes));
  }

  run(model, task, request) {
    this.check(this.x.amphi_run(model, ...this.put(task), ...this.put(JSON.stringify(request))));
    return JSON.parse(this.result());
  }
}

const golden = (name) => JSON.parse(readFileSync(join(fixtures, 'golden', name), 'utf8'));
const maxAbsDiff = (a, b) => {
  assert.equal(a.length, b.length);
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i])), 0);
};

test('imports only amphi_host and amphi_gpu, exactly as documented', () => {
  const imports = WebAssembly.Module.imports(module);
  assert.deepEqual(imports.filter((i) => !['amphi_host', 'amphi_gpu'].includes(i.module)), []);
  assert.deepEqual(
    imports.filter((i) => i.module === 'amphi_host').map((i) => i.name).sort(),
    ['interrupted', 'log', 'random_fill'],
  );
  assert.deepEqual(
    imports.filter((i) => i.module === 'amphi_gpu').map((i) => i.name).sort(),
    Object.keys(noGpu).sort(),
  );
  console.log(`amphi.wasm sha256 ${createHash('sha256').update(bytes).digest('hex')}`);
});

test('all-MiniLM-L6-v2 embeddings match the reference (abs 1e-5)', async () => {
  const amphi = await Amphi.create();
  const model = amphi.loadModel(minilm);
  for (const c of golden('minilm-hello-world.json').cases) {
    const got = amphi.run(model, 'feature-extraction', { inputs: c.texts });
    const hidden = c.embedding.shape[1];
    got.forEach((v, b) => {
      const want = c.embedding.data.slice(b * hidden, (b + 1) * hidden);
      assert.ok(maxAbsDiff(v, want) <= 1e-5, `${c.name}[${b}]: ${maxAbsDiff(v, want)}`);
    });
  }
});

test('tiny-bert-seqcls labels and scores match the reference (abs 1e-5)', async () => {
  const amphi = await Amphi.create();
  const model = amphi.loadModel(join(fixtures, 'models/tiny-bert-seqcls'));
  for (const c of golden('tiny-bert-seqcls.json').cases) {
    const inputs = c.text_pairs
      ? c.texts.map((text, i) => ({ text, text_pair: c.text_pairs[i] }))
      : c.texts;
    const got = amphi.run(model, 'text-classification', { inputs, parameters: { top_k: null } });
    c.outputs.pipeline_all_labels.forEach((want, b) => {
      assert.deepEqual(got[b].map((l) => l.label), want.map((l) => l.label), c.name);
      assert.ok(maxAbsDiff(got[b].map((l) => l.score), want.map((l) => l.score)) <= 1e-5, c.name);
    });
  }
});

test('tiny-vit from a PNG, base64 in the JSON and attached: every probability within 1e-5 of the reference', async () => {
  const amphi = await Amphi.create();
  const model = amphi.loadModel(join(fixtures, 'models/tiny-vit'));
  const cases = golden('tiny-vit.json').cases.filter((c) => c.image);
  for (const [c, attached] of cases.flatMap((c) => [[c, false], [c, true]])) {
    const png = readFileSync(join(fixtures, c.image));
    const inputs = attached ? { blob: amphi.attach(png) } : png.toString('base64');
    const got = amphi.run(model, 'image-classification', { inputs, parameters: { top_k: null } });
    const want = c.pipeline.map((l) => l.label);
    assert.deepEqual(got.map((l) => l.label), want, c.name);
    got.forEach((l) => {
      const p = c.probabilities.data[Number(Object.entries(golden('tiny-vit.json').id2label).find(([, v]) => v === l.label)[0])];
      assert.ok(Math.abs(l.score - p) <= 1e-5, `${c.name} ${l.label}: ${l.score} vs ${p}`);
    });
  }
});

test('typed errors carry their code; a trap is survived by a fresh instance', async () => {
  const amphi = await Amphi.create();
  const model = amphi.loadModel(join(fixtures, 'models/tiny-bert'));
  assert.throws(() => amphi.run(model, 'feature-extraction', { inputs: [] }), { code: 'invalid_input' });
  assert.throws(() => amphi.run(model, 'text-classification', { inputs: 'x' }), { code: 'unsupported_task' });
  const vit = amphi.loadModel(join(fixtures, 'models/tiny-vit'));
  assert.throws(() => amphi.run(vit, 'feature-extraction', { inputs: 'x' }), { code: 'unsupported_task' });
  assert.throws(() => amphi.run(vit, 'image-classification', { inputs: 'bm90IGFuIGltYWdl' }), { code: 'invalid_image' });

  assert.throws(() => amphi.x.amphi_debug_panic(), WebAssembly.RuntimeError);
  assert.ok(amphi.logs.some(([level, m]) => level === 0 && m.includes('amphi_debug_panic called')));
  const fresh = await Amphi.create();
  const again = fresh.loadModel(join(fixtures, 'models/tiny-bert'));
  assert.equal(fresh.run(again, 'feature-extraction', { inputs: ['ok'] }).length, 1);
});

test('a host that says stop gets `interrupted`, and the instance serves the next call unchanged', async () => {
  const amphi = await Amphi.create();
  const model = amphi.loadModel(join(fixtures, 'models/tiny-bert'));
  const request = { inputs: ['a sentence long enough for several ops'] };
  const before = amphi.run(model, 'feature-extraction', request);
  amphi.stop = true;
  assert.throws(() => amphi.run(model, 'feature-extraction', request), { code: 'interrupted' });
  assert.throws(() => amphi.loadModel(join(fixtures, 'models/tiny-bert')), { code: 'interrupted' });
  amphi.stop = false;
  assert.deepEqual(amphi.run(model, 'feature-extraction', request), before);
});
