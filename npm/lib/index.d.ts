// Types of the `amphi` package (the same for the browser, Web Worker and Node.js entries).

/** Where a model runs. `webgpu` and `gpu` are the same request. */
export type Device = 'auto' | 'cpu' | 'gpu' | 'webgpu';
/** Weight precision on a GPU, named like Transformers.js' `dtype`. */
export type DType = 'fp32' | 'fp16';

export type Task =
  | 'feature-extraction' | 'text-classification' | 'token-classification' | 'image-classification'
  | 'text-generation';

/** Stable error codes: match on these, not on messages. */
export type ErrorCode =
  // from the engine (the same codes as the HTTP API and the CLI)
  | 'missing_file' | 'invalid_json' | 'invalid_config' | 'unsupported_architecture'
  | 'invalid_weights' | 'missing_tensor' | 'unsupported_dtype' | 'shape_mismatch'
  | 'tokenizer_error' | 'invalid_input' | 'invalid_image' | 'input_too_large' | 'unsupported_task'
  | 'device_unavailable' | 'backend_error' | 'internal_error'
  // from the package
  | 'model_not_found' | 'download_failed' | 'disposed' | 'engine_crashed' | 'abi_mismatch'
  | 'worker_failed' | 'aborted';

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
  /** Text generators: whether the model folder has a chat template (calls may pass messages). */
  chat_template?: boolean;
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

/** A chat message, rendered with the model's own chat template. */
export interface Message {
  role: 'system' | 'user' | 'assistant' | (string & {});
  content: string;
}

/**
 * text-generation options, named as in Hugging Face `generate`; what is absent comes from the
 * model's `generation_config.json`.
 */
export interface TextGenerationOptions {
  /** Tokens to generate at most (default: the model's, else 256; never past its context). */
  max_new_tokens?: number;
  /** Sample, or take the most likely token. Default: `true` when `temperature > 0` is given. */
  do_sample?: boolean;
  /** 0 means greedy. */
  temperature?: number;
  top_k?: number;
  top_p?: number;
  min_p?: number;
  /** Hugging Face's (1: none). */
  repetition_penalty?: number;
  /** OpenAI's, over generated tokens, in [-2, 2]. */
  presence_penalty?: number;
  frequency_penalty?: number;
  /** The same seed gives the same tokens on every host (default 0). */
  seed?: number;
  /** Text that ends generation (not included in the output). */
  stop?: string | string[];
  /** Token ids that end generation, besides the model's end-of-sequence ids. */
  stop_token_ids?: number[];
  /** The prompt (or conversation) followed by the new text (default `true`), or only the new text. */
  return_full_text?: boolean;
  /** Conversations: end the prompt with the assistant's turn (default `true`). */
  add_generation_prompt?: boolean;
  /** Text prompts: add the tokenizer's special tokens, such as BOS (default `true`). */
  add_special_tokens?: boolean;
  /** Stops the call between two tokens; it then throws `aborted`. */
  signal?: AbortSignal;
}

export type FinishReason = 'stop' | 'length';

/** One prompt's result. */
export interface GeneratedSequence<T = string> {
  /** The text, or the conversation with the assistant's reply appended. */
  generated_text: T;
  finish_reason: FinishReason;
  /** Tokens generated (an end-of-sequence token included). */
  generated_tokens: number;
}

/** A piece of generated text: whole characters only, with the tokens that made it. */
export interface TextGenerationChunk {
  /** The prompt's position in the call. */
  index: number;
  output: { text: string; token_ids: number[]; finish_reason: FinishReason | null };
}

export interface TextGenerationPipeline extends PipelineBase<'text-generation'> {
  /** A text prompt: `[{ generated_text }]`. */
  (inputs: string, options?: TextGenerationOptions): Promise<GeneratedSequence<string>[]>;
  /** A conversation: `[{ generated_text: messages + the reply }]` (or the reply alone). */
  (inputs: Message[], options?: TextGenerationOptions): Promise<GeneratedSequence<Message[] | string>[]>;
  /** Several prompts: a list per prompt. */
  (inputs: string[] | Message[][], options?: TextGenerationOptions): Promise<GeneratedSequence<string | Message[]>[][]>;
  /**
   * The new text as it is generated (`for await … of`); a `break` or the `signal` stops it and
   * frees the request. The generator's return value is the whole response.
   */
  stream(
    inputs: string | Message[] | string[] | Message[][],
    options?: TextGenerationOptions,
  ): AsyncGenerator<TextGenerationChunk, GeneratedSequence<string | Message[]>[] | GeneratedSequence<string | Message[]>[][], undefined>;
}

export interface PipelineByTask {
  'feature-extraction': FeatureExtractionPipeline;
  'text-classification': TextClassificationPipeline;
  'token-classification': TokenClassificationPipeline;
  'image-classification': ImageClassificationPipeline;
  'text-generation': TextGenerationPipeline;
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
