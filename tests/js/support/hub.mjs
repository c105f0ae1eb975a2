// A local server that answers like the Hugging Face hub's file API:
// GET /{org}/{name}/resolve/{revision}/{file}, with the sha256 of LFS files in X-Linked-Etag.
import { createServer } from 'node:http';
import { readFileSync, existsSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';

/** `repos`: repo id → folder. `corrupt`: repo ids whose weights are served with a wrong etag. */
export async function startHub(repos, { corrupt = [] } = {}) {
  const requests = [];
  const server = createServer((req, res) => {
    requests.push(req.url);
    const m = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(req.url);
    const dir = m && repos[m[1]];
    const path = dir && join(dir, decodeURIComponent(m[3]));
    if (!path || !existsSync(path)) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('Entry not found');
      return;
    }
    const bytes = readFileSync(path);
    const headers = { 'content-type': 'application/octet-stream', 'content-length': bytes.length };
    if (path.endsWith('.safetensors')) {
      const sha = createHash('sha256').update(bytes).digest('hex');
      headers['x-linked-etag'] = `"${corrupt.includes(m[1]) ? sha.replace(/^./, (c) => (c === '0' ? '1' : '0')) : sha}"`;
    }
    res.writeHead(200, headers).end(bytes);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const url = `http://127.0.0.1:${server.address().port}`;
  return { url, requests, close: () => new Promise((resolve) => server.close(resolve)) };
}
