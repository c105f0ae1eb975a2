//! GGUF files (llama.cpp's format) as a Hugging Face folder: the metadata becomes
//! `config.json`, `tokenizer.json`, `tokenizer_config.json` (with the chat template) and
//! `generation_config.json`, and the tensors are read by their Hugging Face names, dequantized
//! to f32 (any block type candle-core reads: q4_0, q4_1, q5_*, q8_0, the k-quants, f16, bf16).
//! As Transformers' `from_pretrained(…, gguf_file=…)` does, llama.cpp's row permutation of the
//! Llama query and key projections (for its interleaved rotary layout) is undone.
//!
//! Architectures: `llama`, `qwen2`, `qwen3`; tokenizers: byte-level BPE (`gpt2`) with the
//! pre-tokenizers llama.cpp names (`smollm`, `llama-bpe`/`llama3`, `qwen2`, else GPT-2's).

use std::io::Cursor;

use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::{Value as Json, json};

use crate::error::{Error, Result};
use crate::files::ModelFiles;

/// The name a GGUF model file has inside [`ModelFiles`].
pub(crate) const GGUF_FILE: &str = "model.gguf";

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidWeights {
        file: GGUF_FILE.to_owned(),
        message: message.into(),
    }
}

/// A parsed GGUF file over its bytes.
pub(crate) struct Gguf<'a> {
    bytes: &'a [u8],
    content: Content,
    arch: String,
    heads: usize,
    kv_heads: usize,
}

impl std::fmt::Debug for Gguf<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gguf")
            .field("arch", &self.arch)
            .finish_non_exhaustive()
    }
}

fn number(v: &Value) -> Option<f64> {
    Some(match v {
        Value::U8(x) => f64::from(*x),
        Value::I8(x) => f64::from(*x),
        Value::U16(x) => f64::from(*x),
        Value::I16(x) => f64::from(*x),
        Value::U32(x) => f64::from(*x),
        Value::I32(x) => f64::from(*x),
        Value::U64(x) => *x as f64,
        Value::I64(x) => *x as f64,
        Value::F32(x) => f64::from(*x),
        Value::F64(x) => *x,
        _ => return None,
    })
}

impl<'a> Gguf<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let content = Content::read(&mut Cursor::new(bytes)).map_err(|e| invalid(e.to_string()))?;
        let arch = match content.metadata.get("general.architecture") {
            Some(Value::String(s)) => s.clone(),
            _ => return Err(invalid("no general.architecture")),
        };
        let mut g = Self {
            bytes,
            content,
            arch,
            heads: 0,
            kv_heads: 0,
        };
        g.heads = g.usize(&g.key("attention.head_count"))?;
        g.kv_heads = g
            .opt_usize(&g.key("attention.head_count_kv"))?
            .unwrap_or(g.heads);
        Ok(g)
    }

    fn key(&self, k: &str) -> String {
        format!("{}.{k}", self.arch)
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.get(key)
            .map(|v| number(v).ok_or_else(|| invalid(format!("{key} is not a number"))))
            .transpose()
    }

    fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.opt_f64(key)? {
            Some(v) if v >= 0.0 && v.fract() == 0.0 && v < 1e12 => Ok(Some(v as usize)),
            Some(v) => Err(invalid(format!("{key} is {v}"))),
            None => Ok(None),
        }
    }

    fn usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| invalid(format!("no {key}")))
    }

    fn strings(&self, key: &str) -> Result<Vec<String>> {
        match self.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(invalid(format!("{key} holds a non-string"))),
                })
                .collect(),
            _ => Err(invalid(format!("no {key}"))),
        }
    }

    fn string(&self, key: &str) -> Option<String> {
        match self.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            _ => None,
        }
    }

    /// The Hugging Face `config.json` of the model.
    fn config(&self, vocab: usize) -> Result<Json> {
        let (class, model_type) = match self.arch.as_str() {
            "llama" => ("LlamaForCausalLM", "llama"),
            "qwen2" => ("Qwen2ForCausalLM", "qwen2"),
            "qwen3" => ("Qwen3ForCausalLM", "qwen3"),
            other => {
                return Err(Error::UnsupportedArchitecture {
                    architecture: format!("{other} (GGUF)"),
                    supported: "llama, qwen2, qwen3 (GGUF)".to_owned(),
                });
            }
        };
        if self.content.tensor_infos.contains_key("rope_freqs.weight") {
            return Err(invalid(
                "rope_freqs (Llama 3.1 rotary scaling stored as a tensor) is not read yet",
            ));
        }
        let hidden = self.usize(&self.key("embedding_length"))?;
        let head_dim = match self.opt_usize(&self.key("attention.key_length"))? {
            Some(d) => d,
            None => hidden / self.heads.max(1),
        };
        let mut cfg = json!({
            "architectures": [class],
            "model_type": model_type,
            "vocab_size": vocab,
            "hidden_size": hidden,
            "intermediate_size": self.usize(&self.key("feed_forward_length"))?,
            "num_hidden_layers": self.usize(&self.key("block_count"))?,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.opt_f64(&self.key("attention.layer_norm_rms_epsilon"))?.unwrap_or(1e-5),
            "max_position_embeddings": self.usize(&self.key("context_length"))?,
            "rope_theta": self.opt_f64(&self.key("rope.freq_base"))?.unwrap_or(10_000.0),
            "tie_word_embeddings": !self.content.tensor_infos.contains_key("output.weight"),
        });
        if let Some(rot) = self.opt_usize(&self.key("rope.dimension_count"))?
            && rot != head_dim
            && head_dim > 0
        {
            cfg["partial_rotary_factor"] = json!(rot as f64 / head_dim as f64);
        }
        if let Some(kind) = self.string(&self.key("rope.scaling.type"))
            && kind != "none"
        {
            let mut s = json!({"rope_type": kind});
            if let Some(f) = self.opt_f64(&self.key("rope.scaling.factor"))? {
                s["factor"] = json!(f);
            }
            if let Some(o) = self.opt_usize(&self.key("rope.scaling.original_context_length"))? {
                s["original_max_position_embeddings"] = json!(o);
            }
            cfg["rope_scaling"] = s;
        }
        Ok(cfg)
    }

    /// `tokenizer.json` from the `tokenizer.ggml.*` metadata (byte-level BPE).
    fn tokenizer(&self, tokens: &[String]) -> Result<Json> {
        let model = self.string("tokenizer.ggml.model").unwrap_or_default();
        if model != "gpt2" {
            return Err(invalid(format!(
                "tokenizer.ggml.model {model:?}: amphi reads byte-level BPE (gpt2) GGUF tokenizers"
            )));
        }
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match self.get("tokenizer.ggml.token_type") {
            Some(Value::Array(v)) => v
                .iter()
                .map(|t| number(t).map_or(1, |n| n as i64))
                .collect(),
            _ => Vec::new(),
        };
        let vocab: serde_json::Map<String, Json> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        // Control tokens (type 3) are special; user-defined ones (4) are added, not special.
        let added: Vec<Json> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, t))| **t == 3 || **t == 4)
            .map(|(id, (content, t))| {
                json!({"id": id, "content": content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": *t == 4, "special": *t == 3})
            })
            .collect();
        const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
        let byte_level = |regex: bool| json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": regex});
        let split = |pattern: &str| {
            json!({"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": pattern}, "behavior": "Isolated", "invert": false},
                byte_level(false)]})
        };
        let pre = self.string("tokenizer.ggml.pre").unwrap_or_default();
        let (normalizer, pre_tokenizer) = match pre.as_str() {
            "smollm" => (
                Json::Null,
                json!({"type": "Sequence", "pretokenizers": [
                    {"type": "Digits", "individual_digits": true}, byte_level(true)]}),
            ),
            "llama-bpe" | "llama3" | "smaug-bpe" => (Json::Null, split(LLAMA3)),
            "qwen2" | "deepseek-r1-qwen" => (json!({"type": "NFC"}), split(QWEN2)),
            _ => (Json::Null, byte_level(true)),
        };
        let add_bos = matches!(
            self.get("tokenizer.ggml.add_bos_token"),
            Some(Value::Bool(true))
        );
        let bos = self.opt_usize("tokenizer.ggml.bos_token_id")?;
        let post_processor = match (add_bos, bos.and_then(|b| tokens.get(b))) {
            (true, Some(bos_token)) => json!({
                "type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos_token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos_token, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                         {"SpecialToken": {"id": bos_token, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos_token.as_str(): {"id": bos_token, "ids": [bos], "tokens": [bos_token]}}
            }),
            _ => {
                json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
            }
        };
        Ok(json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": normalizer,
            "pre_tokenizer": pre_tokenizer,
            "post_processor": post_processor,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null, "fuse_unk": false,
                "byte_fallback": false, "ignore_merges": false, "vocab": vocab, "merges": merges}
        }))
    }

    /// Adds the Hugging Face files the metadata describes to `files` (those it lacks).
    pub fn complete(&self, files: &mut ModelFiles) -> Result<()> {
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let token = |key: &str| -> Result<Option<(u32, String)>> {
            Ok(self
                .opt_usize(key)?
                .and_then(|i| tokens.get(i).map(|t| (i as u32, t.clone()))))
        };
        let (bos, eos) = (
            token("tokenizer.ggml.bos_token_id")?,
            token("tokenizer.ggml.eos_token_id")?,
        );
        let mut eos_ids: Vec<u32> = eos.iter().map(|(i, _)| *i).collect();
        if let Some((eot, _)) = token("tokenizer.ggml.eot_token_id")?
            && !eos_ids.contains(&eot)
        {
            eos_ids.push(eot);
        }
        let mut add = |name: &str, value: Json| -> Result<()> {
            if files.get(name).is_none() {
                let bytes = serde_json::to_vec(&value).map_err(|e| invalid(e.to_string()))?;
                files.insert(name, bytes);
            }
            Ok(())
        };
        add("config.json", self.config(tokens.len())?)?;
        add("tokenizer.json", self.tokenizer(&tokens)?)?;
        let mut tok_cfg = json!({
            "bos_token": bos.as_ref().map(|b| &b.1),
            "eos_token": eos.as_ref().map(|e| &e.1),
        });
        if let Some(t) = self.string("tokenizer.chat_template") {
            tok_cfg["chat_template"] = json!(t);
        }
        add("tokenizer_config.json", tok_cfg)?;
        add(
            "generation_config.json",
            json!({"bos_token_id": bos.map(|b| b.0), "eos_token_id": eos_ids}),
        )?;
        Ok(())
    }

    /// The GGUF name of a Hugging Face tensor name.
    fn gguf_name(name: &str) -> Option<String> {
        let fixed = match name {
            "model.embed_tokens.weight" => Some("token_embd.weight"),
            "model.norm.weight" => Some("output_norm.weight"),
            "lm_head.weight" => Some("output.weight"),
            _ => None,
        };
        if let Some(f) = fixed {
            return Some(f.to_owned());
        }
        let rest = name.strip_prefix("model.layers.")?;
        let (n, rest) = rest.split_once('.')?;
        let (module, suffix) = rest.rsplit_once('.')?;
        let gguf = match module {
            "input_layernorm" => "attn_norm",
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.o_proj" => "attn_output",
            "self_attn.q_norm" => "attn_q_norm",
            "self_attn.k_norm" => "attn_k_norm",
            "post_attention_layernorm" => "ffn_norm",
            "mlp.gate_proj" => "ffn_gate",
            "mlp.up_proj" => "ffn_up",
            "mlp.down_proj" => "ffn_down",
            _ => return None,
        };
        Some(format!("blk.{n}.{gguf}.{suffix}"))
    }

    /// Whether the file holds a tensor (by its Hugging Face name).
    pub fn contains(&self, name: &str) -> bool {
        Self::gguf_name(name).is_some_and(|g| self.content.tensor_infos.contains_key(&g))
    }

    /// A tensor by its Hugging Face name, dequantized, with its shape checked.
    pub fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let missing = || Error::MissingTensor {
            file: GGUF_FILE.to_owned(),
            tensor: name.to_owned(),
        };
        let gguf = Self::gguf_name(name).ok_or_else(missing)?;
        let info = self.content.tensor_infos.get(&gguf).ok_or_else(missing)?;
        if info.shape.dims() != shape {
            return Err(Error::ShapeMismatch {
                file: GGUF_FILE.to_owned(),
                tensor: gguf,
                expected: shape.to_vec(),
                found: info.shape.dims().to_vec(),
            });
        }
        let device = candle_core::Device::Cpu;
        let q = info
            .read(
                &mut Cursor::new(self.bytes),
                self.content.tensor_data_offset,
                &device,
            )
            .map_err(|e| invalid(format!("{gguf}: {e}")))?;
        let mut data = q
            .dequantize(&device)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| invalid(format!("{gguf}: {e}")))?;
        // llama.cpp stores Llama's q/k rows of each head interleaved (pairs of the two rotary
        // halves); Hugging Face's layout has the halves one after the other.
        let heads = match (self.arch.as_str(), name.rsplit_once('.')) {
            ("llama", Some((module, _))) if module.ends_with("self_attn.q_proj") => self.heads,
            ("llama", Some((module, _))) if module.ends_with("self_attn.k_proj") => self.kv_heads,
            _ => 0,
        };
        if heads > 0 {
            data = unpermute(&data, shape, heads);
        }
        Ok(data)
    }
}

/// Undoes llama.cpp's `permute(w, n_head)`: within each head, stored row `2i + j` is Hugging
/// Face's row `j·half + i`.
fn unpermute(data: &[f32], shape: &[usize], heads: usize) -> Vec<f32> {
    let rows = shape[0];
    let cols = data.len() / rows.max(1);
    let d = rows / heads;
    let half = d / 2;
    let mut out = vec![0f32; data.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let from = (h * d + 2 * i + j) * cols;
                let to = (h * d + j * half + i) * cols;
                out[to..to + cols].copy_from_slice(&data[from..from + cols]);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The inverse of llama.cpp's permutation (`convert_hf_to_gguf.py`: `reshape(n_head, 2,
    /// d/2, cols).swapaxes(1, 2)`), written out from its definition.
    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        let (heads, d, cols) = (3, 8, 5);
        let hf: Vec<f32> = (0..heads * d * cols).map(|i| i as f32).collect();
        let mut stored = vec![0f32; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..d / 2 {
                    // permuted[h][i][j] = hf[h][j][i]
                    let to = (h * d + i * 2 + j) * cols;
                    let from = (h * d + j * (d / 2) + i) * cols;
                    stored[to..to + cols].copy_from_slice(&hf[from..from + cols]);
                }
            }
        }
        assert_eq!(unpermute(&stored, &[heads * d, cols], heads), hf);
    }

    #[test]
    fn names_map_to_llama_cpp_names() {
        assert_eq!(
            Gguf::gguf_name("model.layers.3.self_attn.o_proj.weight").as_deref(),
            Some("blk.3.attn_output.weight")
        );
        assert_eq!(
            Gguf::gguf_name("model.layers.0.self_attn.q_proj.bias").as_deref(),
            Some("blk.0.attn_q.bias")
        );
        assert_eq!(
            Gguf::gguf_name("model.embed_tokens.weight").as_deref(),
            Some("token_embd.weight")
        );
        assert_eq!(Gguf::gguf_name("model.layers.0.mlp.experts.0.weight"), None);
    }

    #[test]
    fn garbage_is_a_typed_error() {
        for bytes in [
            &b""[..],
            b"GGUF",
            b"GGUF\x03\0\0\0\xff\xff\xff\xff\xff\xff\xff\xff\0\0\0\0\0\0\0\0",
        ] {
            let e = Gguf::parse(bytes).expect_err("refused");
            assert_eq!(e.code(), "invalid_weights");
        }
    }
}
