//! The internal compute interface that models are written against.
//!
//! Models call coarse, fusable operations (`linear` with its activation, `attention` over a fused
//! QKV projection, `layer_norm` with the residual add) rather than element-wise tensor algebra.
//! That granularity is what a GPU backend needs: each call maps to one or two WGSL dispatches and
//! intermediate tensors stay on the device; only [`Backend::read`] moves data back to the host.
//!
//! Users never see this trait: they pick a [`crate::Device`], and the engine instantiates the
//! model over the matching backend.

#[cfg(any(test, feature = "selftest"))]
pub(crate) mod checks;
pub(crate) mod cpu;
pub(crate) mod gpu;
pub(crate) mod rope;

use crate::error::Result;

/// Element-wise function applied after a linear layer's bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Activation {
    None,
    /// Exact GELU, `x/2 * (1 + erf(x/sqrt(2)))` (Hugging Face `gelu`).
    GeluErf,
    /// Tanh approximation of GELU (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    Relu,
    Tanh,
    /// `min(max(x, 0), 6)` (MobileNet, EfficientNet-Lite).
    Relu6,
    /// `x · sigmoid(x)` (`silu`, `swish`: Llama's and Qwen's gated MLP).
    Silu,
}

/// How token vectors are reduced to one vector per sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reduce {
    /// The first token (`[CLS]`).
    First,
    /// The mean over tokens whose attention mask is 1.
    MaskedMean,
}

/// Shape of a batch of token sequences: `batch` rows of `seq` tokens (padded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchShape {
    pub batch: usize,
    pub seq: usize,
}

impl BatchShape {
    pub fn tokens(self) -> usize {
        self.batch * self.seq
    }

    /// Absolute positions: `0..seq` in every row.
    pub fn positions(self) -> Vec<u32> {
        (0..self.tokens()).map(|t| (t % self.seq) as u32).collect()
    }
}

/// The geometry of one [`Backend::attend`]: `batch` sequences of `queries` new rows attending
/// `keys` rows each, with grouped heads (`heads` query heads share each of the `kv_heads` key and
/// value heads, `heads % kv_heads == 0`: multi-head when equal, multi-query when `kv_heads` is
/// 1).
///
/// Query `i` of a sequence sits at key position `offset + i` (the cache length before the new
/// rows; 0 for an encoder or a prefill). It attends key `j` when the key mask allows `j`, and,
/// if `causal`, when `j ≤ offset + i`, and, with a `window`, when `j > offset + i − window`
/// (a sliding window of `window` positions, its own included). Cross attention is
/// `causal: false` with `keys` the other sequence's length.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AttentionSpec {
    pub batch: usize,
    pub queries: usize,
    pub keys: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Multiplies `q·k` (`1/√head_dim` unless the config says otherwise).
    pub scale: f32,
    pub causal: bool,
    pub offset: usize,
    pub window: Option<usize>,
}

impl AttentionSpec {
    /// Whether query `i` (of the new rows) may attend key `j`, before the key mask.
    pub fn allows(&self, i: usize, j: usize) -> bool {
        let at = self.offset + i;
        (!self.causal || j <= at) && self.window.is_none_or(|w| j + w > at)
    }

    /// Whether the shape is usable: positive sizes, grouped heads.
    pub fn is_valid(&self) -> bool {
        self.batch > 0
            && self.queries > 0
            && self.keys > 0
            && self.heads > 0
            && self.kv_heads > 0
            && self.head_dim > 0
            && self.heads.is_multiple_of(self.kv_heads)
            && self.window.is_none_or(|w| w > 0)
    }

    /// The query width, `heads · head_dim`.
    pub fn q_width(&self) -> usize {
        self.heads * self.head_dim
    }

    /// The key and value width, `kv_heads · head_dim`.
    pub fn kv_width(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// A key/value cache of one attention layer, owned by the session that decodes with it: `batch`
/// sequences of `len` positions, each `width` (`kv_heads · head_dim`) keys and values wide. It
/// grows by [`Backend::kv_append`]; dropping it frees its memory.
pub(crate) trait KvCache: Send {
    /// Positions held per sequence.
    fn len(&self) -> usize;
    /// Bytes held (allocated capacity, keys and values).
    #[cfg_attr(
        not(any(test, feature = "selftest")),
        expect(
            dead_code,
            reason = "checked by the op checks; the generator budgets from its estimate"
        )
    )]
    fn bytes(&self) -> usize;
}

/// Cosines and sines of rotary position embeddings for some rows: `cos_sin` is `rows` rows of
/// `rotary_dim / 2` cosines then `rotary_dim / 2` sines (see [`rope::Rope::table`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RopeTable {
    pub rows: usize,
    pub rotary_dim: usize,
    pub cos_sin: Vec<f32>,
}

/// A batch of images whose activations are NHWC rows: `[batch·height·width, channels]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ImageShape {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// Rows of the activation matrix: `batch·height·width`.
    pub fn pixels(self) -> usize {
        self.batch * self.height * self.width
    }
}

/// TF "SAME" padding along one axis for a `kernel`-wide window moved by `stride`:
/// `(output size, zero rows before)`. `out = ceil(input / stride)`,
/// `pad = max((out − 1)·stride + kernel − input, 0)`, `pad/2` before and the rest after.
pub(crate) fn same_padding(input: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let out = input.div_ceil(stride.max(1));
    let pad = (out.saturating_sub(1) * stride + kernel).saturating_sub(input);
    (out, pad / 2)
}

/// A 2-D convolution's geometry over NHWC activations: a square `kernel`, `stride` in both
/// directions, TF "SAME" zero padding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Conv2d {
    pub input: ImageShape,
    pub kernel: usize,
    pub stride: usize,
}

impl Conv2d {
    /// The output's shape.
    pub fn output(self) -> ImageShape {
        ImageShape {
            batch: self.input.batch,
            height: same_padding(self.input.height, self.kernel, self.stride).0,
            width: same_padding(self.input.width, self.kernel, self.stride).0,
        }
    }

    /// Zero rows above and columns left of the input.
    pub fn pad_top_left(self) -> (usize, usize) {
        (
            same_padding(self.input.height, self.kernel, self.stride).1,
            same_padding(self.input.width, self.kernel, self.stride).1,
        )
    }

    /// Whether the geometry is usable: positive sizes, kernel and stride.
    pub fn is_valid(self) -> bool {
        let i = self.input;
        i.batch > 0 && i.height > 0 && i.width > 0 && self.kernel > 0 && self.stride > 0
    }
}

/// A compute backend. Tensors are opaque handles owned by the backend; activations are 2-D
/// `[rows, features]` row-major matrices, with `rows = batch * seq` for token activations.
pub(crate) trait Backend {
    type Tensor: Clone + Send + Sync;
    /// A linear layer's weight, stored the way [`Backend::linear`] reads it fastest.
    type Weight: Send + Sync;
    /// One layer's key/value cache.
    type Cache: KvCache;

    /// Uploads host data (weights) as a tensor of the given shape.
    fn upload(&self, data: Vec<f32>, shape: &[usize]) -> Result<Self::Tensor>;

    /// Uploads a linear layer's weight `[out, in]` (PyTorch layout).
    fn upload_weight(&self, data: Vec<f32>, out: usize, inp: usize) -> Result<Self::Weight>;

    /// Uploads host data as an f32 activation `[rows, cols]` (image patches, tables added to
    /// activations), whatever precision weights are stored in.
    fn activations(&self, data: Vec<f32>, rows: usize, cols: usize) -> Result<Self::Tensor>;

    /// `a + b`, element-wise, same shapes (residual connections).
    fn add(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// `word[ids] + position[positions] + token_type[type_ids]`, as `[batch*seq, hidden]`: one
    /// id, position and type id per token (BERT's positions are `0..seq` per row, RoBERTa's
    /// are counted from its padding index, a decoder's start at its cache offset).
    fn embed(
        &self,
        tables: [&Self::Tensor; 3],
        ids: &[u32],
        positions: &[u32],
        type_ids: &[u32],
        shape: BatchShape,
    ) -> Result<Self::Tensor>;

    /// `act(x · wᵀ + b)` with `w` stored `[out, in]` as in PyTorch.
    fn linear(
        &self,
        x: &Self::Tensor,
        w: &Self::Weight,
        b: Option<&Self::Tensor>,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// `LayerNorm(x + residual)` over the last dimension.
    fn layer_norm(
        &self,
        x: &Self::Tensor,
        residual: Option<&Self::Tensor>,
        gamma: &Self::Tensor,
        beta: &Self::Tensor,
        eps: f64,
    ) -> Result<Self::Tensor>;

    /// Builds the key mask for [`Backend::attention`] from a `[batch*seq]` 0/1 attention mask.
    fn key_mask(&self, mask: &[u32], shape: BatchShape) -> Result<Self::Tensor>;

    /// Multi-head scaled dot-product attention. `qkv` is `[batch*seq, 3*hidden]` (the query, key
    /// and value projections side by side); masked keys get no weight. Returns `[batch*seq, hidden]`.
    fn attention(
        &self,
        qkv: &Self::Tensor,
        key_mask: &Self::Tensor,
        shape: BatchShape,
        heads: usize,
    ) -> Result<Self::Tensor>;

    /// Scaled dot-product attention with separate projections: `q` is `[batch·queries,
    /// heads·head_dim]`, `k` and `v` `[batch·keys, kv_heads·head_dim]`; `key_mask` (from
    /// [`Backend::key_mask`], `[batch, keys]`) masks padding. A query row that may attend no key
    /// gets zeros. Returns `[batch·queries, heads·head_dim]`; no limit on `keys`.
    #[cfg_attr(
        not(any(test, feature = "selftest")),
        expect(
            dead_code,
            reason = "for the encoders without a cache (CLIP's causal text tower, Whisper's cross attention) of the encoder issue"
        )
    )]
    fn attend(
        &self,
        q: &Self::Tensor,
        k: &Self::Tensor,
        v: &Self::Tensor,
        key_mask: Option<&Self::Tensor>,
        spec: &AttentionSpec,
    ) -> Result<Self::Tensor>;

    /// An empty key/value cache for `batch` sequences of `width`-wide rows with room for
    /// `capacity` positions (it grows past that when appended to).
    fn kv_cache(&self, batch: usize, width: usize, capacity: usize) -> Result<Self::Cache>;

    /// Appends `k` and `v` (`[batch·n, width]`: `n` new positions per sequence) to `cache`.
    fn kv_append(&self, cache: &mut Self::Cache, k: &Self::Tensor, v: &Self::Tensor) -> Result<()>;

    /// [`Backend::attend`] over a cache's keys and values (`spec.keys == cache.len()`).
    fn attend_cached(
        &self,
        q: &Self::Tensor,
        cache: &Self::Cache,
        key_mask: Option<&Self::Tensor>,
        spec: &AttentionSpec,
    ) -> Result<Self::Tensor>;

    /// Rotary position embeddings (the half-split "NeoX" layout of Hugging Face's
    /// `rotate_half`): `x` is `[rows, heads·head_dim]`; in each head the first
    /// `table.rotary_dim` values are rotated by row `r`'s angles, the rest pass through.
    fn rope(&self, x: &Self::Tensor, table: &RopeTable, heads: usize) -> Result<Self::Tensor>;

    /// RMSNorm: each group of `gamma.len()` consecutive values (a row, or a head of a row for
    /// per-head query/key norms) becomes `x / √(mean(x²) + eps) · gamma`.
    fn rms_norm(&self, x: &Self::Tensor, gamma: &Self::Tensor, eps: f64) -> Result<Self::Tensor>;

    /// A gated MLP's gate: `x` is `[rows, 2n]`, the gate projection then the up projection
    /// (fused into one linear layer); returns `act(gate) · up`, `[rows, n]` (SwiGLU with
    /// [`Activation::Silu`], GeGLU with a GELU).
    fn gated(&self, x: &Self::Tensor, act: Activation) -> Result<Self::Tensor>;

    /// `a · b`, element-wise, same shapes.
    #[cfg_attr(
        not(any(test, feature = "selftest")),
        expect(dead_code, reason = "no architecture multiplies activations yet")
    )]
    fn mul(&self, a: &Self::Tensor, b: &Self::Tensor) -> Result<Self::Tensor>;

    /// `s · x`.
    fn scale(&self, x: &Self::Tensor, s: f32) -> Result<Self::Tensor>;

    /// Rows of `table` (`[n, cols]`: an embedding table as uploaded, or activations) by index,
    /// as f32 activations `[ids.len(), cols]`; an index outside the table is an invalid input.
    fn gather(&self, table: &Self::Tensor, ids: &[u32]) -> Result<Self::Tensor>;

    /// Depthwise convolution (one filter per channel): `act(conv(x) + b)` with TF "SAME"
    /// zero padding. `x` is `[batch·h·w, c]` (NHWC rows, `conv.input`), `w` is `[k·k, c]` (tap
    /// `ky·k + kx`, then channel; f32, uploaded with [`Backend::activations`]) and `b` is `[c]`.
    /// Returns `[batch·oh·ow, c]`, `(oh, ow)` being `conv.output()`.
    fn depthwise(
        &self,
        x: &Self::Tensor,
        w: &Self::Tensor,
        b: &Self::Tensor,
        conv: Conv2d,
        act: Activation,
    ) -> Result<Self::Tensor>;

    /// Reduces `[batch*seq, hidden]` to `[batch, hidden]`.
    fn reduce(
        &self,
        x: &Self::Tensor,
        key_mask: &Self::Tensor,
        shape: BatchShape,
        how: Reduce,
    ) -> Result<Self::Tensor>;

    /// Divides each row by its L2 norm (at least 1e-12), like `torch.nn.functional.normalize`.
    fn l2_normalize(&self, x: &Self::Tensor) -> Result<Self::Tensor>;

    /// Copies a tensor back to the host, row-major. This is the only device-to-host transfer a
    /// pipeline makes.
    fn read(&self, x: &Self::Tensor) -> Result<Vec<f32>>;

    /// Starts [`Backend::read`]: a GPU in a browser finishes it later, after the engine has
    /// returned to its host.
    fn read_start(&self, x: &Self::Tensor) -> Result<Fetched> {
        self.read(x).map(Fetched::Ready)
    }
}

/// A tensor read back, now or later.
#[derive(Debug)]
pub(crate) enum Fetched {
    Ready(Vec<f32>),
    /// The host's readback id; the bytes arrive with `resume`.
    Pending(u32),
}

/// Little-endian f32 bytes (a readback) as values.
pub(crate) fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::same_padding;

    /// The fixtures' table for a 224×224 EfficientNet input: (input, kernel, stride) →
    /// (output, pad before, pad after).
    #[test]
    fn same_padding_matches_tensorflow() {
        for (input, k, s, out, before, after) in [
            (224, 3, 2, 112, 0, 1),
            (112, 3, 1, 112, 1, 1),
            (56, 5, 2, 28, 1, 2),
            (28, 5, 1, 28, 2, 2),
            (14, 5, 2, 7, 1, 2),
            (7, 3, 1, 7, 1, 1),
            (7, 3, 2, 4, 1, 1),
            (1, 5, 2, 1, 2, 2),
            (5, 1, 2, 3, 0, 0),
        ] {
            let (o, b) = same_padding(input, k, s);
            let total = ((o - 1) * s + k).saturating_sub(input);
            assert_eq!((o, b, total - b), (out, before, after), "{input} k{k} s{s}");
        }
    }

    /// Deterministic values in [-1, 1).
    pub(crate) fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }
}
