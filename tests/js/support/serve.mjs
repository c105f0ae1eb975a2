// Starts `amphi serve` (the debug build from `cargo test`, or $AMPHI_BIN) on a free loopback
// port with the playground (target/www) and the fixture models, and waits for /healthz.
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync } from 'node:fs';
import { amphiBin, artifact, cacheDir, modelDir, www } from './paths.mjs';

const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.once('error', reject);
  s.listen(0, '127.0.0.1', () => {
    const { port } = s.address();
    s.close(() => resolve(port));
  });
});

export const MODELS = ['all-MiniLM-L6-v2', 'tiny-bert', 'tiny-bert-seqcls', 'tiny-roberta-seqcls', 'tiny-xlmr', 'tiny-bert-tokcls', 'tiny-vit', 'efficientnet-lite0', 'tiny-llama', 'tiny-qwen2', 'SmolLM2-135M-Instruct'];

export async function startServer() {
  for (const p of [amphiBin, artifact, www]) {
    if (!existsSync(p)) throw new Error(`${p} is missing: run \`cargo xtask test\` (or build it) first`);
  }
  const port = await freePort();
  const args = ['serve', '--addr', `127.0.0.1:${port}`, '--www', www, '--artifact', artifact, '--instances', '1'];
  for (const m of MODELS) args.push('--model', `${m}=${modelDir(m)}`);
  const child = spawn(amphiBin, args, {
    env: { ...process.env, AMPHI_CACHE_DIR: cacheDir },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  child.stderr.on('data', (d) => { log += d; });
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`amphi serve exited (${child.exitCode}):\n${log}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch { /* not listening yet */ }
    if (Date.now() > deadline) {
      child.kill();
      throw new Error(`amphi serve did not become healthy:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    stop: () => new Promise((resolve) => {
      child.once('exit', resolve);
      child.kill('SIGTERM');
    }),
  };
}
