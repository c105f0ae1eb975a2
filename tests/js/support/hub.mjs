// A local server that answers like the Hugging Face hub's file API:
// GET /{org}/{name}/resolve/{revision}/{file}. Small files come with their git blob sha1 as
// `ETag`; `.safetensors` files are answered, as the hub does for LFS files, with a 302 to a
// CDN path carrying their sha256 in `X-Linked-Etag` and their size in `X-Linked-Size` (the CDN's
// own ETag is not a checksum).
import { createServer } from 'node:http';
import { readFileSync, existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';

/**
 * `repos`: repo id → folder. `corrupt`: repo ids whose weights are served with a wrong sha256.
 * `unverified`: repo ids served with no checksum at all.
 */
export async function startHub(repos, { corrupt = [], unverified = [] } = {}) {
  const requests = [];
  const server = createServer((req, res) => {
    requests.push(req.url);
    const cdn = req.url.startsWith('/cdn/');
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(cdn ? req.url.slice(4) : req.url);
    const dir = m && repos[m[1]];
    const path = dir && join(dir, decodeURIComponent(m[3]));
    if (!path || !existsSync(path)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Entry not found');
      return;
    }
    const bytes = readFileSync(path);
    const plain = unverified.includes(m[1]);
    if (path.endsWith('.safetensors') && !cdn) {
      const sha = createHash('sha256').update(bytes).digest('hex');
      const headers = { location: `/cdn${req.url}`, 'x-linked-size': bytes.length };
      if (!plain) {
        headers['x-linked-etag'] = `"${corrupt.includes(m[1]) ? sha.replace(/^./, (c) => (c === '0' ? '1' : '0')) : sha}"`;
      }
      res.writeHead(302, headers).end();
      return;
    }
    const headers = { 'content-type': 'application/octet-stream', 'content-length': bytes.length };
    if (cdn) {
      headers.etag = `"${createHash('md5').update(bytes).digest('hex')}"`;
    } else if (!plain) {
      headers.etag = `"${createHash('sha1').update(`blob ${bytes.length}\0`).update(bytes).digest('hex')}"`;
    }
    res.writeHead(200, headers).end(bytes);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, requests, close: () => new Promise((resolve) => server.close(resolve)) };
}
