// Semantic search with amphi in Node.js.
//
//   npm install            (or: npm install ../../target/npm/amphi-0.1.0.tgz, after `cargo xtask npm`)
//   node index.mjs [model]  model: a hub id (default), a URL, or a local model folder
import { pipeline } from 'amphi';

const model = process.argv[2] ?? 'sentence-transformers/all-MiniLM-L6-v2';
const extractor = await pipeline('feature-extraction', model, {
  progress: (e) => {
    if (e.status === 'done' && !e.cached) console.error(`downloaded ${e.file} (${e.total} bytes)`);
  },
});
console.log(`device: ${extractor.device}, loaded in ${extractor.loadMs.toFixed(0)} ms`);

const documents = [
  'The weather is lovely today.',
  'He drove to the stadium to watch the game.',
  'A new phone was released this week.',
  'Pasta is best cooked al dente.',
];
const query = 'Is it sunny outside?';

// all-MiniLM-L6-v2 pools and normalises (its folder says so): a dot product is the cosine.
const [q, ...vectors] = await extractor([query, ...documents]);
const scored = documents
  .map((text, i) => ({ text, score: vectors[i].reduce((s, x, k) => s + x * q[k], 0) }))
  .sort((a, b) => b.score - a.score);
for (const { text, score } of scored) console.log(`${score.toFixed(3)}  ${text}`);
console.log(`best match for "${query}": "${scored[0].text}" (cosine ${scored[0].score.toFixed(3)})`);
console.log(`inference: ${extractor.lastRun.ms.toFixed(1)} ms for ${extractor.lastRun.tokens} tokens`);

await extractor.dispose();
