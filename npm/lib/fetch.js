// Downloads and the names they are stored under, checked the same way as the serverless host's
// (crates/amphi-serve/src/hub.rs): safe path components, redirects that never leave https, a
// size cap, and a checksum every download must match (or an explicit `allowUnverified`).
// Platform-independent: no Node or DOM imports, and no dependency on the built engine.

/** Errors thrown by amphi: `code` is stable (see the README); `message` is for people. */
export class AmphiError extends Error {
  constructor(code, message, options) {
    super(message, options);
    this.name = 'AmphiError';
    this.code = code;
  }
}

/** The default cap on one downloaded file (16 GiB), as in `amphi serve`. */
export const DEFAULT_MAX_FILE_BYTES = 16 * 2 ** 30;
const MAX_REDIRECTS = 5;
const MAX_NAME = 96;
const MAX_REVISION = 128;
const MAX_FILE = 1024;
const MAX_FILE_COMPONENT = 255;

/**
 * Why `part` is not a safe path component (null when it is): the hub's naming rules. ASCII
 * letters, digits, `-`, `_`, `.`; no `--` or `..`; no leading or trailing `-`/`.`.
 */
function badName(part, max) {
  if (typeof part !== 'string' || part === '') return 'empty';
  if (part.length > max) return 'too long';
  if (part.includes('\0')) return 'contains NUL';
  if (/[/\\]/.test(part)) return 'contains a path separator';
  if (part.includes('..')) return 'contains ".."';
  if (part.includes('--')) return 'contains "--"';
  if (/^[-.]|[-.]$/.test(part)) return 'starts or ends with "-" or "."';
  if (!/^[A-Za-z0-9_.-]+$/.test(part)) return 'only ASCII letters, digits, "-", "_" and "." are allowed';
  return null;
}

const invalid = (what, value, reason) => new AmphiError(
  'invalid_input',
  `${what} ${JSON.stringify(String(value).slice(0, 200))}: ${reason}`,
);

/** Checks a hub id (`org/name`, or a bare legacy `name`); returns it. */
export function validateRepoId(id) {
  const parts = typeof id === 'string' ? id.split('/') : [];
  if (parts.length < 1 || parts.length > 2) throw invalid('hub id', id, 'a hub id is org/name');
  for (const part of parts) {
    const why = badName(part, MAX_NAME);
    if (why) throw invalid('hub id', id, why);
  }
  return id;
}

/** Checks a revision (branch, tag or commit; `/` as in `refs/pr/1` is not supported); returns it. */
export function validateRevision(revision) {
  const why = badName(revision, MAX_REVISION);
  if (why) throw invalid('revision', revision, why);
  return revision;
}

/** Checks a file name inside a model folder (`name` or `dir/name`); returns it. */
export function validateFileName(file) {
  const fail = (why) => { throw invalid('file name', file, why); };
  if (typeof file !== 'string' || file === '') fail('empty');
  if (file.length > MAX_FILE) fail('too long');
  if (file.includes('\0')) fail('contains NUL');
  if (file.includes('\\')) fail('contains a backslash');
  if (file.startsWith('/') || /^[A-Za-z]:/.test(file)) fail('is absolute');
  for (const part of file.split('/')) {
    if (part === '' || part === '.' || part === '..') fail('has an empty, "." or ".." component');
    if (part.length > MAX_FILE_COMPONENT) fail('has a component that is too long');
    if (part.startsWith('.')) fail('has a hidden component (leading ".")');
    if (!/^[A-Za-z0-9_.-]+$/.test(part)) fail('only ASCII letters, digits, "-", "_", "." and "/" are allowed');
  }
  return file;
}

/**
 * Whether a redirect from `from` to `to` keeps the transport as safe as where the download
 * started: https always; plain http only when it started on http and is still on http; any
 * other scheme never.
 */
export function redirectAllowed(startedOnHttp, from, to) {
  const scheme = (u) => {
    try {
      return new URL(u).protocol;
    } catch {
      return null;
    }
  };
  const next = scheme(to);
  if (next === 'https:') return true;
  if (next === 'http:') return startedOnHttp && scheme(from) === 'http:';
  return false;
}

const header = (response, name) => {
  const v = response.headers.get(name);
  return v === null ? null : v.replace(/^W\//, '').replaceAll('"', '').trim();
};

/** The checksum an ETag carries: `{ kind: 'sha256' | 'git-sha1', hex }`, or null. */
export function parseChecksum(etag) {
  const e = (etag ?? '').toLowerCase();
  if (/^[0-9a-f]{64}$/.test(e)) return { kind: 'sha256', hex: e };
  if (/^[0-9a-f]{40}$/.test(e)) return { kind: 'git-sha1', hex: e };
  return null;
}

const hex = (buffer) => Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');

async function digest(checksum, bytes) {
  if (checksum.kind === 'sha256') return hex(await crypto.subtle.digest('SHA-256', bytes));
  const head = new TextEncoder().encode(`blob ${bytes.length}\0`);
  const blob = new Uint8Array(head.length + bytes.length);
  blob.set(head);
  blob.set(bytes, head.length);
  return hex(await crypto.subtle.digest('SHA-1', blob));
}

/**
 * Downloads one file with progress events. Resolves to bytes, or `null` for a missing file
 * (404/401/403; `model_not_found` when `required`).
 *
 * `options`: `maxBytes` (default 16 GiB): a larger stated size is refused before the body is
 * read (`download_too_large`), and a stream past it or past its stated length is cut;
 * `allowUnverified` (default false): accept a file with no sha256 (`X-Linked-Etag`/`ETag`) or
 * git blob sha1 (`ETag`) to check it against (else `unverified_download`); `manualRedirects`
 * (Node): follow redirects by hand, so that the hub's own `X-Linked-Etag`/`X-Linked-Size` are
 * read and each hop's scheme is checked (browsers cannot: their fetch follows, and the final
 * URL's scheme is checked). A redirect from https to http is `insecure_redirect`.
 */
export async function download(url, file, progress, options = {}) {
  const {
    maxBytes = DEFAULT_MAX_FILE_BYTES, allowUnverified = false, manualRedirects = false, required = false,
  } = options;
  const startedOnHttp = new URL(url).protocol === 'http:';
  const get = async (u) => {
    try {
      return await fetch(u, { redirect: manualRedirects ? 'manual' : 'follow' });
    } catch (e) {
      throw new AmphiError('download_failed', `${file}: ${u} could not be fetched (${e.message})`, { cause: e });
    }
  };
  const insecure = (from, to) => new AmphiError('insecure_redirect', `${file}: refused redirect from ${from} to ${to} (downloads never leave https)`);
  let current = url;
  let linkedEtag = null;
  let linkedSize = null;
  let response;
  for (let hop = 0; ; hop++) {
    response = await get(current);
    linkedEtag ??= header(response, 'x-linked-etag');
    linkedSize ??= header(response, 'x-linked-size');
    if (!manualRedirects || ![301, 302, 303, 307, 308].includes(response.status)) break;
    await response.body?.cancel();
    if (hop >= MAX_REDIRECTS) throw new AmphiError('download_failed', `${file}: too many redirects`);
    const location = response.headers.get('location');
    if (!location) throw new AmphiError('download_failed', `${file}: redirect without a location`);
    const next = new URL(location, current).href;
    if (!redirectAllowed(startedOnHttp, current, next)) throw insecure(current, next);
    current = next;
  }
  if (response.redirected && response.url && !redirectAllowed(startedOnHttp, url, response.url)) {
    await response.body?.cancel();
    throw insecure(url, response.url);
  }
  if (response.status === 404 || response.status === 401 || response.status === 403) {
    await response.body?.cancel();
    if (required) throw new AmphiError('model_not_found', `${file}: ${url} answered ${response.status}`);
    return null;
  }
  if (!response.ok) {
    await response.body?.cancel();
    throw new AmphiError('download_failed', `${file}: ${url} answered ${response.status}`);
  }
  const stated = [linkedSize, header(response, 'content-length')]
    .filter((v) => v !== null && /^\d+$/.test(v)).map(Number);
  if (stated.length === 2 && stated[0] !== stated[1]) {
    await response.body?.cancel();
    throw new AmphiError('download_failed', `${file}: the hub states ${stated[0]} bytes, the server sends ${stated[1]}`);
  }
  const total = stated[0] ?? 0;
  const known = stated.length > 0;
  // Refused before a byte of the body is read: no checksum, or too large.
  const checksum = parseChecksum(linkedEtag ?? header(response, 'etag'));
  if (!allowUnverified && (!checksum || !globalThis.crypto?.subtle)) {
    await response.body?.cancel();
    throw new AmphiError('unverified_download', checksum
      ? `${file}: cannot check its ${checksum.kind} here (no WebCrypto: an insecure context?); allowUnverified accepts it`
      : `${file}: the server sent no sha256 or git blob sha1 to check it against; allowUnverified accepts it`);
  }
  const tooLarge = () => new AmphiError('download_too_large', `${file}: larger than the download limit of ${maxBytes} bytes`);
  if (known && total > maxBytes) {
    await response.body?.cancel();
    throw tooLarge();
  }
  progress?.({ status: 'download', file, loaded: 0, total });
  const chunks = [];
  let loaded = 0;
  const reader = response.body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      loaded += value.length;
      if (known && loaded > total) throw new AmphiError('download_failed', `${file}: more than the stated ${total} bytes`);
      if (loaded > maxBytes) throw tooLarge();
      chunks.push(value);
      progress?.({ status: 'progress', file, loaded, total, progress: total ? (100 * loaded) / total : undefined });
    }
  } catch (e) {
    reader.cancel().catch(() => {});
    if (e instanceof AmphiError) throw e;
    throw new AmphiError('download_failed', `${file}: the download broke off after ${loaded} bytes (${e.message})`, { cause: e });
  }
  const bytes = new Uint8Array(loaded);
  let at = 0;
  for (const c of chunks) {
    bytes.set(c, at);
    at += c.length;
  }
  if (known && loaded !== total) {
    throw new AmphiError('download_failed', `${file}: got ${loaded} of ${total} bytes`);
  }
  if (checksum && globalThis.crypto?.subtle) {
    const got = await digest(checksum, bytes);
    if (got !== checksum.hex) {
      throw new AmphiError('download_failed', `${file}: ${checksum.kind} ${got} does not match the hub's ${checksum.hex}`);
    }
  }
  return bytes;
}
