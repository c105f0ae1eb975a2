// `amphi/worker` is a module Web Worker script (start it with `new Worker(url, { type: 'module' })`
// and pass it to `pipeline(…, { worker })`); it exports nothing.
export {};
