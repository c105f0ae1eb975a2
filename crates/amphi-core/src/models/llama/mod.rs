//! The Llama family of decoders: Llama (Llama 3.x, SmolLM2, TinyLlama), Qwen2 / Qwen2.5,
//! Qwen3 (per-head query and key norms) and Gemma 3 (sandwich norms, GeGLU, scaled
//! embeddings, sliding-window and global layers with their own rotary bases). One pre-norm
//! block, its differences in [`config::Flavor`].
//!
//! A [`Decoder`] is the shared, immutable model; a [`DecoderState`] is one request's: a KV
//! cache per layer, each sequence's attention mask and next position. [`Decoder::forward`]
//! runs new tokens (a whole prompt, or one token per sequence) through the cache and returns
//! the logits of each sequence's last new token.

pub(crate) mod config;
#[cfg(test)]
mod tests;

pub(crate) use config::Resolved;

use crate::backend::{Activation, AttentionSpec, Backend, BatchShape, KvCache, RopeTable};
use crate::error::{Error, Result};
use crate::weights::Weights;

/// A projection, with or without a bias.
struct Proj<B: Backend> {
    w: B::Weight,
    b: Option<B::Tensor>,
}

impl<B: Backend> Proj<B> {
    fn load(be: &B, w: &Weights, name: &str, out: usize, inp: usize, bias: bool) -> Result<Self> {
        Ok(Self {
            w: w.get_weight(be, &format!("{name}.weight"), out, inp)?,
            b: bias
                .then(|| w.get(be, &format!("{name}.bias"), &[out]))
                .transpose()?,
        })
    }

    fn forward(&self, be: &B, x: &B::Tensor, act: Activation) -> Result<B::Tensor> {
        be.linear(x, &self.w, self.b.as_ref(), act)
    }
}

/// An RMSNorm's gain, with Gemma's `1 +` folded in.
fn norm<B: Backend>(
    be: &B,
    w: &Weights,
    name: &str,
    size: usize,
    offset: f32,
) -> Result<B::Tensor> {
    let mut g = w.read(&format!("{name}.weight"), &[size])?;
    g.iter_mut().for_each(|v| *v += offset);
    be.upload(g, &[size])
}

struct Layer<B: Backend> {
    input_norm: B::Tensor,
    q: Proj<B>,
    k: Proj<B>,
    v: Proj<B>,
    o: Proj<B>,
    q_norm: Option<B::Tensor>,
    k_norm: Option<B::Tensor>,
    /// Llama's pre-MLP norm; Gemma's norm of the attention's output.
    post_attention_norm: B::Tensor,
    /// Gemma's pre- and post-MLP norms.
    feedforward_norms: Option<(B::Tensor, B::Tensor)>,
    /// The gate and up projections as one `[2·intermediate, hidden]` layer.
    gate_up: B::Weight,
    down: B::Weight,
}

/// A loaded decoder: the shared, immutable part.
pub(crate) struct Decoder<B: Backend> {
    cfg: Resolved,
    embed: B::Tensor,
    layers: Vec<Layer<B>>,
    norm: B::Tensor,
    lm_head: B::Weight,
}

/// One request's state: a cache per layer, each sequence's mask over every position so far
/// (1 = a token, 0 = padding) and its next position id.
pub(crate) struct DecoderState<B: Backend> {
    caches: Vec<B::Cache>,
    batch: usize,
    mask: Vec<Vec<u32>>,
    next: Vec<u32>,
}

impl<B: Backend> DecoderState<B> {
    /// Positions held per sequence.
    pub fn len(&self) -> usize {
        self.caches.first().map_or(0, KvCache::len)
    }
}

impl<B: Backend> Decoder<B> {
    pub fn load(be: &B, w: &Weights, cfg: &Resolved) -> Result<Self> {
        let c = &cfg.cfg;
        let (h, i, d) = (c.hidden_size, c.intermediate_size, cfg.head_dim);
        let (qw, kw) = (cfg.heads * d, cfg.kv_heads * d);
        let f = cfg.flavor;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for n in 0..c.num_hidden_layers {
            let p = |s: &str| format!("model.layers.{n}.{s}");
            let gate_up = {
                let mut data = w.read(&p("mlp.gate_proj.weight"), &[i, h])?;
                data.extend(w.read(&p("mlp.up_proj.weight"), &[i, h])?);
                be.upload_weight(data, 2 * i, h)?
            };
            let head_norm = |s: &str| {
                f.qk_norm
                    .then(|| norm(be, w, &p(s), d, f.norm_offset))
                    .transpose()
            };
            layers.push(Layer {
                input_norm: norm(be, w, &p("input_layernorm"), h, f.norm_offset)?,
                q: Proj::load(be, w, &p("self_attn.q_proj"), qw, h, f.qkv_bias)?,
                k: Proj::load(be, w, &p("self_attn.k_proj"), kw, h, f.qkv_bias)?,
                v: Proj::load(be, w, &p("self_attn.v_proj"), kw, h, f.qkv_bias)?,
                o: Proj::load(be, w, &p("self_attn.o_proj"), h, qw, f.o_bias)?,
                q_norm: head_norm("self_attn.q_norm")?,
                k_norm: head_norm("self_attn.k_norm")?,
                post_attention_norm: norm(be, w, &p("post_attention_layernorm"), h, f.norm_offset)?,
                feedforward_norms: if f.sandwich {
                    Some((
                        norm(be, w, &p("pre_feedforward_layernorm"), h, f.norm_offset)?,
                        norm(be, w, &p("post_feedforward_layernorm"), h, f.norm_offset)?,
                    ))
                } else {
                    None
                },
                gate_up,
                down: w.get_weight(be, &p("mlp.down_proj.weight"), h, i)?,
            });
        }
        let table = w.read("model.embed_tokens.weight", &[c.vocab_size, h])?;
        let lm_head = if cfg.tied {
            be.upload_weight(table.clone(), c.vocab_size, h)?
        } else {
            w.get_weight(be, "lm_head.weight", c.vocab_size, h)?
        };
        Ok(Self {
            embed: be.upload(table, &[c.vocab_size, h])?,
            layers,
            norm: norm(be, w, "model.norm", h, f.norm_offset)?,
            lm_head,
            cfg: cfg.clone(),
        })
    }

    /// The resolved config.
    pub fn config(&self) -> &Resolved {
        &self.cfg
    }

    /// An empty state for `batch` sequences, its caches sized for `capacity` positions.
    pub fn start(&self, be: &B, batch: usize, capacity: usize) -> Result<DecoderState<B>> {
        let width = self.cfg.kv_heads * self.cfg.head_dim;
        let caches = (0..self.layers.len())
            .map(|_| be.kv_cache(batch, width, capacity))
            .collect::<Result<_>>()?;
        Ok(DecoderState {
            caches,
            batch,
            mask: vec![Vec::new(); batch],
            next: vec![0; batch],
        })
    }

    /// Runs `n` new tokens per sequence (`ids` and `mask` are `[batch·n]`, `mask` 0 at
    /// padding) through the model, appending to `state`'s caches, and returns the logits of
    /// each sequence's last new token, `[batch, vocab]`.
    ///
    /// Position ids are counted per sequence over its tokens (padding is skipped; a pad gets
    /// position 1, as Transformers' `generate` gives left padding, and is masked).
    pub fn forward(
        &self,
        be: &B,
        state: &mut DecoderState<B>,
        ids: &[u32],
        mask: &[u32],
    ) -> Result<B::Tensor> {
        let batch = state.batch;
        let n = ids.len() / batch.max(1);
        if n == 0 || ids.len() != batch * n || mask.len() != ids.len() {
            return Err(Error::invalid_input(format!(
                "{} token ids and {} mask values for {batch} sequences",
                ids.len(),
                mask.len()
            )));
        }
        let c = &self.cfg;
        let offset = state.len();
        let context = offset + n;
        if context > c.cfg.max_position_embeddings {
            return Err(Error::InputTooLarge {
                message: format!(
                    "{context} positions; the model's context is {}",
                    c.cfg.max_position_embeddings
                ),
            });
        }
        let mut positions = Vec::with_capacity(ids.len());
        for (b, row) in mask.chunks_exact(n).enumerate() {
            for &m in row {
                if m != 0 {
                    positions.push(state.next[b]);
                    state.next[b] += 1;
                } else {
                    positions.push(1);
                }
            }
            state.mask[b].extend(row.iter().map(|&m| u32::from(m != 0)));
        }
        let tables: Vec<RopeTable> = c
            .kinds
            .iter()
            .map(|k| k.rope.table(&positions, context))
            .collect();
        let padded = state.mask.iter().flatten().any(|&m| m == 0);
        let key_mask = if padded {
            let flat: Vec<u32> = state.mask.concat();
            Some(be.key_mask(
                &flat,
                BatchShape {
                    batch,
                    seq: context,
                },
            )?)
        } else {
            None
        };
        let mut x = be.gather(&self.embed, ids)?;
        if let Some(s) = c.flavor.embed_scale {
            x = be.scale(&x, s)?;
        }
        let eps = c.cfg.rms_norm_eps;
        for (l, (layer, cache)) in self.layers.iter().zip(&mut state.caches).enumerate() {
            let kind = &c.kinds[c.layer_kind[l]];
            let table = &tables[c.layer_kind[l]];
            let h = be.rms_norm(&x, &layer.input_norm, eps)?;
            let mut q = layer.q.forward(be, &h, Activation::None)?;
            let mut k = layer.k.forward(be, &h, Activation::None)?;
            let v = layer.v.forward(be, &h, Activation::None)?;
            if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
                q = be.rms_norm(&q, qn, eps)?;
                k = be.rms_norm(&k, kn, eps)?;
            }
            let q = be.rope(&q, table, c.heads)?;
            let k = be.rope(&k, table, c.kv_heads)?;
            be.kv_append(cache, &k, &v)?;
            let spec = AttentionSpec {
                batch,
                queries: n,
                keys: context,
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: c.head_dim,
                scale: c.scale,
                causal: true,
                offset,
                window: kind.window,
            };
            let attn = be.attend_cached(&q, cache, key_mask.as_ref(), &spec)?;
            let mut attn = layer.o.forward(be, &attn, Activation::None)?;
            if let Some((pre, post)) = &layer.feedforward_norms {
                attn = be.rms_norm(&attn, &layer.post_attention_norm, eps)?;
                x = be.add(&x, &attn)?;
                let h = be.rms_norm(&x, pre, eps)?;
                let m = self.mlp(be, layer, &h)?;
                x = be.add(&x, &be.rms_norm(&m, post, eps)?)?;
            } else {
                x = be.add(&x, &attn)?;
                let h = be.rms_norm(&x, &layer.post_attention_norm, eps)?;
                x = be.add(&x, &self.mlp(be, layer, &h)?)?;
            }
        }
        let last: Vec<u32> = (0..batch).map(|b| (b * n + n - 1) as u32).collect();
        let x = if n > 1 { be.gather(&x, &last)? } else { x };
        let x = be.rms_norm(&x, &self.norm, eps)?;
        be.linear(&x, &self.lm_head, None, Activation::None)
    }

    fn mlp(&self, be: &B, layer: &Layer<B>, x: &B::Tensor) -> Result<B::Tensor> {
        let gu = be.linear(x, &layer.gate_up, None, Activation::None)?;
        let m = be.gated(&gu, self.cfg.act)?;
        be.linear(&m, &layer.down, None, Activation::None)
    }
}
