// `pipeline(task, model, { worker: true })`: the same pipeline, running in a module Web Worker
// (lib/worker.js) so that the page's main thread never blocks on inference.

import { AmphiError } from './core.js';

export async function workerPipeline(task, model, options) {
  const worker = typeof options.worker === 'object'
    ? options.worker
    : new Worker(new URL('./worker.js', import.meta.url), { type: 'module', name: 'amphi' });
  const pending = new Map();
  let next = 1;
  const failAll = (error) => {
    for (const { reject } of pending.values()) reject(error);
    pending.clear();
  };
  worker.addEventListener('message', ({ data }) => {
    if (data?.type === 'progress') {
      options.progress?.(data.event);
      return;
    }
    const call = pending.get(data?.id);
    if (!call) return;
    pending.delete(data.id);
    if (data.error) call.reject(new AmphiError(data.error.code, data.error.message));
    else call.resolve(data.result);
  });
  worker.addEventListener('error', (e) => {
    e.preventDefault?.();
    failAll(new AmphiError('worker_failed', `the amphi worker failed: ${e.message ?? 'unknown error'}`));
  });
  const call = (message) => new Promise((resolve, reject) => {
    const id = next++;
    pending.set(id, { resolve, reject });
    worker.postMessage({ ...message, id });
  });

  const { progress, worker: _worker, ...rest } = options;
  let loaded;
  try {
    loaded = await call({ op: 'load', task, model, options: { ...rest, progress: Boolean(progress) } });
  } catch (e) {
    worker.terminate();
    throw e;
  }
  let disposed = false;
  /** An AbortSignal cannot cross to the worker: it stays here and is checked between steps. */
  const split = (runOptions) => {
    const { signal, ...rest } = runOptions ?? {};
    return { signal, rest };
  };
  const aborted = (signal) => new AmphiError('aborted', 'the call was aborted', { cause: signal?.reason });
  const fn = async (inputs, runOptions) => {
    if (disposed) throw new AmphiError('disposed', 'this pipeline was disposed');
    if (task === 'text-generation') {
      // Token by token, so that `signal` stops it between two.
      const it = fn.stream(inputs, runOptions);
      for (;;) {
        const step = await it.next();
        if (step.done) return step.value;
      }
    }
    const { signal, rest } = split(runOptions);
    if (signal?.aborted) throw aborted(signal);
    const { output, lastRun } = await call({ op: 'run', inputs, options: rest });
    fn.lastRun = lastRun;
    return output;
  };
  let streams = 0;
  /** The worker's `pipe.stream`: each chunk crosses over as soon as the worker has it. */
  fn.stream = (inputs, runOptions) => (async function* streamed() {
    if (disposed) throw new AmphiError('disposed', 'this pipeline was disposed');
    const { signal, rest } = split(runOptions);
    if (signal?.aborted) throw aborted(signal);
    const stream = ++streams;
    await call({ op: 'stream-open', stream, inputs, options: rest });
    let done = false;
    try {
      for (;;) {
        if (signal?.aborted) throw aborted(signal);
        const step = await call({ op: 'stream-next', stream });
        fn.lastRun = step.lastRun;
        if (step.done) {
          done = true;
          return step.response;
        }
        yield step.chunk;
      }
    } catch (e) {
      // The worker finished the stream when it failed (not when the signal stopped it here).
      if (e?.code !== 'aborted') done = true;
      throw e;
    } finally {
      if (!done && !disposed) await call({ op: 'stream-close', stream });
    }
  })();
  Object.defineProperties(fn, {
    task: { value: task, enumerable: true },
    model: { value: model, enumerable: true },
    device: { value: loaded.info.device, enumerable: true },
    info: { value: loaded.info, enumerable: true },
    loadMs: { value: loaded.loadMs, enumerable: true },
    disposed: { get: () => disposed, enumerable: true },
    worker: { value: worker, enumerable: true },
  });
  fn.lastRun = null;
  fn.dispose = async () => {
    if (disposed) return;
    disposed = true;
    try {
      await call({ op: 'dispose' });
    } finally {
      worker.terminate();
      failAll(new AmphiError('disposed', 'this pipeline was disposed'));
    }
  };
  return fn;
}
