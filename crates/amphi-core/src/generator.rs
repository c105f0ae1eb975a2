//! A loaded text generator: a decoder of the registry on a backend, its tokenizer, its
//! `generation_config.json` (stop tokens and default options) and its chat template.
//! Immutable once loaded and shared by every request; each request's state is a
//! [`Run`] (the KV caches), made by [`GeneratorModel::run`].

use std::sync::Arc;

use serde::Deserialize;

use crate::backend::cpu::Cpu;
use crate::backend::gpu::Gpu;
use crate::backend::{Backend, Fetched};
use crate::device::{Device, Precision};
use crate::engine::{Engine, LoadOptions, on_device};
use crate::error::{Error, Result};
use crate::files::ModelFiles;
use crate::generate::chat::ChatTemplate;
use crate::models::ModelConfig;
use crate::models::llama::{Decoder, DecoderState, Resolved};
use crate::tokenizer::{TOKENIZER_FILE, TextTokenizer};
use crate::weights::gguf::GGUF_FILE;
use crate::weights::{WEIGHTS_FILE, Weights};

const GENERATION_CONFIG: &str = "generation_config.json";
const TOKENIZER_CONFIG: &str = "tokenizer_config.json";

/// Past this many bytes of KV cache, a request is refused before it runs (wasm32 has 4 GiB
/// of memory in all; natively, a guard against a context that would exhaust memory).
#[cfg(target_arch = "wasm32")]
const DEFAULT_CACHE_BUDGET: usize = 1 << 30;
#[cfg(not(target_arch = "wasm32"))]
const DEFAULT_CACHE_BUDGET: usize = 8 << 30;

/// A token id, or a list of them (`eos_token_id` is either).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Ids {
    One(u32),
    Many(Vec<u32>),
}

impl Ids {
    fn to_vec(&self) -> Vec<u32> {
        match self {
            Ids::One(i) => vec![*i],
            Ids::Many(v) => v.clone(),
        }
    }
}

/// `generation_config.json`: the defaults a request's options fall back to.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GenerationConfig {
    eos_token_id: Option<Ids>,
    pub do_sample: Option<bool>,
    pub temperature: Option<f32>,
    pub top_k: Option<usize>,
    pub top_p: Option<f32>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub max_new_tokens: Option<usize>,
}

/// A special token as `tokenizer_config.json` writes it: a string or an added-token object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum SpecialToken {
    Text(String),
    Added { content: String },
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct TokenizerConfig {
    chat_template: Option<serde_json::Value>,
    bos_token: Option<SpecialToken>,
    eos_token: Option<SpecialToken>,
    pad_token: Option<SpecialToken>,
    unk_token: Option<SpecialToken>,
}

/// A loaded text-generation model.
pub struct GeneratorModel {
    engine: Engine<Decoder<Cpu>, Decoder<Gpu>>,
    pub(crate) tokenizer: TextTokenizer,
    pub(crate) generation: GenerationConfig,
    /// Token ids that end generation: `generation_config.json`'s `eos_token_id`, else
    /// `config.json`'s, else the tokenizer's `eos_token`.
    pub(crate) eos: Vec<u32>,
    pub(crate) chat: Option<ChatTemplate>,
    architecture: String,
    context: usize,
    cache_budget: usize,
}

impl std::fmt::Debug for GeneratorModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeneratorModel")
            .field("device", &self.device())
            .field("architecture", &self.architecture)
            .finish_non_exhaustive()
    }
}

/// One request's decoder state, on the model's backend.
pub(crate) enum Run {
    Cpu(DecoderState<Cpu>),
    Gpu(DecoderState<Gpu>),
}

impl GeneratorModel {
    /// Loads a decoder whose `config.json` the registry has resolved to `model_type`.
    pub(crate) fn load_parsed(
        config: &ModelConfig,
        model_type: &str,
        architecture: &str,
        mut files: ModelFiles,
        options: &LoadOptions,
    ) -> Result<Self> {
        let resolved = Resolved::new(config, model_type)?;
        let tokenizer = TextTokenizer::from_bytes(files.require(TOKENIZER_FILE)?, None)?;
        let generation: GenerationConfig =
            files.optional_json(GENERATION_CONFIG)?.unwrap_or_default();
        let tok_cfg: TokenizerConfig = files.optional_json(TOKENIZER_CONFIG)?.unwrap_or_default();
        let token = |t: &Option<SpecialToken>| match t {
            Some(SpecialToken::Text(s) | SpecialToken::Added { content: s }) => Some(s.clone()),
            None => None,
        };
        let mut eos = generation
            .eos_token_id
            .as_ref()
            .or(config_eos(config).as_ref())
            .map(Ids::to_vec)
            .unwrap_or_default();
        if eos.is_empty() {
            eos.extend(token(&tok_cfg.eos_token).and_then(|t| tokenizer.token_id(&t)));
        }
        let template = match files.get("chat_template.jinja") {
            Some(bytes) => {
                Some(
                    String::from_utf8(bytes.to_vec()).map_err(|_| Error::InvalidConfig {
                        file: "chat_template.jinja".to_owned(),
                        message: "not UTF-8".to_owned(),
                    })?,
                )
            }
            None => chat_template_source(tok_cfg.chat_template.as_ref())?,
        };
        let chat = template
            .map(|source| {
                let tokens = [
                    ("bos_token", &tok_cfg.bos_token),
                    ("eos_token", &tok_cfg.eos_token),
                    ("pad_token", &tok_cfg.pad_token),
                    ("unk_token", &tok_cfg.unk_token),
                ]
                .into_iter()
                .filter_map(|(name, t)| token(t).map(|t| (name, t)))
                .collect();
                ChatTemplate::new(source, tokens)
            })
            .transpose()?;

        let (bytes, gguf) = match (files.take(WEIGHTS_FILE), files.take(GGUF_FILE)) {
            (Some(b), _) => (b, false),
            (None, Some(b)) => (b, true),
            (None, None) => {
                return Err(Error::MissingFile {
                    file: WEIGHTS_FILE.to_owned(),
                });
            }
        };
        let weights = if gguf {
            Weights::parse_gguf(&bytes)?
        } else {
            Weights::parse(&bytes)?
        };
        let cpu = || -> Result<Engine<_, _>> {
            Ok(Engine::Cpu(Box::new(Decoder::load(
                &Cpu, &weights, &resolved,
            )?)))
        };
        let gpu = |host: &Arc<dyn amphi_gpu::GpuHost>| -> Result<Engine<_, _>> {
            let be = Gpu::new(host.clone(), options.precision)?;
            Ok(Engine::Gpu(
                Box::new(Decoder::load(&be, &weights, &resolved)?),
                be,
            ))
        };
        let engine = on_device(options, cpu, gpu)?;
        let context = options
            .max_length
            .map_or(resolved.cfg.max_position_embeddings, |m| {
                m.min(resolved.cfg.max_position_embeddings)
            });
        Ok(Self {
            engine,
            tokenizer,
            generation,
            eos,
            chat,
            architecture: architecture.to_owned(),
            context,
            cache_budget: DEFAULT_CACHE_BUDGET,
        })
    }

    /// The device the model runs on (never [`Device::Auto`]).
    pub fn device(&self) -> Device {
        self.engine.device()
    }

    /// The precision of the weights.
    pub fn precision(&self) -> Precision {
        self.engine.precision()
    }

    /// The GPU adapter's name, when the model runs on a GPU.
    pub fn adapter(&self) -> Option<&str> {
        self.engine.adapter()
    }

    /// The checkpoint class (`LlamaForCausalLM`, …).
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// The longest context in tokens (prompt and output), `max_position_embeddings` or the
    /// load option's `max_length` below it.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Whether the model folder has a chat template.
    pub fn has_chat_template(&self) -> bool {
        self.chat.is_some()
    }

    fn resolved(&self) -> &Resolved {
        match &self.engine {
            Engine::Cpu(d) => d.config(),
            Engine::Gpu(d, _) => d.config(),
        }
    }

    /// The vocabulary size (logits per step).
    pub(crate) fn vocab(&self) -> usize {
        self.resolved().cfg.vocab_size
    }

    /// Bytes of KV cache for `positions` positions of one sequence.
    pub(crate) fn cache_bytes(&self, positions: usize) -> usize {
        let r = self.resolved();
        2 * 4 * r.kv_heads * r.head_dim * r.cfg.num_hidden_layers * positions
    }

    /// A request's state for one sequence of up to `positions` positions, after checking the
    /// context and the memory budget.
    pub(crate) fn run(&self, positions: usize) -> Result<Run> {
        if positions > self.context {
            return Err(Error::InputTooLarge {
                message: format!(
                    "{positions} tokens (prompt and output); the model's context is {}",
                    self.context
                ),
            });
        }
        let need = self.cache_bytes(positions);
        if need > self.cache_budget {
            return Err(Error::InputTooLarge {
                message: format!(
                    "{positions} positions need {} MiB of KV cache, over the budget of {} MiB",
                    need >> 20,
                    self.cache_budget >> 20
                ),
            });
        }
        Ok(match &self.engine {
            Engine::Cpu(d) => Run::Cpu(d.start(&Cpu, 1, positions)?),
            Engine::Gpu(d, be) => Run::Gpu(d.start(be, 1, positions)?),
        })
    }

    /// Runs `ids` through the decoder and starts reading back the last token's logits.
    pub(crate) fn step(&self, run: &mut Run, ids: &[u32]) -> Result<Fetched> {
        let mask = vec![1; ids.len()];
        crate::profile::timed("model", || match (&self.engine, run) {
            (Engine::Cpu(d), Run::Cpu(s)) => Cpu.read_start(&d.forward(&Cpu, s, ids, &mask)?),
            (Engine::Gpu(d, be), Run::Gpu(s)) => be.read_start(&d.forward(be, s, ids, &mask)?),
            _ => Err(Error::Backend {
                message: "a run of another backend".to_owned(),
            }),
        })
    }
}

/// `config.json`'s `eos_token_id`.
fn config_eos(config: &ModelConfig) -> Option<Ids> {
    config
        .value()
        .get("eos_token_id")
        .and_then(|v| Ids::deserialize(v).ok())
}

/// `chat_template`: a string, or Transformers' list of named templates (the `default` one).
fn chat_template_source(v: Option<&serde_json::Value>) -> Result<Option<String>> {
    Ok(match v {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Array(named)) => named
            .iter()
            .find(|t| t["name"] == "default")
            .and_then(|t| t["template"].as_str())
            .map(str::to_owned),
        Some(_) => {
            return Err(Error::InvalidConfig {
                file: TOKENIZER_CONFIG.to_owned(),
                message: "chat_template is neither a string nor a list of templates".to_owned(),
            });
        }
    })
}
