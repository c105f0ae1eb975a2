// Paces the native runners of `cargo xtask bench` (amphi natively and under wasmtime, onnxruntime
// from PyPI), each its own long-lived process started with `--step`, in alternating rounds (see
// `rounds` in timing.mjs), started one after another: the harness sends `warm I`, `run I` and `done I` on a runner's stdin
// and waits for its `ok`; each runner times its own runs and writes its results when its stdin
// closes. Usage:
//   node native.mjs INPUTS.json RUNNERS.json    (RUNNERS: [{ "cmd": [program, args…], "env"?: {…} }])
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { rounds } from './timing.mjs';

const [inputsPath, runnersPath] = process.argv.slice(2);
const { shapes } = JSON.parse(readFileSync(inputsPath, 'utf8'));
const specs = JSON.parse(readFileSync(runnersPath, 'utf8'));

/**
 * A runner process: `ready` resolves on its first `ok` (loaded, kernel probes done), `send(command)`
 * on the `ok` that answers it; `close()` ends its stdin and waits for it to write its results.
 */
function start({ cmd, env }) {
  const child = spawn(cmd[0], cmd.slice(1), { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'inherit'] });
  const waiting = [];
  let failure = null;
  const fail = (e) => {
    failure ??= e;
    while (waiting.length) waiting.shift().reject(failure);
  };
  createInterface({ input: child.stdout }).on('line', (line) => {
    const w = waiting.shift();
    if (line === 'ok' && w) w.resolve();
    else fail(new Error(`${cmd[0]}: unexpected output ${JSON.stringify(line)}`));
  });
  const exited = new Promise((resolve) => {
    child.on('exit', (code) => {
      if (code !== 0) fail(new Error(`${cmd.join(' ')} exited with ${code}`));
      resolve(code);
    });
  });
  child.on('error', fail);
  const ready = new Promise((resolve, reject) => { waiting.push({ resolve, reject }); });
  return {
    ready,
    send: (command) => new Promise((resolve, reject) => {
      if (failure) return reject(failure);
      waiting.push({ resolve, reject });
      child.stdin.write(`${command}\n`);
    }),
    close: async () => {
      child.stdin.end();
      if ((await exited) !== 0) throw failure;
    },
  };
}

// One at a time until loaded: their start-up (and amphi's kernel probes) must not overlap.
const runners = [];
for (const spec of specs) {
  const runner = start(spec);
  runners.push(runner);
  await runner.ready;
}
try {
  for (const [i, shape] of shapes.entries()) {
    console.error(`native runners: ${shape.batch}x${shape.seq}`);
    await rounds(runners.length, (r) => runners[r].send(`warm ${i}`), (r) => runners[r].send(`run ${i}`));
    for (const runner of runners) await runner.send(`done ${i}`);
  }
} finally {
  for (const runner of runners) await runner.close();
}
