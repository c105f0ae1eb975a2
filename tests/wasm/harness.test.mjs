// Inside WebAssembly: the tokenizer parity test body (tests/support/tokenizer_parity.rs) and the
// backend op checks, compiled for wasm32-unknown-unknown (+simd128) in tests/wasm-harness, under Node.
//
//   cargo build -p amphi-wasm-harness --target wasm32-unknown-unknown --profile wasm
//   node --test tests/wasm/
//
// Environment: AMPHI_HARNESS_WASM (module path), AMPHI_MINILM_DIR, AMPHI_FIXTURES.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import { webcrypto } from 'node:crypto';
import { homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const wasmPath = process.env.AMPHI_HARNESS_WASM
  ?? join(root, 'target/wasm32-unknown-unknown/wasm/amphi_wasm_harness.wasm');
const fixtures = process.env.AMPHI_FIXTURES ?? join(root, '../shared/fixtures');
const cache = process.env.AMPHI_CACHE_DIR ?? join(homedir(), '.cache/amphi');
const minilm = process.env.AMPHI_MINILM_DIR ?? join(cache, 'models/all-MiniLM-L6-v2');

async function instantiate() {
  assert.ok(existsSync(wasmPath), `${wasmPath} missing: build tests/wasm-harness for wasm32 first`);
  const module = await WebAssembly.compile(readFileSync(wasmPath));
  let memory;
  const imports = {
    amphi_host: {
      random_fill(ptr, len) {
        webcrypto.getRandomValues(new Uint8Array(memory.buffer, ptr, len));
        return 0;
      },
      log(level, ptr, len) {
        console.error(`[amphi ${level}]`, new TextDecoder().decode(new Uint8Array(memory.buffer, ptr, len)));
      },
      interrupted: () => 0,
    },
    // The harness links the artifact's crate, so it carries the GPU imports too (unused here).
    amphi_gpu: Object.fromEntries(
      WebAssembly.Module.imports(module)
        .filter((i) => i.module === 'amphi_gpu')
        .map((i) => [i.name, () => (i.name === 'info' ? -1 : 0)]),
    ),
  };
  const instance = await WebAssembly.instantiate(module, imports);
  memory = instance.exports.memory;
  return { module, exports: instance.exports };
}

function put(exports, bytes) {
  const ptr = exports.harness_alloc(bytes.length);
  new Uint8Array(exports.memory.buffer, ptr, bytes.length).set(bytes);
  return [ptr, bytes.length];
}

test('the harness imports nothing but amphi_host and amphi_gpu', async () => {
  const { module } = await instantiate();
  const imports = WebAssembly.Module.imports(module);
  assert.deepEqual(
    imports.filter((i) => i.module !== 'amphi_host' && i.module !== 'amphi_gpu'),
    [],
    'unexpected imports',
  );
});

test('MiniLM tokenizer parity inside wasm32', async () => {
  const { exports } = await instantiate();
  const tokenizer = readFileSync(join(minilm, 'tokenizer.json'));
  const golden = readFileSync(join(fixtures, 'golden/tokenizer-minilm.json'));
  const failures = exports.harness_tokenizer_parity(...put(exports, tokenizer), ...put(exports, golden));
  const report = JSON.parse(new TextDecoder().decode(
    new Uint8Array(exports.memory.buffer, exports.harness_report_ptr(), exports.harness_report_len()),
  ));
  assert.equal(report.error, undefined, report.error);
  assert.deepEqual(report.failures, []);
  assert.equal(failures, 0);
  assert.equal(report.checked, 62 * 2 + 5);
});

// The decoder ops (attention with grouped heads, causal masks, sliding windows and a KV
// cache, RoPE, RMSNorm, gated MLPs, gathers) on the SIMD128 kernels, against the f64 reference
// of crates/amphi-core/src/backend/checks.rs; tolerance 2e-5 · max(1, |reference|).
test('backend ops inside wasm32 (SIMD128) match their f64 reference', async () => {
  const { exports } = await instantiate();
  const failures = exports.harness_backend_ops();
  const report = JSON.parse(new TextDecoder().decode(
    new Uint8Array(exports.memory.buffer, exports.harness_report_ptr(), exports.harness_report_len()),
  ));
  assert.match(report.kernel, /simd128/);
  assert.deepEqual(report.failures, []);
  assert.equal(failures, 0);
  assert.ok(report.checked > 40, `${report.checked} checks`);
});
