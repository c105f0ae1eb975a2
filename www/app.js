// What the playground pages share: the model / device / worker controls, loading with a
// progress bar, timings, and error display. Pages import the npm package by its name
// (`import … from 'amphi'`), resolved by the import map in each page.
import { pipeline } from 'amphi';

const $ = (id) => document.getElementById(id);

export function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]);
}

const ms = (x) => (x < 10 ? x.toFixed(1) : Math.round(x).toString());

/**
 * Wires a page: `task`, a default model, and `run(pipe)` that reads the page's input, calls the
 * pipeline and renders. Returns nothing; the #run button drives everything.
 *
 * Query parameters preset the controls: ?model=…&device=cpu&dtype=fp16&worker=0.
 */
export function setupPage({ task, page = task, model, run }) {
  renderChrome(page);
  const params = new URLSearchParams(location.search);
  $('model').value = params.get('model') ?? model;
  if (params.has('device')) $('device').value = params.get('device');
  if (params.has('dtype')) $('dtype').value = params.get('dtype');
  if (params.has('worker')) $('worker').checked = params.get('worker') !== '0';

  let current = null; // { key, pipe }
  const button = $('run');

  async function getPipeline() {
    const options = { device: $('device').value, dtype: $('dtype').value, worker: $('worker').checked };
    const key = JSON.stringify([$('model').value, options]);
    if (current?.key === key) return current.pipe;
    if (current) await current.pipe.dispose();
    current = null;
    const bar = $('progress').firstElementChild;
    const sizes = new Map();
    $('status').textContent = 'Loading model…';
    const pipe = await pipeline(task, $('model').value, {
      ...options,
      progress: (e) => {
        if (e.status === 'progress' || e.status === 'done') {
          sizes.set(e.file, [e.loaded, e.total || e.loaded]);
          const [loaded, total] = [...sizes.values()].reduce((a, [l, t]) => [a[0] + l, a[1] + t], [0, 0]);
          bar.style.width = `${total ? (100 * loaded) / total : 0}%`;
          $('status').textContent = `Loading ${e.file}… ${(loaded / 1e6).toFixed(1)} MB`;
        }
      },
    });
    bar.style.width = '100%';
    current = { key, pipe };
    $('device-used').textContent = pipe.device === 'gpu'
      ? `WebGPU${pipe.info.adapter ? ` · ${pipe.info.adapter}` : ''} · ${pipe.info.precision}`
      : 'CPU (wasm SIMD)';
    $('thread-used').textContent = options.worker ? 'Web Worker' : 'main thread';
    $('load-ms').textContent = ms(pipe.loadMs);
    return pipe;
  }

  button.addEventListener('click', async () => {
    button.disabled = true;
    document.body.dataset.state = 'running';
    $('error').textContent = '';
    try {
      const pipe = await getPipeline();
      $('status').textContent = 'Running…';
      const started = performance.now();
      const note = await run(pipe);
      $('run-ms').textContent = ms(performance.now() - started);
      $('status').textContent = note ?? (task === 'image-classification'
        ? 'Done.'
        : `Done: ${pipe.lastRun?.tokens ?? '?'} tokens.`);
      document.body.dataset.state = 'done';
    } catch (e) {
      $('error').textContent = `${e.code ?? 'error'}: ${e.message}`;
      $('status').textContent = '';
      document.body.dataset.state = 'error';
    } finally {
      button.disabled = false;
    }
  });
}

const PAGES = [
  ['feature-extraction', 'Embeddings & similarity'],
  ['text-classification', 'Text classification'],
  ['token-classification', 'Named entities'],
  ['image-classification', 'Images'],
  ['chat', 'Chat'],
];

/** The header with navigation, and the model / device / worker controls with the stats row. */
function renderChrome(current) {
  const nav = PAGES.map(([page, title]) => `<a href="./${page}.html" class="${page === current ? 'current' : ''}">${title}</a>`).join('');
  document.body.insertAdjacentHTML('afterbegin', `
    <header class="top"><div class="inner">
      <a class="brand" href="./index.html">amphi<span>.</span> playground</a>
      <nav>${nav}</nav>
    </div></header>`);
  $('controls').innerHTML = `
    <div class="controls">
      <div><label for="model">Model: hub id, URL or path on this server</label>
        <input type="text" id="model" spellcheck="false"></div>
      <div><label for="device">Device</label>
        <select id="device">
          <option value="auto">auto (WebGPU if it works)</option>
          <option value="cpu">CPU (wasm SIMD)</option>
          <option value="webgpu">WebGPU</option>
        </select></div>
      <div><label for="dtype">GPU weights</label>
        <select id="dtype">
          <option value="fp32">fp32</option>
          <option value="fp16">fp16 (if shader-f16)</option>
        </select></div>
      <div class="check"><input type="checkbox" id="worker" checked><label for="worker">Web Worker</label></div>
    </div>
    <div class="stats">
      <span class="stat">device <b id="device-used">–</b></span>
      <span class="stat">thread <b id="thread-used">–</b></span>
      <span class="stat">load <b id="load-ms">–</b> ms</span>
      <span class="stat">inference <b id="run-ms">–</b> ms</span>
    </div>`;
}

/** One line per non-empty input line. */
export function lines(text) {
  return text.split('\n').map((l) => l.trim()).filter((l) => l.length > 0);
}
