// Node.js entry: model files from a folder, a hub id or a URL; downloads cached in a folder that
// follows the serverless host's layout (`{cache}/hub/{org--name}/{revision}/…`), so `amphi serve`
// and Node share what they downloaded.

import { readFile, readdir } from 'node:fs/promises';
import { existsSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

import { initSync } from '../dist/amphi_web.js';
import {
  AmphiError, MODEL_FILES, checkModel, createApi, download, downloadOptions, env, isGguf, remoteFiles,
  resolveRemote,
} from './core.js';
import {
  COMPLETE, cacheRoot, hubFolder, storeFolder, urlFolder,
} from './node-cache.js';

export { AmphiError, env, MODEL_FILES };

const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
let bridgeReady = false;
let artifact = null;

/**
 * The cache folder: `env.cacheDir`, `$AMPHI_CACHE_DIR`, or `~/.cache/amphi`; null (no cache)
 * when none is known — never a shared temporary folder.
 */
function cacheDir() {
  return cacheRoot(env.cacheDir);
}

function isLocal(model) {
  if (model.startsWith('file:')) return true;
  if (/^(\.{1,2}|~)?\//.test(model) || /^[A-Za-z]:\\/.test(model)) return true;
  if (/^https?:\/\//.test(model)) return false;
  try {
    const stat = statSync(model);
    return stat.isDirectory() || (stat.isFile() && isGguf(model));
  } catch {
    return false;
  }
}

/**
 * Where each file of a local model is: a folder's known files, or a `*.gguf` file read as
 * `model.gguf` (given itself, or the one `*.gguf` of a folder without model.safetensors).
 */
async function localFiles(dir) {
  if (isGguf(dir) && statSync(dir, { throwIfNoEntry: false })?.isFile()) return [['model.gguf', dir]];
  if (!statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
    throw new AmphiError('model_not_found', `${dir} does not exist`);
  }
  const found = MODEL_FILES.map((f) => [f, join(dir, f)]).filter(([, path]) => existsSync(path));
  if (!found.some(([f]) => f === 'model.gguf' || f === 'model.safetensors')) {
    const ggufs = (await readdir(dir)).filter((n) => isGguf(n) && statSync(join(dir, n)).isFile());
    if (ggufs.length === 1) found.push(['model.gguf', join(dir, ggufs[0])]);
  }
  return found;
}

async function readFolder(dir, progress) {
  const files = new Map();
  for (const [file, path] of await localFiles(dir)) {
    progress?.({ status: 'initiate', file });
    const bytes = new Uint8Array(await readFile(path));
    progress?.({ status: 'done', file, loaded: bytes.length, total: bytes.length, cached: true });
    files.set(file, bytes);
  }
  checkModel(files, dir);
  return files;
}

async function fetchFiles(model, options, progress) {
  if (isLocal(model)) {
    const dir = model.startsWith('file:') ? fileURLToPath(model) : resolve(model.replace(/^~(?=\/)/, homedir()));
    return readFolder(dir, progress);
  }
  const remote = resolveRemote(model, options);
  const root = cacheDir();
  const useCache = Boolean((options.cache ?? env.cache) && root);
  // Both the repo id and the revision are checked as path components before they are joined.
  const folder = useCache && (remote.repo
    ? hubFolder(root, remote.repo, remote.revision)
    : urlFolder(root, remote.base));
  if (useCache && existsSync(join(folder, COMPLETE))) {
    return readFolder(folder, progress);
  }
  // Redirects are followed by hand: the hub's own answer carries the checksums of files it
  // sends to a CDN, and every hop's scheme is checked.
  const checks = { ...downloadOptions(options), manualRedirects: true };
  const files = new Map();
  for (const [file, url] of remoteFiles(model, remote)) {
    if (file === 'model.safetensors') checkModel(files, remote.base);
    progress?.({ status: 'initiate', file });
    const bytes = await download(url, file, progress, { ...checks, required: file === 'model.gguf' && url === model });
    if (bytes === null) continue;
    progress?.({ status: 'done', file, loaded: bytes.length, total: bytes.length, cached: false });
    files.set(file, bytes);
  }
  checkModel(files, remote.base);
  if (useCache) await storeFolder(folder, files);
  return files;
}

/** Initialises the bridge module and compiles amphi.wasm (once). */
async function compileArtifact() {
  if (!bridgeReady) {
    initSync({ module: await readFile(join(dist, 'amphi_web_bg.wasm')) });
    bridgeReady = true;
  }
  artifact ??= WebAssembly.compile(await readFile(join(dist, 'amphi.wasm')));
  return artifact;
}

/** An image input given as a string: a file path or `file:` URL, else an http(s) or data URL. */
async function readImage(source) {
  if (/^(https?|data|blob):/.test(source)) {
    const response = await fetch(source).catch((e) => {
      throw new AmphiError('download_failed', `${source.slice(0, 80)}: ${e.message}`);
    });
    if (!response.ok) throw new AmphiError('download_failed', `${source} answered ${response.status}`);
    return new Uint8Array(await response.arrayBuffer());
  }
  const path = source.startsWith('file:') ? fileURLToPath(source) : source;
  try {
    return new Uint8Array(await readFile(path));
  } catch (e) {
    throw new AmphiError('invalid_input', `${path}: ${e.message}`);
  }
}

// Node has no WebGPU: `device: 'webgpu'` is device_unavailable.
const api = createApi({ fetchFiles, compileArtifact, readImage, webgpu: async () => null });

/** Loads a model for a task; see index.d.ts. */
export const pipeline = api.pipeline;
/** Test hooks (not API). */
export const __debug = {
  /** Makes the shared engine instance trap. */
  panic: api.debugPanic,
};
/** The engine instance's linear memory in bytes. */
export const engineMemoryBytes = api.engineMemoryBytes;
/** Where `amphi.wasm` lies in this package. */
export const artifactPath = join(dist, 'amphi.wasm');
