// Reference-parity checks of the npm package against ../shared/fixtures/golden, written once
// and run in every JS host (Node main thread, Chromium main thread, Chromium Web Worker) —
// the JS twin of tests/support/checks.rs, with the same tolerances:
//   tiny models' hidden states: abs 1e-4; probabilities and scores: abs 1e-5;
//   all-MiniLM-L6-v2 embedding: abs 1e-5; mean-pooled and hidden states: abs 1e-4.
//
// `run(task, model, inputs, parameters)` runs a pipeline on the host under test; `model` is a
// fixture name (tiny-bert, tiny-bert-seqcls, tiny-roberta-seqcls, tiny-xlmr, tiny-bert-tokcls,
// all-MiniLM-L6-v2).

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

export async function tinySeqcls(run, golden, model = 'tiny-bert-seqcls') {
  for (const c of golden.cases) {
    if (!c.outputs.pipeline_all_labels) continue; // a sentence pair the pipeline did not run
    const inputs = caseInputs(c);
    const all = await run('text-classification', model, inputs, { top_k: null });
    compareLabels(`${model} ${c.name} top_k=null`, all, c.outputs.pipeline_all_labels);
    const best = await run('text-classification', model, inputs, {});
    compareLabels(`${model} ${c.name} top1`, best, c.outputs.pipeline_top1);
  }
}

/** tiny-roberta-seqcls: byte-level BPE, RoBERTa's position ids and classification head. */
export const tinyRobertaSeqcls = (run, golden) => tinySeqcls(run, golden, 'tiny-roberta-seqcls');

/** tiny-xlmr (Unigram + nmt_nfkc charsmap, sentence-transformers layout), at the golden's
 * suggested tolerances: embedding 1e-6, mean pooling 1e-5, hidden states 2e-5. */
export async function tinyXlmr(run, golden) {
  for (const c of golden.cases) {
    const hidden = c.embedding.shape[1];
    const emb = await run('feature-extraction', 'tiny-xlmr', c.texts, {});
    emb.forEach((v, b) => assertClose(`tiny-xlmr ${c.name} embedding[${b}]`, v, row(c.embedding, b, hidden), 1e-6));
    const pooled = await run('feature-extraction', 'tiny-xlmr', c.texts, { pooling: 'mean', normalize: false });
    pooled.forEach((v, b) => assertClose(`tiny-xlmr ${c.name} mean_pooled[${b}]`, v, row(c.mean_pooled, b, hidden), 1e-5));
    const tokens = await run('feature-extraction', 'tiny-xlmr', c.texts, { pooling: 'none', normalize: false });
    checkTokens(`tiny-xlmr ${c.name} last_hidden_state`, tokens, c.last_hidden_state, c.attention_mask, 2e-5);
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

// Image classification. Images are passed as descriptors that each host turns into its own
// input types: `{ file }` (an image file of the fixtures: bytes, a Blob, a path…) or
// `{ rgb, width, height }` (raw pixels: ImageData or alike).

/** Compares a ranked `[{label, score}]` output with a golden distribution (label order exact). */
function compareDistribution(what, got, labels, want, tol) {
  const order = want.map((_, i) => i).sort((a, b) => want[b] - want[a]);
  assert.ok(got.length <= want.length, `${what}: ${got.length} labels`);
  got.forEach((g, k) => {
    const i = order[k];
    assert.equal(g.label, labels[i], `${what}[${k}].label`);
    assert.ok(Math.abs(g.score - want[i]) <= tol, `${what}[${k}] ${g.label}: ${g.score} vs ${want[i]} (tolerance ${tol})`);
  });
}

/**
 * tiny-vit from the image files and from the stored resize as raw pixels: every probability
 * within 1e-5 of PyTorch's (the resize is Pillow's bit for bit), and both images as a batch.
 */
export async function tinyVit(run, golden) {
  const labels = Object.keys(golden.id2label).sort((a, b) => a - b).map((i) => golden.id2label[i]);
  const cases = golden.cases.filter((c) => c.image);
  for (const c of cases) {
    const want = c.probabilities.data;
    const file = await run('image-classification', 'tiny-vit', { file: c.image }, { top_k: null });
    compareDistribution(`tiny-vit ${c.name} (file)`, file, labels, want, TOL_PROB);
    const pixels = { rgb: c.resized_rgb_u8.data, width: 32, height: 32 };
    const raw = await run('image-classification', 'tiny-vit', pixels, { top_k: null });
    compareDistribution(`tiny-vit ${c.name} (pixels)`, raw, labels, want, TOL_PROB);
  }
  const batch = await run('image-classification', 'tiny-vit', cases.map((c) => ({ file: c.image })), { top_k: 2 });
  assert.equal(batch.length, cases.length, 'one result per image');
  batch.forEach((got, i) => {
    assert.equal(got.length, 2, 'top_k 2');
    compareDistribution(`tiny-vit batch[${i}]`, got, labels, cases[i].probabilities.data, TOL_PROB);
  });
}

/**
 * EfficientNet-Lite0 on coffee.png from the file: the golden's top 5 in order, probabilities
 * within 1e-4 and logits (`function_to_apply: none`) within 1e-3.
 */
export async function efficientnet(run, golden) {
  const c = golden.cases[0];
  for (const [field, fn, tol] of [['probability', 'softmax', 1e-4], ['logit', 'none', 1e-3]]) {
    const got = await run('image-classification', 'efficientnet-lite0', { file: c.image }, { top_k: 5, function_to_apply: fn });
    assert.equal(got.length, 5, 'top 5');
    got.forEach((g, k) => {
      assert.equal(g.label, c.top5[k].label, `efficientnet [${k}].label`);
      assert.ok(Math.abs(g.score - c.top5[k][field]) <= tol, `efficientnet ${g.label} ${field}: ${g.score} vs ${c.top5[k][field]}`);
    });
  }
}

/**
 * Streaming (`pipe.stream`): tiny-xlmr's padded batch of 3 arrives as 3 chunks in input order,
 * each equal (1e-6) to the unstreamed item and to the golden embedding; and each chunk arrives
 * before later inputs run — a token-classification stream whose third input is a pair (refused
 * when its turn comes) yields two results, then throws. `run.stream(task, model, inputs,
 * parameters)` resolves to `{chunks, error}` (the code that ended it, if any).
 */
export async function streaming(run, golden) {
  const c = golden.cases.find((x) => x.name === 'batch_padded');
  const hidden = c.embedding.shape[1];
  const whole = await run('feature-extraction', 'tiny-xlmr', c.texts, {});
  const { chunks, error } = await run.stream('feature-extraction', 'tiny-xlmr', c.texts, {});
  assert.equal(error, undefined, `stream ended with ${error}`);
  assert.deepEqual(chunks.map((x) => x.index), [0, 1, 2], 'chunks in input order');
  chunks.forEach((x, i) => {
    assertClose(`stream[${i}] vs unstreamed`, x.output, whole[i], 1e-6);
    assertClose(`stream[${i}] embedding`, x.output, row(c.embedding, i, hidden), 1e-6);
  });
  const inputs = ['My name is Sarah and I live in London.', 'hello world', { text: 'a pair', text_pair: 'is refused' }];
  const refused = await run.stream('token-classification', 'tiny-bert-tokcls', inputs, {});
  assert.deepEqual(refused.chunks.map((x) => x.index), [0, 1], 'the results before the refused input');
  assert.equal(refused.error, 'invalid_input');
}

/** Collects `pipe.stream(inputs, parameters)`: `{chunks, error}`. */
export async function collect(pipe, inputs, parameters) {
  const chunks = [];
  try {
    for await (const chunk of pipe.stream(inputs, parameters)) chunks.push(chunk);
    return { chunks };
  } catch (e) {
    return { chunks, error: e.code ?? String(e) };
  }
}

/**
 * text-generation on a decoder fixture (the JS twin of tests/support/generation.rs): every
 * golden prompt's 20 greedy tokens give its `full_text` and `greedy_text` exactly, and the
 * streamed chunks concatenate to the same text with the same token ids. `golden` is
 * `tiny-llama.json` (or another decoder's), `model` its fixture name.
 */
export async function textGeneration(run, golden, model) {
  for (const p of golden.prompts) {
    const n = p.greedy_new_ids.length;
    const whole = await run('text-generation', model, p.prompt, { max_new_tokens: n, do_sample: false });
    assert.equal(whole[0].generated_text, p.full_text, `${model} ${p.prompt}: full text`);
    assert.equal(whole[0].finish_reason, p.stopped_at_eos ? 'stop' : 'length');
    const params = { max_new_tokens: n, return_full_text: false };
    const { chunks, error } = await run.stream('text-generation', model, p.prompt, params);
    assert.equal(error, undefined, `stream ended with ${error}`);
    assert.ok(chunks.length > 1, `${chunks.length} chunks`);
    assert.equal(chunks.map((c) => c.output.text).join(''), p.greedy_text, `${model} ${p.prompt}: streamed text`);
    assert.deepEqual(chunks.flatMap((c) => c.output.token_ids), p.greedy_new_ids, 'streamed token ids');
    assert.equal(chunks.at(-1).output.finish_reason, p.stopped_at_eos ? 'stop' : 'length');
    assert.ok(chunks.slice(0, -1).every((c) => c.output.finish_reason === null), 'only the last chunk finishes');
  }
}
