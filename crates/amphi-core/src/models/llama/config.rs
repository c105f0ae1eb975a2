//! The decoder configs of the Llama family (`LlamaConfig`, `Qwen2Config`, `Qwen3Config`,
//! `Gemma3TextConfig`), read from `config.json`, and what each `model_type` changes in the
//! block ([`Flavor`]).

use serde::Deserialize;

use crate::backend::Activation;
use crate::backend::rope::{Rope, RopeParameters};
use crate::error::{Error, Result};
use crate::models::layers::activation;
use crate::models::{CONFIG_FILE, ModelConfig};

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Config {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    pub head_dim: Option<usize>,
    /// Llama's and Qwen's name for the MLP's activation.
    pub hidden_act: Option<String>,
    /// Gemma's.
    pub hidden_activation: Option<String>,
    pub rms_norm_eps: f64,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: Option<bool>,
    #[serde(default)]
    pub attention_bias: bool,
    pub sliding_window: Option<usize>,
    /// `full_attention` or `sliding_attention` per layer (Transformers 5; Gemma 3, Qwen2).
    pub layer_types: Option<Vec<String>>,
    /// Gemma 3: attention scores are scaled by `query_pre_attn_scalar^-½`.
    pub query_pre_attn_scalar: Option<f64>,
    pub attn_logit_softcapping: Option<f64>,
    pub final_logit_softcapping: Option<f64>,
}

/// What a `model_type` changes in the Llama block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Flavor {
    /// Biases on the query, key and value projections (Qwen2 always; Llama and Qwen3 when
    /// `attention_bias`).
    pub qkv_bias: bool,
    /// A bias on the output projection (Llama with `attention_bias`).
    pub o_bias: bool,
    /// RMSNorm over each query and key head before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Gemma 3's four norms per layer: the attention's and the MLP's outputs are normed
    /// before their residual adds.
    pub sandwich: bool,
    /// Gemma's RMSNorm multiplies by `1 + weight`: added to the stored weights at load.
    pub norm_offset: f32,
    /// Gemma multiplies the looked-up embeddings by `√hidden`.
    pub embed_scale: Option<f32>,
    /// Whether the LM head is the embedding table when the config does not say.
    pub tied_default: bool,
}

impl Flavor {
    pub fn of(model_type: &str, cfg: &Config) -> Option<Self> {
        let llama = Self {
            qkv_bias: cfg.attention_bias,
            o_bias: cfg.attention_bias,
            qk_norm: false,
            sandwich: false,
            norm_offset: 0.0,
            embed_scale: None,
            tied_default: false,
        };
        Some(match model_type {
            "llama" | "mistral" => llama,
            "qwen2" => Self {
                qkv_bias: true,
                o_bias: false,
                ..llama
            },
            "qwen3" => Self {
                qk_norm: true,
                o_bias: false,
                ..llama
            },
            "gemma3_text" => Self {
                qk_norm: true,
                sandwich: true,
                norm_offset: 1.0,
                embed_scale: Some((cfg.hidden_size as f32).sqrt()),
                tied_default: true,
                ..llama
            },
            _ => return None,
        })
    }
}

/// One layer's attention: its rotary embedding and sliding window.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LayerKind {
    pub rope: Rope,
    pub window: Option<usize>,
}

/// A config checked and resolved: sizes, activation, scale, per-layer kinds.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub cfg: Config,
    pub flavor: Flavor,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub act: Activation,
    pub scale: f32,
    pub tied: bool,
    /// Per layer: an index into `kinds`.
    pub layer_kind: Vec<usize>,
    pub kinds: Vec<LayerKind>,
}

fn invalid(message: String) -> Error {
    Error::InvalidConfig {
        file: CONFIG_FILE.to_owned(),
        message,
    }
}

impl Resolved {
    pub fn new(model: &ModelConfig, model_type: &str) -> Result<Self> {
        let cfg: Config = model.typed()?;
        let flavor = Flavor::of(model_type, &cfg)
            .ok_or_else(|| invalid(format!("{model_type} is not a Llama-family decoder")))?;
        let heads = cfg.num_attention_heads;
        let kv_heads = cfg.num_key_value_heads.unwrap_or(heads);
        let head_dim = cfg.head_dim.unwrap_or(cfg.hidden_size / heads.max(1));
        if heads == 0
            || kv_heads == 0
            || !heads.is_multiple_of(kv_heads)
            || head_dim == 0
            || cfg.hidden_size == 0
            || cfg.vocab_size == 0
            || cfg.intermediate_size == 0
            || cfg.num_hidden_layers == 0
        {
            return Err(invalid(format!(
                "{heads} attention heads over {kv_heads} key/value heads of {head_dim}, hidden {}, vocab {}",
                cfg.hidden_size, cfg.vocab_size
            )));
        }
        if cfg.attn_logit_softcapping.is_some() || cfg.final_logit_softcapping.is_some() {
            return Err(invalid(
                "logit soft-capping (Gemma 2) is not supported".to_owned(),
            ));
        }
        let act_name = cfg
            .hidden_activation
            .as_deref()
            .or(cfg.hidden_act.as_deref())
            .unwrap_or("silu");
        let act = activation(act_name)
            .ok_or_else(|| invalid(format!("hidden activation {act_name:?}")))?;
        let scale = match cfg.query_pre_attn_scalar {
            Some(s) if s > 0.0 => (1.0 / s.sqrt()) as f32,
            Some(s) => return Err(invalid(format!("query_pre_attn_scalar {s}"))),
            None => 1.0 / (head_dim as f32).sqrt(),
        };
        let types: Vec<String> = match &cfg.layer_types {
            Some(t) if t.len() == cfg.num_hidden_layers => t.clone(),
            Some(t) => {
                return Err(invalid(format!(
                    "{} layer_types for {} layers",
                    t.len(),
                    cfg.num_hidden_layers
                )));
            }
            None => vec!["full_attention".to_owned(); cfg.num_hidden_layers],
        };
        let (mut kinds, mut layer_kind) = (Vec::<(String, LayerKind)>::new(), Vec::new());
        for t in &types {
            if let Some(i) = kinds.iter().position(|(name, _)| name == t) {
                layer_kind.push(i);
                continue;
            }
            let window = match t.as_str() {
                "full_attention" => None,
                "sliding_attention" => {
                    Some(cfg.sliding_window.filter(|&w| w > 0).ok_or_else(|| {
                        invalid("sliding_attention layers without a sliding_window".to_owned())
                    })?)
                }
                other => return Err(invalid(format!("layer type {other:?}"))),
            };
            let params = RopeParameters::from_config(model.value(), Some(t))?;
            let rope = Rope::new(&params, head_dim, cfg.max_position_embeddings)?;
            layer_kind.push(kinds.len());
            kinds.push((t.clone(), LayerKind { rope, window }));
        }
        Ok(Self {
            tied: cfg.tie_word_embeddings.unwrap_or(flavor.tied_default),
            flavor,
            heads,
            kv_heads,
            head_dim,
            act,
            scale,
            layer_kind,
            kinds: kinds.into_iter().map(|(_, k)| k).collect(),
            cfg,
        })
    }
}
