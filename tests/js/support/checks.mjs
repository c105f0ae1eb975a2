// Reference-parity checks of the npm package against ../shared/fixtures/golden, written once
// and run in every JS host (Node main thread, Chromium main thread, Chromium Web Worker) —
// the JS twin of tests/support/checks.rs, with the same tolerances:
//   tiny models' hidden states: abs 1e-4; probabilities and scores: abs 1e-5;
//   all-MiniLM-L6-v2 embedding: abs 1e-5; mean-pooled and hidden states: abs 1e-4.
//
// `run(task, model, inputs, parameters)` runs a pipeline on the host under test; `model` is a
// fixture name (tiny-bert, tiny-bert-seqcls, tiny-bert-tokcls, all-MiniLM-L6-v2).

import assert from 'node:assert/strict';

export const TOL_TINY = 1e-4;
export const TOL_PROB = 1e-5;
export const TOL_MINILM_EMBEDDING = 1e-5;
export const TOL_MINILM_HIDDEN = 1e-4;

export function maxAbsDiff(got, want) {
  assert.equal(got.length, want.length, 'lengths differ');
  let m = 0;
  for (let i = 0; i < got.length; i++) {
    const d = Math.abs(got[i] - want[i]);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

export function assertClose(what, got, want, tol) {
  const d = maxAbsDiff(got, want);
  assert.ok(d <= tol, `${what}: max abs diff ${d} > ${tol}`);
  return d;
}

/** The inputs of a golden case: texts, or {text, text_pair} objects. */
export function caseInputs(c) {
  return c.text_pairs ? c.texts.map((text, i) => ({ text, text_pair: c.text_pairs[i] })) : c.texts;
}

/** Row `b` (of `rows` per batch item, `width` wide) of a golden tensor. */
const row = (t, index, width) => t.data.slice(index * width, (index + 1) * width);

/** Per-token vectors of each input against the golden rows where the attention mask is 1. */
function checkTokens(what, got, tensor, mask, tol) {
  const [, seq, hidden] = tensor.shape;
  assert.equal(got.length, mask.length, `${what}: inputs`);
  got.forEach((tokens, b) => {
    const real = mask[b].filter((m) => m === 1).length;
    assert.equal(tokens.length, real, `${what}[${b}]: tokens`);
    tokens.forEach((v, t) => assertClose(`${what}[${b}][${t}]`, v, row(tensor, b * seq + t, hidden), tol));
  });
}

export async function tinyBertHiddenStates(run, golden) {
  for (const c of golden.cases) {
    const got = await run('feature-extraction', 'tiny-bert', caseInputs(c), { pooling: 'none', normalize: false });
    checkTokens(`tiny-bert ${c.name}`, got, c.outputs.last_hidden_state, c.attention_mask, TOL_TINY);
  }
}

function compareLabels(what, got, want) {
  assert.equal(got.length, want.length, `${what}: results`);
  got.forEach((g, i) => {
    if (Array.isArray(want[i])) {
      compareLabels(`${what}[${i}]`, g, want[i]);
      return;
    }
    assert.equal(g.label, want[i].label, `${what}[${i}].label`);
    assert.ok(Math.abs(g.score - want[i].score) <= TOL_PROB, `${what}[${i}].score ${g.score} vs ${want[i].score}`);
  });
}

export async function tinySeqcls(run, golden) {
  for (const c of golden.cases) {
    const inputs = caseInputs(c);
    const all = await run('text-classification', 'tiny-bert-seqcls', inputs, { top_k: null });
    compareLabels(`seqcls ${c.name} top_k=null`, all, c.outputs.pipeline_all_labels);
    const best = await run('text-classification', 'tiny-bert-seqcls', inputs, {});
    compareLabels(`seqcls ${c.name} top1`, best, c.outputs.pipeline_top1);
  }
}

function compareEntities(what, got, want) {
  assert.equal(got.length, want.length, `${what}: ${JSON.stringify(got)} vs ${JSON.stringify(want)}`);
  got.forEach((g, i) => {
    if (Array.isArray(want[i])) {
      compareEntities(`${what}[${i}]`, g, want[i]);
      return;
    }
    assert.deepEqual(Object.keys(g), Object.keys(want[i]), `${what}[${i}]: fields`);
    for (const [k, w] of Object.entries(want[i])) {
      if (k === 'score') assert.ok(Math.abs(g.score - w) <= TOL_PROB, `${what}[${i}].score ${g.score} vs ${w}`);
      else assert.deepEqual(g[k], w, `${what}[${i}].${k}`);
    }
  });
}

export async function tinyTokcls(run, golden) {
  for (const c of golden.cases) {
    if (c.text_pairs) continue; // token classification takes single texts
    for (const [strategy, key] of [['none', 'pipeline_aggregation_none'], ['simple', 'pipeline_aggregation_simple']]) {
      const got = await run('token-classification', 'tiny-bert-tokcls', c.texts, { aggregation_strategy: strategy });
      compareEntities(`tokcls ${c.name} ${strategy}`, got, c.outputs[key]);
    }
  }
}

export async function minilm(run, golden) {
  for (const c of golden.cases) {
    const hidden = c.embedding.shape[1];
    const emb = await run('feature-extraction', 'all-MiniLM-L6-v2', c.texts, {});
    emb.forEach((v, b) => assertClose(`minilm ${c.name} embedding[${b}]`, v, row(c.embedding, b, hidden), TOL_MINILM_EMBEDDING));
    const pooled = await run('feature-extraction', 'all-MiniLM-L6-v2', c.texts, { pooling: 'mean', normalize: false });
    pooled.forEach((v, b) => assertClose(`minilm ${c.name} mean_pooled[${b}]`, v, row(c.mean_pooled, b, hidden), TOL_MINILM_HIDDEN));
    const tokens = await run('feature-extraction', 'all-MiniLM-L6-v2', c.texts, { pooling: 'none', normalize: false });
    checkTokens(`minilm ${c.name} last_hidden_state`, tokens, c.last_hidden_state, c.attention_mask, TOL_MINILM_HIDDEN);
  }
}
