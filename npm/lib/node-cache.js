// Node's model cache: `{cache}/hub/{org--name}/{revision}/…` (the serverless host's layout) and
// `{cache}/url/{sha256 of the URL}/…`. Every path component is checked before it is joined;
// folders are created private to the user (0700); files are written atomically (a unique
// temporary file beside the destination, created exclusively, fsynced, then renamed), so a
// second process never reads a half file and never writes into another's temporary file.
// Imports only Node's own modules (no engine), so it can be tested on its own.

import { mkdir, open, rename, rm } from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { homedir } from 'node:os';
import { join, dirname, basename } from 'node:path';

import {
  AmphiError, validateFileName, validateRepoId, validateRevision,
} from './fetch.js';

/** Marks a complete download, as the serverless host does. */
export const COMPLETE = '.amphi-complete';

/**
 * The cache folder: `env.cacheDir`, `$AMPHI_CACHE_DIR`, or `~/.cache/amphi`; null (caching off)
 * when none is known. Never a shared temporary folder.
 */
export function cacheRoot(configured) {
  if (configured) return configured;
  if (process.env.AMPHI_CACHE_DIR) return process.env.AMPHI_CACHE_DIR;
  let home = '';
  try {
    home = homedir();
  } catch {
    home = '';
  }
  return home ? join(home, '.cache', 'amphi') : null;
}

/** The cache folder of a hub repo at a revision, with both checked as path components. */
export function hubFolder(root, repo, revision) {
  validateRepoId(repo);
  validateRevision(revision);
  return join(root, 'hub', repo.replace('/', '--'), revision);
}

/** The cache folder of a model folder URL. */
export function urlFolder(root, base) {
  return join(root, 'url', createHash('sha256').update(base).digest('hex').slice(0, 16));
}

const cacheError = (path, e) => new AmphiError(
  'cache_write_failed',
  `cache ${path}: ${e.code === 'ENOSPC' ? 'no space left on the device' : e.message}`,
  { cause: e },
);

/** Creates a folder and its missing parents with mode 0700 (existing ones keep theirs). */
export async function mkdirPrivate(dir) {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (e) {
    throw cacheError(dir, e);
  }
}

/**
 * Writes `bytes` to `path` atomically: `.{name}.{pid}.{random}.part` beside it, created with
 * `wx` (O_EXCL) and mode 0600, fsynced, renamed into place. On failure the temporary file is
 * removed and a `cache_write_failed` AmphiError (its `cause` the system error, e.g. ENOSPC)
 * is thrown.
 */
export async function writeFileAtomic(path, bytes) {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${randomBytes(8).toString('hex')}.part`);
  let handle;
  try {
    handle = await open(tmp, 'wx', 0o600);
    await handle.writeFile(bytes);
    await handle.sync();
    await handle.close();
    handle = null;
    await rename(tmp, path);
  } catch (e) {
    await handle?.close().catch(() => {});
    await rm(tmp, { force: true }).catch(() => {});
    throw cacheError(path, e);
  }
}

/**
 * Stores a downloaded model folder: the completion marker is removed first (a reader then
 * downloads for itself rather than trusting a folder being rewritten), each file is written
 * atomically, and the marker last. Concurrent writers of the same folder each write whole,
 * verified files; the last rename wins.
 */
export async function storeFolder(folder, files) {
  await mkdirPrivate(folder);
  await rm(join(folder, COMPLETE), { force: true }).catch(() => {});
  for (const [file, bytes] of files) {
    validateFileName(file);
    const path = join(folder, file);
    await mkdirPrivate(dirname(path));
    await writeFileAtomic(path, bytes);
  }
  await writeFileAtomic(join(folder, COMPLETE), new Uint8Array());
}
