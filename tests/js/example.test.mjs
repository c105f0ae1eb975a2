// The example project (examples/npm-node) in an empty folder, with the packed tarball installed
// as a user would (`npm install ./amphi-0.1.0.tgz`), run with Node.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { minilmDir, root } from './support/paths.mjs';

test('examples/npm-node runs against the packed package in an empty project', () => {
  const tarball = process.env.AMPHI_TARBALL
    ?? join(root, 'target/npm', readdirSync(join(root, 'target/npm')).find((f) => f.endsWith('.tgz')));
  const project = mkdtempSync(join(tmpdir(), 'amphi-example-'));
  for (const f of ['package.json', 'index.mjs']) copyFileSync(join(root, 'examples/npm-node', f), join(project, f));
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--offline', tarball], { cwd: project, stdio: 'inherit' });
  const out = execFileSync('node', ['index.mjs', minilmDir], { cwd: project, encoding: 'utf8' });
  console.log(out);
  assert.match(out, /device: cpu/);
  const best = /best match for "(.*)": "(.*)" \(cosine (0\.\d+)\)/.exec(out);
  assert.ok(best, out);
  assert.equal(best[2], 'The weather is lovely today.');
});
