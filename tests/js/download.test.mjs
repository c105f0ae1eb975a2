// The package's download and cache checks, from its sources (npm/lib/fetch.js and
// npm/lib/node-cache.js import neither the engine nor a browser API, so they run without the
// built package): path components, redirects, size caps, required checksums, a server that
// dies mid-download, atomic writes under concurrent processes, private folders, and a full disk.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHash } from 'node:crypto';
import { spawn, spawnSync } from 'node:child_process';
import {
  mkdtempSync, readFileSync, readdirSync, statSync, existsSync, rmSync, mkdirSync, rmdirSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

const lib = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'npm', 'lib');
const fetchJs = await import(join(lib, 'fetch.js'));
const cacheJs = await import(join(lib, 'node-cache.js'));
const {
  download, redirectAllowed, validateRevision, validateRepoId, validateFileName, AmphiError,
} = fetchJs;
const { hubFolder, writeFileAtomic, mkdirPrivate, storeFolder } = cacheJs;

const code = (p) => p.then(() => 'ok', (e) => (e instanceof AmphiError ? e.code : `not an AmphiError: ${e}`));
const throwsCode = (f) => {
  try {
    f();
    return 'ok';
  } catch (e) {
    return e instanceof AmphiError ? e.code : `not an AmphiError: ${e}`;
  }
};
const gitSha1 = (b) => createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const sha256 = (b) => createHash('sha256').update(b).digest('hex');

test('revisions, repo ids and file names are checked as path components', () => {
  const root = mkdtempSync(join(tmpdir(), 'amphi-paths-'));
  assert.equal(hubFolder(root, 'org/name', 'main'), join(root, 'hub', 'org--name', 'main'));
  assert.equal(validateRevision('0123456789abcdef0123456789abcdef01234567').length, 40);
  for (const revision of ['..', '../../../etc', 'a/b', 'a\\b', '/abs', 'a\0b', '', 'x'.repeat(129), '.hidden', 'refs/pr/1']) {
    assert.equal(throwsCode(() => hubFolder(root, 'org/name', revision)), 'invalid_input', JSON.stringify(revision));
  }
  for (const id of ['../x', 'org/..', 'org/../x', '/org/x', 'a/b/c', 'org\\x/y', 'org\0/x', 'a--b/c', `org/${'x'.repeat(97)}`]) {
    assert.equal(throwsCode(() => validateRepoId(id)), 'invalid_input', JSON.stringify(id));
  }
  assert.equal(validateFileName('1_Pooling/config.json'), '1_Pooling/config.json');
  for (const f of ['', '/etc/passwd', '../x', 'a/../b', 'a//b', 'a\\b', 'a\0b', '.amphi-complete', 'C:x']) {
    assert.equal(throwsCode(() => validateFileName(f)), 'invalid_input', JSON.stringify(f));
  }
  rmSync(root, { recursive: true, force: true });
});

test('redirects never leave https; from an http endpoint they may stay on http', () => {
  assert.ok(redirectAllowed(false, 'https://hub.example/a', 'https://cdn.example/b'));
  assert.ok(!redirectAllowed(false, 'https://hub.example/a', 'http://cdn.example/b'));
  assert.ok(redirectAllowed(true, 'http://127.0.0.1/a', 'http://127.0.0.1/cdn/b'));
  assert.ok(redirectAllowed(true, 'http://127.0.0.1/a', 'https://cdn.example/b'));
  assert.ok(!redirectAllowed(true, 'https://cdn.example/a', 'http://127.0.0.1/b'), 'https → http');
  for (const to of ['ftp://x/y', 'file:///etc/passwd', 'data:,x', 'javascript:x']) {
    assert.ok(!redirectAllowed(true, 'http://127.0.0.1/a', to), to);
  }
});

/** A server with one route per case of the download checks. */
async function startServer() {
  const body = Buffer.alloc(1000, 7);
  const routes = {
    '/git': (res) => res.writeHead(200, { etag: `"${gitSha1(body)}"`, 'content-length': body.length }).end(body),
    '/bad-git': (res) => res.writeHead(200, { etag: `"${gitSha1(Buffer.from('x'))}"`, 'content-length': body.length }).end(body),
    '/none': (res) => res.writeHead(200, { 'content-length': body.length }).end(body),
    '/lfs': (res) => res.writeHead(302, { location: '/cdn', 'x-linked-etag': `"${sha256(body)}"`, 'x-linked-size': body.length }).end(),
    '/lfs-bad': (res) => res.writeHead(302, { location: '/cdn', 'x-linked-etag': `"${sha256(Buffer.from('x'))}"`, 'x-linked-size': body.length }).end(),
    '/cdn': (res) => res.writeHead(200, { etag: `"${createHash('md5').update(body).digest('hex')}"`, 'content-length': body.length }).end(body),
    '/overlong': (res) => res.writeHead(302, { location: '/cdn-chunked', 'x-linked-etag': `"${sha256(body)}"`, 'x-linked-size': 900 }).end(),
    '/cdn-chunked': (res) => {
      res.writeHead(200, {}); // chunked: no content-length
      res.write(body.subarray(0, 500));
      res.end(body.subarray(500));
    },
    '/unsized': (res) => {
      res.writeHead(200, { etag: `"${sha256(body)}"` });
      res.write(body.subarray(0, 500));
      res.end(body.subarray(500));
    },
    '/ftp': (res) => res.writeHead(302, { location: 'ftp://127.0.0.1/x', 'x-linked-etag': `"${sha256(body)}"` }).end(),
    '/dies': (res) => {
      res.writeHead(200, { etag: `"${sha256(body)}"`, 'content-length': body.length });
      res.write(body.subarray(0, 500), () => res.socket.destroy());
    },
  };
  const server = createServer((req, res) => (routes[req.url] ?? ((r) => r.writeHead(404).end()))(res));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return {
    url,
    body,
    close: () => new Promise((resolve) => {
      server.closeAllConnections?.();
      server.close(resolve);
    }),
  };
}

test('downloads: checksums required, size caps, redirects checked, broken streams refused', async () => {
  const s = await startServer();
  const manual = { manualRedirects: true };
  try {
    assert.deepEqual(await download(`${s.url}/git`, 'config.json', null, manual), new Uint8Array(s.body));
    assert.equal(await code(download(`${s.url}/bad-git`, 'config.json', null, manual)), 'download_failed');
    // No checksum: refused unless explicitly accepted.
    assert.equal(await code(download(`${s.url}/none`, 'config.json', null, manual)), 'unverified_download');
    assert.equal((await download(`${s.url}/none`, 'config.json', null, { ...manual, allowUnverified: true })).length, 1000);
    // LFS: the hub's X-Linked-Etag (not the CDN's md5 ETag) is what is checked.
    assert.equal((await download(`${s.url}/lfs`, 'model.safetensors', null, manual)).length, 1000);
    assert.equal(await code(download(`${s.url}/lfs-bad`, 'model.safetensors', null, manual)), 'download_failed');
    // Size caps: a stated size, and a stream with none.
    assert.equal(await code(download(`${s.url}/lfs`, 'model.safetensors', null, { ...manual, maxBytes: 999 })), 'download_too_large');
    assert.equal(await code(download(`${s.url}/unsized`, 'model.safetensors', null, { ...manual, maxBytes: 600 })), 'download_too_large');
    assert.equal((await download(`${s.url}/unsized`, 'model.safetensors', null, manual)).length, 1000);
    // A stream past its stated length.
    const overlong = download(`${s.url}/overlong`, 'model.safetensors', null, manual);
    await assert.rejects(overlong, { code: 'download_failed', message: /more than the stated 900 bytes/ });
    // A redirect to another scheme.
    assert.equal(await code(download(`${s.url}/ftp`, 'model.safetensors', null, manual)), 'insecure_redirect');
    // The server dies half-way: an error, not a hang and not half a file.
    assert.equal(await code(download(`${s.url}/dies`, 'model.safetensors', null, manual)), 'download_failed');
    assert.equal(await download(`${s.url}/nothing`, 'modules.json', null, manual), null);
    assert.equal(await code(download(`${s.url}/nothing`, 'config.json', null, { ...manual, required: true })), 'model_not_found');
  } finally {
    await s.close();
  }
});

test('cache folders are private; files are written whole, never half, by concurrent processes', async () => {
  const root = mkdtempSync(join(tmpdir(), 'amphi-atomic-'));
  const dir = join(root, 'hub', 'org--name', 'main');
  await mkdirPrivate(dir);
  for (const d of [join(root, 'hub'), join(root, 'hub', 'org--name'), dir]) {
    assert.equal(statSync(d).mode & 0o777, 0o700, d);
  }
  const target = join(dir, 'model.safetensors');
  const size = 4 << 20;
  const script = `
    const { writeFileAtomic } = await import(${JSON.stringify(join(lib, 'node-cache.js'))});
    const id = Number(process.argv[1]);
    for (let i = 0; i < 15; i++) await writeFileAtomic(${JSON.stringify(target)}, Buffer.alloc(${size}, id));
  `;
  const writers = [1, 2, 3, 4].map((id) => new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', script, String(id)], { stdio: 'inherit' });
    child.on('error', reject);
    child.on('exit', (c) => (c === 0 ? resolve() : reject(new Error(`writer ${id} exited ${c}`))));
  }));
  let running = true;
  const all = Promise.all(writers).finally(() => {
    running = false;
  });
  let reads = 0;
  while (running) {
    if (existsSync(target)) {
      const got = readFileSync(target);
      assert.equal(got.length, size, 'a half-written file was visible');
      assert.ok(got.every((b) => b === got[0]), 'a file mixed from two writers was visible');
      reads++;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  await all;
  assert.ok(reads > 0, 'the reader never saw the file');
  assert.equal(statSync(target).mode & 0o777, 0o600);
  assert.deepEqual(readdirSync(dir).filter((f) => f.endsWith('.part')), [], 'temporary files left');
  rmSync(root, { recursive: true, force: true });
});

test('a revision that climbs out of the cache writes nothing anywhere', async () => {
  const root = mkdtempSync(join(tmpdir(), 'amphi-climb-'));
  const cache = join(root, 'cache');
  const files = new Map([['config.json', new Uint8Array([1])]]);
  for (const revision of ['../../escaped', '..', 'a/../../../escaped']) {
    const attempt = (async () => storeFolder(hubFolder(cache, 'org/name', revision), files))();
    assert.equal(await code(attempt), 'invalid_input', revision);
  }
  assert.deepEqual(readdirSync(root), [], 'something was created');
  rmSync(root, { recursive: true, force: true });
});

/**
 * A full filesystem: a 64 KiB tmpfs (mounting needs root or CAP_SYS_ADMIN). Where it cannot be
 * mounted the test fails, unless AMPHI_SKIP_FULL_FS_TEST=1 says explicitly to skip it.
 */
test('a cache on a full filesystem is a typed error and leaves no partial file', async (t) => {
  const mnt = mkdtempSync(join(tmpdir(), 'amphi-fullfs-'));
  const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', mnt], { stdio: 'ignore' }).status === 0;
  if (!mounted) {
    rmdirSync(mnt);
    if (process.env.AMPHI_SKIP_FULL_FS_TEST === '1') {
      t.skip('AMPHI_SKIP_FULL_FS_TEST=1');
      return;
    }
    assert.fail(`cannot mount a 64 KiB tmpfs at ${mnt} (needs root or CAP_SYS_ADMIN), so the full-disk condition cannot be created; run as root, or set AMPHI_SKIP_FULL_FS_TEST=1 to skip this test explicitly`);
  }
  try {
    const folder = join(mnt, 'hub', 'org--name', 'main');
    mkdirSync(folder, { recursive: true });
    const failed = await storeFolder(folder, new Map([['model.safetensors', new Uint8Array(200_000)]])).then(
      () => null,
      (e) => e,
    );
    assert.ok(failed instanceof AmphiError, `expected an AmphiError, got ${failed}`);
    assert.equal(failed.code, 'cache_write_failed');
    assert.equal(failed.cause?.code, 'ENOSPC');
    assert.deepEqual(readdirSync(folder), [], 'a partial file was left');
  } finally {
    spawnSync('umount', [mnt]);
    rmdirSync(mnt);
  }
});
