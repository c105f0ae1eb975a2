// Browser (and Web Worker) entry: model files from a hub id or a URL, cached in the Cache API so
// that a page reloads its model without the network. Module-worker safe: no importScripts, no
// eval; every asset is located with `new URL(…, import.meta.url)`.

import init from '../dist/amphi_web.js';
import {
  AmphiError, MODEL_FILES, checkModel, createApi, download, downloadOptions, env, remoteFiles, resolveRemote,
} from './core.js';
import { workerPipeline } from './worker-client.js';

export { AmphiError, env, MODEL_FILES };

/** The Cache API cache that holds model files. */
export const CACHE_NAME = 'amphi-models-v1';
let artifact = null;

async function openCache(options) {
  if (!(options.cache ?? env.cache) || typeof caches === 'undefined') return null;
  try {
    return await caches.open(CACHE_NAME);
  } catch {
    return null; // e.g. an opaque origin
  }
}

/** Paths on the page's own server ('/models/x/', './models/x/') become URLs. */
const absolute = (model) => (typeof model === 'string' && /^\.{0,2}\//.test(model)
  ? new URL(model, globalThis.location.href).href
  : model);

async function fetchFiles(model, options, progress) {
  const remote = resolveRemote(model, options);
  const cache = await openCache(options);
  // The page's own origin already serves the code that runs, so checking its model files
  // against itself adds nothing: same-origin folders need no checksum. Anything else does.
  const sameOrigin = globalThis.location?.origin && new URL(remote.base).origin === globalThis.location.origin;
  const checks = downloadOptions(options);
  if (sameOrigin) checks.allowUnverified = true;
  const files = new Map();
  for (const [file, url] of remoteFiles(model, remote)) {
    if (file === 'model.safetensors') checkModel(files, remote.base);
    progress?.({ status: 'initiate', file });
    const hit = cache && (await cache.match(url));
    if (hit) {
      if (hit.status === 404) continue; // known to be absent
      const bytes = new Uint8Array(await hit.arrayBuffer());
      progress?.({ status: 'done', file, loaded: bytes.length, total: bytes.length, cached: true });
      files.set(file, bytes);
      continue;
    }
    const bytes = await download(url, file, progress, { ...checks, required: file === 'model.gguf' && url === model });
    if (bytes === null) {
      await cache?.put(url, new Response(null, { status: 404 }));
      continue;
    }
    await cache?.put(url, new Response(bytes, { headers: { 'content-type': 'application/octet-stream' } }));
    progress?.({ status: 'done', file, loaded: bytes.length, total: bytes.length, cached: false });
    files.set(file, bytes);
  }
  checkModel(files, remote.base);
  return files;
}

/** Initialises the bridge module and compiles amphi.wasm (once). */
function compileArtifact() {
  artifact ??= (async () => {
    await init({ module_or_path: new URL('../dist/amphi_web_bg.wasm', import.meta.url) });
    const url = new URL('../dist/amphi.wasm', import.meta.url);
    try {
      return await WebAssembly.compileStreaming(fetch(url));
    } catch {
      // Served without `application/wasm`: compile from the bytes.
      return WebAssembly.compile(await (await fetch(url)).arrayBuffer());
    }
  })();
  artifact.catch(() => {
    artifact = null;
  });
  return artifact;
}

let adapterInfo = null;

/** The browser's WebGPU adapter: null, or its name and whether it is a CPU (SwiftShader). */
function webgpu() {
  adapterInfo ??= (async () => {
    const adapter = await globalThis.navigator?.gpu?.requestAdapter().catch(() => null);
    if (!adapter) return null;
    const info = adapter.info ?? {};
    const name = info.description || [info.vendor, info.architecture].filter(Boolean).join(' ');
    const software = Boolean(info.isFallbackAdapter || adapter.isFallbackAdapter)
      || /swiftshader|llvmpipe|lavapipe/i.test(`${name} ${info.architecture ?? ''}`);
    return { name, software };
  })();
  return adapterInfo;
}

/** An image input given as a string: a URL (relative to the page), `data:` or `blob:` URL. */
async function readImage(source) {
  const url = new URL(source, globalThis.location?.href);
  const response = await fetch(url).catch((e) => {
    throw new AmphiError('download_failed', `${String(url).slice(0, 80)}: ${e.message}`);
  });
  if (!response.ok) throw new AmphiError('download_failed', `${url} answered ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

const api = createApi({ fetchFiles, compileArtifact, readImage, webgpu });

/** Loads a model for a task; with `{ worker: true }` it runs in a module Web Worker. */
export function pipeline(task, model, options = {}) {
  // Resolved here: a worker's own location is the worker script's.
  if (options.worker) return workerPipeline(task, absolute(model), options);
  return api.pipeline(task, absolute(model), options);
}
/** Test hooks (not API). */
export const __debug = {
  /** Makes the shared engine instance trap. */
  panic: api.debugPanic,
};
/** The engine instance's linear memory in bytes. */
export const engineMemoryBytes = api.engineMemoryBytes;

/** Removes every cached model file. */
export async function clearCache() {
  if (typeof caches !== 'undefined') await caches.delete(CACHE_NAME);
}
