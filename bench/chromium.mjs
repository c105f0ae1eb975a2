// Drives the Chromium runners of `cargo xtask bench`: serves this folder (with node_modules), the
// model folders and inputs.json on loopback, opens browser.html once per group of runners in
// Debian's headless Chromium (playwright-core, never a downloaded browser; a fresh profile each
// time; the runners of a group share the tab and are timed interleaved) and writes each runner's
// { runtime, kernels, results } to OUT_DIR/chromium-RUNNER.json. Usage:
//   node chromium.mjs INPUTS.json MINILM_DIR PEER_MODELS_DIR OUT_DIR GROUP...   (GROUP: amphi,ort-web)
import { createServer } from 'node:http';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const [inputs, minilm, peerModels, outDir, ...groups] = process.argv.slice(2);
const here = fileURLToPath(new URL('.', import.meta.url));
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm' };

/** URL path → file: /models/minilm/… and /peer-models/… from their folders, the rest from here. */
function resolve(path) {
  if (path === '/inputs.json') return inputs;
  const roots = [['/models/minilm/', minilm], ['/peer-models/', peerModels], ['/', here]];
  for (const [prefix, root] of roots) {
    if (path.startsWith(prefix)) {
      const file = normalize(join(root, decodeURIComponent(path.slice(prefix.length))));
      return file.startsWith(normalize(root + sep)) || file === normalize(root) ? file : null;
    }
  }
  return null;
}

const server = createServer((req, res) => {
  const file = resolve(new URL(req.url, 'http://x').pathname);
  let body;
  try {
    if (!file || !statSync(file).isFile()) throw new Error('not a file');
    body = readFileSync(file);
  } catch {
    if (!req.url.endsWith('/favicon.ico')) console.error(`404 ${req.url}`);
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, {
    'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
    'cross-origin-opener-policy': 'same-origin',
    'cross-origin-embedder-policy': 'require-corp',
  });
  res.end(body);
});
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const origin = `http://127.0.0.1:${server.address().port}`;

const FLAGS = ['--headless', '--no-sandbox', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-quic'];
let failed = false;
for (const group of groups) {
  const profile = mkdtempSync(join(tmpdir(), 'amphi-bench-'));
  const context = await chromium.launchPersistentContext(profile, { executablePath: '/usr/bin/chromium', headless: true, args: FLAGS });
  try {
    const page = await context.newPage();
    page.on('console', (m) => console.error(m.text()));
    await page.goto(`${origin}/browser.html?runners=${group}`);
    await page.waitForFunction(() => window.benchResult !== undefined, null, { timeout: 30 * 60_000, polling: 500 });
    const result = await page.evaluate(() => window.benchResult);
    if (result.error) throw new Error(result.error);
    for (const { runner, ...run } of result.runs) {
      writeFileSync(join(outDir, `chromium-${runner}.json`), JSON.stringify(run));
    }
  } catch (e) {
    console.error(`chromium ${group}: ${e.message}`);
    failed = true;
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}
server.close();
process.exit(failed ? 1 : 0);
