// Types of the `amphi` package (the same for the browser, Web Worker and Node.js entries).

/** Where a model runs. `webgpu` and `gpu` are the same request. */
export type Device = 'auto' | 'cpu' | 'gpu' | 'webgpu';
/** Weight precision on a GPU, named like Transformers.js' `dtype`. */
export type DType = 'fp32' | 'fp16';

export type Task =
  | 'feature-extraction' | 'text-classification' | 'token-classification' | 'image-classification';

/** Stable error codes: match on these, not on messages. */
export type ErrorCode =
  // from the engine (the same codes as the HTTP API and the CLI)
  | 'missing_file' | 'invalid_json' | 'invalid_config' | 'unsupported_architecture'
  | 'invalid_weights' | 'missing_tensor' | 'unsupported_dtype' | 'shape_mismatch'
  | 'tokenizer_error' | 'invalid_input' | 'invalid_image' | 'input_too_large' | 'unsupported_task'
  | 'device_unavailable' | 'backend_error' | 'internal_error'
  // from the package
  | 'model_not_found' | 'download_failed' | 'disposed' | 'engine_crashed' | 'abi_mismatch'
  | 'worker_failed';

/** Every error amphi throws. */
export declare class AmphiError extends Error {
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown });
  readonly name: 'AmphiError';
  readonly code: ErrorCode;
}

/** A download or load step, reported to `progress`. */
export type ProgressEvent =
  | { status: 'initiate'; file: string }
  | { status: 'download'; file: string; loaded: number; total: number }
  | { status: 'progress'; file: string; loaded: number; total: number; progress?: number }
  | { status: 'done'; file: string; loaded: number; total: number; cached: boolean }
  | { status: 'ready'; task: Task; model: string; device: 'cpu' | 'gpu' };

export interface PipelineOptions {
  /**
   * Default `auto`: a hardware GPU (WebGPU) when one works, else the CPU (wasm SIMD).
   * `webgpu` also accepts software adapters (SwiftShader); without WebGPU it throws
   * `device_unavailable` (always in Node).
   */
  device?: Device;
  /** Called for each download step. */
  progress?: (event: ProgressEvent) => void;
  /**
   * Hub revision (branch, tag or commit). Default `main`. It names a cache folder, so it must be
   * a safe path component: ASCII letters, digits, `-`, `_`, `.`, no `..` or `/`, at most 128
   * characters (else `invalid_input`).
   */
  revision?: string;
  /** Hub endpoint for this model (default `env.hubEndpoint`). */
  endpoint?: string;
  /** Truncate inputs to at most this many tokens (default: the model's maximum). */
  maxLength?: number;
  /**
   * Image models: refuse images with more pixels (width × height) than this, before decoding
   * them (`input_too_large`). Default 40 000 000.
   */
  maxImagePixels?: number;
  /**
   * Weights on the GPU: `fp32` (default), or `fp16` where the WebGPU adapter has `shader-f16`
   * (half the GPU memory; results within about 1e-3 of fp32). Elsewhere `fp16` loads fp32:
   * `info.precision` says which. The CPU always computes in fp32.
   */
  dtype?: DType;
  /** Cache downloaded files (default `env.cache`). */
  cache?: boolean;
  /**
   * Accept downloaded files that come with no checksum to verify them against (no sha256
   * `X-Linked-Etag`/`ETag`, no git blob sha1 `ETag`). Default `env.allowUnverified` (`false`):
   * such a download throws `unverified_download`. Browsers accept files from the page's own
   * origin without one.
   */
  allowUnverified?: boolean;
  /**
   * The largest file a download may bring, in bytes (default `env.maxFileBytes`, 16 GiB): a
   * larger stated size, or a stream past it, throws `download_too_large`.
   */
  maxFileBytes?: number;
  /**
   * Browsers: run the pipeline in a module Web Worker (`true`: one the package starts; or a
   * `Worker` you started from `amphi/worker`). The pipeline's API is the same.
   */
  worker?: boolean | Worker;
}

/** What the engine says about a loaded model. */
export interface ModelInfo {
  device: 'cpu' | 'gpu';
  /** The weights' precision as loaded (`f16` only on a GPU with `shader-f16`). */
  precision: 'f32' | 'f16';
  /** The WebGPU adapter, when `device` is `gpu`. */
  adapter?: string;
  tasks: Task[];
  architectures: string[];
  labels: string[];
  /** Text models. */
  hidden_size?: number;
  /** Text models: the default maximum sequence length in tokens. */
  max_length?: number;
  /** Text models. */
  embedding_defaults?: { pooling: Pooling | null; normalize: boolean };
  /** Image models: the pixel limit per image. */
  max_image_pixels?: number;
}

/** Timing of the last call. */
export interface RunInfo {
  /** Milliseconds inside the engine. */
  ms: number;
  /** Tokens processed (0 for images). */
  tokens: number;
  device: 'cpu' | 'gpu';
}

interface PipelineBase<T extends Task> {
  readonly task: T;
  readonly model: string;
  /** The device that runs this model. */
  readonly device: 'cpu' | 'gpu';
  readonly info: ModelInfo;
  /** Milliseconds from `pipeline()` to ready (downloads included). */
  readonly loadMs: number;
  readonly disposed: boolean;
  /** Set after each call. */
  lastRun: RunInfo | null;
  /** Frees the model's memory (and the worker, if any). Later calls throw `disposed`. */
  dispose(): Promise<void>;
}

/** One input's result from `stream()`: `output` is what the batch call's list holds at `index`. */
export interface StreamChunk<T> {
  index: number;
  output: T;
}

/** A text, or a text pair for cross-encoders and NLI models. */
export type TextInput = string | { text: string; text_pair: string };

export type Pooling = 'none' | 'mean' | 'cls';

export interface FeatureExtractionOptions {
  /** Default: the model folder's sentence-transformers pooling, else `none`. */
  pooling?: Pooling;
  /** L2-normalise (default: true when the model folder has a Normalize module). */
  normalize?: boolean;
  max_length?: number;
}

/** One vector per input (pooled), or one vector per token per input (`pooling: 'none'`). */
export type Embeddings = number[][] | number[][][];

export interface FeatureExtractionPipeline extends PipelineBase<'feature-extraction'> {
  (inputs: TextInput | TextInput[], options?: FeatureExtractionOptions & { pooling?: 'mean' | 'cls' }): Promise<number[][]>;
  (inputs: TextInput | TextInput[], options: FeatureExtractionOptions & { pooling: 'none' }): Promise<number[][][]>;
  (inputs: TextInput | TextInput[], options?: FeatureExtractionOptions): Promise<Embeddings>;
  /**
   * Each input's embedding as soon as it is computed, in input order (`for await … of`); a
   * `break` stops the computation and frees the request.
   */
  stream(inputs: TextInput[], options?: FeatureExtractionOptions): AsyncGenerator<StreamChunk<number[] | number[][]>, void, undefined>;
}

export interface ClassificationLabel {
  label: string;
  score: number;
}

export interface TextClassificationOptions {
  /** Labels per input: a number, or `null` for all (default: the best one). */
  top_k?: number | null;
  /** Default from the model's `problem_type`. */
  function_to_apply?: 'softmax' | 'sigmoid' | 'none';
  max_length?: number;
}

export interface TextClassificationPipeline extends PipelineBase<'text-classification'> {
  /** One input: its labels. */
  (inputs: TextInput, options?: TextClassificationOptions): Promise<ClassificationLabel[]>;
  /** A batch: the best label of each input, or (with `top_k`) a list of labels per input. */
  (inputs: TextInput[], options?: TextClassificationOptions): Promise<ClassificationLabel[] | ClassificationLabel[][]>;
  /** Each input's labels as soon as they are computed, in input order. */
  stream(inputs: TextInput[], options?: TextClassificationOptions): AsyncGenerator<StreamChunk<ClassificationLabel | ClassificationLabel[]>, void, undefined>;
}

export interface TokenEntity {
  /** The label of the token (`aggregation_strategy: 'none'`). */
  entity?: string;
  /** The label of the group, B-/I- prefix removed (`aggregation_strategy: 'simple'`). */
  entity_group?: string;
  score: number;
  /** Token position (`none` only). */
  index?: number;
  word: string;
  /** Character offsets in the input. */
  start: number | null;
  end: number | null;
}

export interface TokenClassificationOptions {
  aggregation_strategy?: 'none' | 'simple';
  /** Labels left out (default `['O']`). */
  ignore_labels?: string[];
  max_length?: number;
}

export interface TokenClassificationPipeline extends PipelineBase<'token-classification'> {
  (inputs: string, options?: TokenClassificationOptions): Promise<TokenEntity[]>;
  (inputs: string[], options?: TokenClassificationOptions): Promise<TokenEntity[][]>;
  /** Each input's entities as soon as they are computed, in input order. */
  stream(inputs: string[], options?: TokenClassificationOptions): AsyncGenerator<StreamChunk<TokenEntity[]>, void, undefined>;
}

/** Raw RGBA pixels, 4 bytes each, row-major: an `ImageData` or an object like it. */
export interface RawImage {
  data: Uint8ClampedArray | Uint8Array;
  width: number;
  height: number;
}

/**
 * An image: a URL (or, in Node, a file path), encoded bytes (PNG, JPEG, WebP), a `Blob` /
 * `File`, raw pixels, or (browsers) an `ImageBitmap`, canvas, `<img>` or `VideoFrame`, whose
 * pixels are read once without re-encoding. Encoded files are decoded and resized by the
 * engine exactly as Pillow does, so results match Python's; browser image objects carry the
 * browser's own decoding (and colour management).
 */
export type ImageInput =
  | string | URL | Uint8Array | ArrayBuffer | Blob | RawImage
  | ImageBitmap | OffscreenCanvas | HTMLCanvasElement | HTMLImageElement | VideoFrame;

export interface ImageClassificationOptions {
  /** Labels per image: a number (default 5), or `null` for all. */
  top_k?: number | null;
  /** Default `softmax` (`sigmoid` for a single label). */
  function_to_apply?: 'softmax' | 'sigmoid' | 'none';
}

export interface ImageClassificationPipeline extends PipelineBase<'image-classification'> {
  /** One image: its best labels. */
  (inputs: ImageInput, options?: ImageClassificationOptions): Promise<ClassificationLabel[]>;
  /** A batch: a list of labels per image. */
  (inputs: ImageInput[], options?: ImageClassificationOptions): Promise<ClassificationLabel[][]>;
}

export interface PipelineByTask {
  'feature-extraction': FeatureExtractionPipeline;
  'text-classification': TextClassificationPipeline;
  'token-classification': TokenClassificationPipeline;
  'image-classification': ImageClassificationPipeline;
}

/**
 * Loads `model` for `task`: a hub id (`sentence-transformers/all-MiniLM-L6-v2`, resolved
 * against `env.hubEndpoint`), a URL of a model folder, or (Node) a local folder.
 */
export declare function pipeline<T extends Task>(
  task: T,
  model: string,
  options?: PipelineOptions,
): Promise<PipelineByTask[T]>;

/** Package-wide settings. */
export declare const env: {
  /** Default `https://huggingface.co`. */
  hubEndpoint: string;
  /** Default `true`. */
  cache: boolean;
  /**
   * Node: the cache folder (default `$AMPHI_CACHE_DIR` or `~/.cache/amphi`; with neither a
   * cache folder nor a home folder, nothing is cached — never a shared temporary folder).
   */
  cacheDir?: string;
  /** Default `false`: downloads without a checksum throw `unverified_download`. */
  allowUnverified: boolean;
  /** Default 16 GiB: the largest downloaded file. */
  maxFileBytes: number;
};

/** The files a model folder may hold that amphi reads. */
export declare const MODEL_FILES: readonly string[];

/** The engine instance's linear memory in bytes (it grows; freed memory is reused). */
export declare function engineMemoryBytes(): Promise<number>;

/** Browsers: removes every cached model file from the Cache API. */
export declare function clearCache(): Promise<void>;

/** Node: the path of `amphi.wasm` inside the package. */
export declare const artifactPath: string;

/** Test hooks: not part of the API. */
export declare const __debug: { panic(): Promise<void> };
