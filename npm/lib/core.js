// The platform-independent part of the package: pipelines over the engine bridge.
// `browser.js` and `node.js` supply how bytes are fetched and cached (a "platform").

import { Engine } from '../dist/amphi_web.js';
import {
  AmphiError, DEFAULT_MAX_FILE_BYTES, download, validateRepoId, validateRevision,
} from './fetch.js';

export { AmphiError, DEFAULT_MAX_FILE_BYTES, download };

/** Every file the engine may read, as named in a Hugging Face model folder. */
export const MODEL_FILES = [
  'config.json',
  'model.gguf',
  'model.safetensors',
  'tokenizer.json',
  'preprocessor_config.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'modules.json',
  'sentence_bert_config.json',
  '1_Pooling/config.json',
  'generation_config.json',
  'chat_template.jinja',
];
/**
 * A model is a config.json or a GGUF file (`model.gguf`, which carries its own config); the
 * engine names any other missing file itself (after checking the architecture, so an
 * unsupported model says so rather than "missing file"). Checked once both were looked for.
 */
export function checkModel(files, where) {
  if (!files.has('config.json') && !files.has('model.gguf')) {
    throw new AmphiError('model_not_found', `${where} has neither config.json nor a GGUF file (model.gguf)`);
  }
}

/** A model given as one GGUF file (a path or URL ending in `.gguf`) rather than a folder. */
export const isGguf = (model) => /\.gguf$/i.test(String(model).split(/[?#]/)[0]);

/** Which files to fetch from a remote model, as `[name, url]`: a folder's, or one GGUF file. */
export function remoteFiles(model, remote) {
  return isGguf(model) ? [['model.gguf', model]] : MODEL_FILES.map((f) => [f, remote.base + f]);
}

export const TASKS = [
  'feature-extraction',
  'text-classification',
  'token-classification',
  'image-classification',
  'text-generation',
];

/** The error an aborted call throws (`signal.reason` is kept as its cause). */
function aborted(signal) {
  return new AmphiError('aborted', 'the call was aborted', { cause: signal?.reason });
}

/** Splits a call's options into the pipeline's parameters and its `signal`. */
function callOptions(options) {
  const { signal, ...rest } = options ?? {};
  if (signal !== undefined && !(typeof signal === 'object' && 'aborted' in signal)) {
    throw new AmphiError('invalid_input', 'signal must be an AbortSignal');
  }
  return { signal, params: parameters(rest) };
}

/** Errors from the bridge are plain `Error`s with a `code`; give them the class. */
export function asAmphiError(e) {
  if (e instanceof AmphiError) return e;
  if (e && typeof e.code === 'string') return new AmphiError(e.code, e.message);
  return new AmphiError('internal_error', String(e?.message ?? e), { cause: e });
}

/** Package-wide settings. */
export const env = {
  /** Where hub ids are resolved: `{hubEndpoint}/{id}/resolve/{revision}/{file}`. */
  hubEndpoint: 'https://huggingface.co',
  /** Cache downloaded model files (Cache API in browsers, a folder in Node). */
  cache: true,
  /** Accept downloaded files that come with no checksum to verify (default false). */
  allowUnverified: false,
  /** The largest file a download may bring, in bytes (default 16 GiB). */
  maxFileBytes: DEFAULT_MAX_FILE_BYTES,
};

/** The download checks for one load: the `allowUnverified`/`maxFileBytes` options, else `env`'s. */
export function downloadOptions(options) {
  return {
    allowUnverified: Boolean(options.allowUnverified ?? env.allowUnverified),
    maxBytes: options.maxFileBytes ?? env.maxFileBytes ?? DEFAULT_MAX_FILE_BYTES,
  };
}

const DEVICES = { auto: 'auto', cpu: 'cpu', gpu: 'gpu', webgpu: 'gpu' };
/** `dtype` (Transformers.js' names) → the engine's weight precision on a GPU. */
const DTYPES = { fp32: 'f32', fp16: 'f16' };
const now = () => globalThis.performance?.now() ?? Date.now();

/** A hub id (`org/name` or `name`) or a URL (`https://…/folder/`): its base URL. */
export function resolveRemote(model, options) {
  if (/^https?:\/\//.test(model) && isGguf(model)) return { base: model, repo: null };
  if (/^https?:\/\//.test(model)) {
    return { base: model.endsWith('/') ? model : `${model}/`, repo: null };
  }
  try {
    validateRepoId(model);
  } catch {
    throw new AmphiError('invalid_input', `"${model}" is neither a hub id (org/name), a URL nor a local folder`);
  }
  const endpoint = (options.endpoint ?? env.hubEndpoint).replace(/\/+$/, '');
  if (!/^https?:\/\//.test(endpoint)) {
    throw new AmphiError('invalid_input', `hub endpoint ${endpoint} is neither https nor http`);
  }
  // The revision names a cache folder: checked as a path component, not only URL-encoded.
  const revision = validateRevision(options.revision ?? 'main');
  return {
    base: `${endpoint}/${model}/resolve/${encodeURIComponent(revision)}/`,
    repo: model,
    revision,
  };
}

/** Raw pixels `{data, width, height}` (an `ImageData` or alike) as an RGBA attachment. */
function rawPixels(image, attach) {
  const { data, width, height } = image;
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return { blob: attach(bytes), width, height };
}

/**
 * One image input as a request reference (`{blob}`, `{blob, width, height}`) and its
 * attachment: bytes of an encoded file (Uint8Array, ArrayBuffer, Blob, or a URL / path the
 * platform reads), or the pixels of an ImageData, ImageBitmap, canvas, <img> or VideoFrame
 * (drawn once into an OffscreenCanvas: no re-encoding).
 */
async function imageRef(source, attach, platform) {
  if (source instanceof Uint8Array) return { blob: attach(source) };
  if (source instanceof ArrayBuffer) return { blob: attach(new Uint8Array(source)) };
  if (ArrayBuffer.isView(source)) {
    return { blob: attach(new Uint8Array(source.buffer, source.byteOffset, source.byteLength)) };
  }
  if (typeof Blob !== 'undefined' && source instanceof Blob) {
    return { blob: attach(new Uint8Array(await source.arrayBuffer())) };
  }
  if (typeof source === 'string' || source instanceof URL) {
    return { blob: attach(await platform.readImage(String(source))) };
  }
  if (source && typeof source === 'object' && source.data && Number.isInteger(source.width) && Number.isInteger(source.height)) {
    return rawPixels(source, attach);
  }
  const width = source?.naturalWidth ?? source?.displayWidth ?? source?.width;
  const height = source?.naturalHeight ?? source?.displayHeight ?? source?.height;
  if (typeof OffscreenCanvas !== 'undefined' && Number.isInteger(width) && Number.isInteger(height)) {
    if (width === 0 || height === 0) {
      throw new AmphiError('invalid_image', `the image is ${width}×${height}: empty`);
    }
    const ctx = new OffscreenCanvas(width, height).getContext('2d', { willReadFrequently: true });
    ctx.drawImage(source, 0, 0);
    return rawPixels(ctx.getImageData(0, 0, width, height), attach);
  }
  throw new AmphiError('invalid_input', 'an image must be a URL or path, a Blob, bytes (Uint8Array or ArrayBuffer), ImageData, an ImageBitmap or a canvas');
}

/** The request and attachments of an image-classification call. */
async function imageRequest(inputs, params, platform) {
  const attachments = [];
  const attach = (bytes) => attachments.push(bytes) - 1;
  const refs = Array.isArray(inputs)
    ? await Promise.all(inputs.map((i) => imageRef(i, attach, platform)))
    : await imageRef(inputs, attach, platform);
  return { request: { inputs: refs, parameters: params }, attachments };
}

/** Call options are the pipeline's parameters (Hugging Face names); `undefined` means unset. */
function parameters(options) {
  return Object.fromEntries(Object.entries(options ?? {}).filter(([, v]) => v !== undefined));
}

/**
 * Builds the public API on a platform:
 * `{ fetchFiles(model, options, progress) → Map<name, Uint8Array>, compileArtifact() → Module }`.
 */
export function createApi(platform) {
  /** Engine instances: one without a GPU, one with WebGPU (created when first asked for). */
  const engines = { cpu: null, gpu: null };
  /** Calls into an instance are serialised: a GPU readback returns to the event loop. */
  const queues = new WeakMap();

  /** A shared engine instance, re-created when the previous one trapped. */
  async function getEngine(webgpu = false) {
    const key = webgpu ? 'gpu' : 'cpu';
    if (engines[key]) {
      const current = await engines[key];
      if (!current.crashed) return current;
    }
    const created = (async () => Engine.create(await platform.compileArtifact(), undefined, webgpu))();
    engines[key] = created;
    created.catch(() => {
      if (engines[key] === created) engines[key] = null;
    });
    return created;
  }

  /** Runs `f` after every earlier call on the same engine has finished. */
  function serialised(engine, f) {
    const previous = queues.get(engine) ?? Promise.resolve();
    const next = previous.then(f, f);
    queues.set(engine, next.catch(() => {}));
    return next;
  }

  async function load(task, model, options) {
    const progress = typeof options.progress === 'function' ? options.progress : null;
    const files = await platform.fetchFiles(model, options, progress);
    const device = DEVICES[options.device ?? 'auto'];
    if (!device) {
      throw new AmphiError('invalid_input', `device must be one of ${Object.keys(DEVICES).join(', ')}`);
    }
    const precision = DTYPES[options.dtype ?? 'fp32'];
    if (!precision) {
      throw new AmphiError('invalid_input', `dtype must be one of ${Object.keys(DTYPES).join(', ')}`);
    }
    const loadOptions = { device, precision };
    if (options.maxLength !== undefined) loadOptions.max_length = options.maxLength;
    if (options.maxImagePixels !== undefined) loadOptions.max_image_pixels = options.maxImagePixels;
    // `auto` skips a software adapter (SwiftShader): amphi's CPU kernels are faster.
    const gpu = device === 'cpu' ? null : await platform.webgpu();
    const e = await getEngine(Boolean(gpu) && (device === 'gpu' || !gpu.software));
    const handle = await serialised(e, () => e.load(files, JSON.stringify(loadOptions)));
    const info = handle.info();
    if (!info.tasks.includes(task)) {
      handle.dispose();
      throw new AmphiError('unsupported_task', `${model} does not support ${task} (it supports ${info.tasks.join(', ')})`);
    }
    return { engine: e, handle, info: { ...info, adapter: info.device === 'gpu' ? (gpu?.name || e.adapter) : undefined } };
  }

  /**
   * `pipeline(task, model, options)`: loads a model for a task and returns a function that runs
   * it. See index.d.ts for the types.
   */
  async function pipeline(task, model, options = {}) {
    try {
      if (!TASKS.includes(task)) {
        throw new AmphiError('unsupported_task', `unknown task "${task}"; amphi runs ${TASKS.join(', ')}`);
      }
      if (typeof model !== 'string' || model === '') {
        throw new AmphiError('invalid_input', 'model must be a hub id, a URL or (in Node) a folder');
      }
      const started = now();
      let state = await load(task, model, options);
      const loadMs = now() - started;
      options.progress?.({ status: 'ready', task, model, device: state.info.device });
      let disposed = false;

      const run = async (inputs, runOptions = {}) => {
        try {
          if (disposed) throw new AmphiError('disposed', 'this pipeline was disposed');
          if (task === 'text-generation') {
            // One step per token, back on the event loop between them: the page stays live and
            // `signal` can stop it. The response follows the last chunk.
            const it = fn.stream(inputs, runOptions);
            for (;;) {
              const step = await it.next();
              if (step.done) return step.value;
            }
          }
          const { signal, params } = callOptions(runOptions);
          if (signal?.aborted) throw aborted(signal);
          if (state.engine.crashed) {
            // The previous call trapped: load the model again into a fresh instance (the files
            // come from the cache).
            state = await load(task, model, { ...options, progress: undefined });
          }
          const t0 = now();
          const { engine, handle } = state;
          const { request, attachments } = task === 'image-classification'
            ? await imageRequest(inputs, params, platform)
            : { request: { inputs, parameters: params }, attachments: undefined };
          const output = await serialised(engine, () => handle.run(task, request, attachments));
          fn.lastRun = { ms: now() - t0, tokens: state.handle.lastTokens(), device: state.info.device };
          return output;
        } catch (e) {
          throw asAmphiError(e);
        }
      };
      const fn = (inputs, runOptions) => run(inputs, runOptions);
      /**
       * Text tasks: an async iterator of chunks, each computed when the iterator asks for it (a
       * `break` out of `for await`, or `signal`, frees the rest). Encoders: `{index, output}`
       * per input in input order. text-generation: `{index, output: {text, token_ids,
       * finish_reason}}` whenever new text is complete; the iterator's return value is the
       * whole response.
       */
      fn.stream = (inputs, runOptions = {}) => (async function* streamed() {
        let stream = null;
        try {
          if (disposed) throw new AmphiError('disposed', 'this pipeline was disposed');
          if (task === 'image-classification') {
            throw new AmphiError('invalid_input', 'streaming is for text tasks (one result per input)');
          }
          const { signal, params } = callOptions(runOptions);
          if (signal?.aborted) throw aborted(signal);
          if (state.engine.crashed) state = await load(task, model, { ...options, progress: undefined });
          const { engine, handle } = state;
          const request = { inputs, parameters: params, stream: true };
          stream = await serialised(engine, () => handle.openStream(task, request));
          const t0 = now();
          let tokens = 0;
          for (;;) {
            if (signal?.aborted) throw aborted(signal);
            const chunk = await serialised(engine, () => stream.next());
            tokens += stream.lastTokens();
            fn.lastRun = { ms: now() - t0, tokens, device: state.info.device };
            // The end: `null`, or text-generation's whole response.
            if (chunk === null || Array.isArray(chunk)) return chunk ?? undefined;
            yield chunk;
          }
        } catch (e) {
          throw asAmphiError(e);
        } finally {
          stream?.free();
        }
      })();
      Object.defineProperties(fn, {
        task: { value: task, enumerable: true },
        model: { value: model, enumerable: true },
        device: { get: () => state.info.device, enumerable: true },
        info: { get: () => state.info, enumerable: true },
        loadMs: { value: loadMs, enumerable: true },
        disposed: { get: () => disposed, enumerable: true },
      });
      fn.lastRun = null;
      fn.dispose = async () => {
        if (!disposed) {
          disposed = true;
          state.handle.dispose();
        }
      };
      return fn;
    } catch (e) {
      throw asAmphiError(e);
    }
  }

  /** The engine's memory in bytes (grows, never shrinks; freed memory is reused). */
  async function engineMemoryBytes() {
    return (await getEngine(false)).memoryBytes;
  }

  async function debugPanic() {
    try {
      (await getEngine(false)).__debugPanic();
    } catch (e) {
      throw asAmphiError(e);
    }
  }

  return { pipeline, engineMemoryBytes, debugPanic };
}
