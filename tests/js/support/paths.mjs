// Where the tests find the repository's outputs and the shared fixtures.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const fixtures = process.env.AMPHI_FIXTURES ?? join(root, '../shared/fixtures');
export const cacheDir = process.env.AMPHI_CACHE_DIR ?? join(homedir(), '.cache/amphi');
export const minilmDir = process.env.AMPHI_MINILM_DIR ?? join(cacheDir, 'models/all-MiniLM-L6-v2');
export const efficientnetDir = process.env.AMPHI_EFFICIENTNET_DIR ?? join(cacheDir, 'models/efficientnet-lite0');
export const smollm2Dir = process.env.AMPHI_SMOLLM2_DIR ?? join(cacheDir, 'models/SmolLM2-135M-Instruct');
export const artifact = process.env.AMPHI_WASM ?? join(root, 'target/amphi.wasm');
export const www = join(root, 'target/www');
export const amphiBin = process.env.AMPHI_BIN ?? join(root, 'target/debug/amphi');
export const screenshots = process.env.AMPHI_SCREENSHOTS ?? join(root, 'target/screenshots');

export const golden = (name) => JSON.parse(readFileSync(join(fixtures, 'golden', name), 'utf8'));
export const modelDir = (name) => ({
  'all-MiniLM-L6-v2': minilmDir, 'efficientnet-lite0': efficientnetDir, 'SmolLM2-135M-Instruct': smollm2Dir,
})[name]
  ?? join(fixtures, 'models', name);
