// The module Web Worker behind `pipeline(…, { worker: true })`: one pipeline per worker,
// driven by messages `{id, op: 'load' | 'run' | 'stream-open' | 'stream-next' | 'stream-close' |
// 'dispose', …}`. Start it yourself with
// `new Worker(new URL('amphi/worker', import.meta.url), { type: 'module' })` and pass it as
// `{ worker }` if your bundler needs to see the URL.

import { pipeline } from './browser.js';

let pipe = null;
/** Open streams by id: the iterators of `pipe.stream`. */
const streams = new Map();

self.addEventListener('message', async ({ data }) => {
  const { id, op } = data ?? {};
  try {
    let result;
    if (op === 'load') {
      const progress = data.options?.progress
        ? (event) => self.postMessage({ type: 'progress', event })
        : undefined;
      await pipe?.dispose();
      pipe = await pipeline(data.task, data.model, { ...data.options, worker: false, progress });
      result = { info: pipe.info, loadMs: pipe.loadMs };
    } else if (op === 'run') {
      if (!pipe) throw Object.assign(new Error('no model loaded'), { code: 'disposed' });
      const output = await pipe(data.inputs, data.options);
      result = { output, lastRun: pipe.lastRun };
    } else if (op === 'stream-open') {
      if (!pipe) throw Object.assign(new Error('no model loaded'), { code: 'disposed' });
      streams.set(data.stream, pipe.stream(data.inputs, data.options));
    } else if (op === 'stream-next') {
      const it = streams.get(data.stream);
      const step = it ? await it.next() : { done: true };
      if (step.done) streams.delete(data.stream);
      // Done carries text-generation's whole response.
      result = step.done
        ? { done: true, response: step.value, lastRun: pipe?.lastRun }
        : { done: false, chunk: step.value, lastRun: pipe?.lastRun };
    } else if (op === 'stream-close') {
      await streams.get(data.stream)?.return();
      streams.delete(data.stream);
    } else if (op === 'dispose') {
      await pipe?.dispose();
      pipe = null;
    } else {
      throw Object.assign(new Error(`unknown op ${op}`), { code: 'invalid_input' });
    }
    self.postMessage({ id, result });
  } catch (e) {
    self.postMessage({ id, error: { code: e?.code ?? 'internal_error', message: String(e?.message ?? e) } });
  }
});
