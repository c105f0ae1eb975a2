//! A loaded text model: its architecture (from the registry), tokenizer, weights on a backend,
//! and the defaults that the model folder declares (sentence-transformers pooling, maximum
//! sequence length).
//!
//! A `TextModel` is immutable once loaded; every request keeps its own state on the stack, so one
//! model can serve many requests (and be shared behind an `Arc` by hosts that have threads).

use serde::Deserialize;

use std::sync::Arc;

use crate::backend::cpu::Cpu;
use crate::backend::gpu::Gpu;
use crate::backend::{Backend, Fetched, Reduce};
pub use crate::device::{Device, Precision};
pub use crate::engine::LoadOptions;
use crate::engine::{Engine, on_device};
use crate::error::{Error, Result};
use crate::files::ModelFiles;
use crate::models::{
    CONFIG_FILE, Encoded, Head, ModelConfig, TextArchitecture, TextEncoder, TextSpec,
};
use crate::registry::{self, Loader};
use crate::task::Task;
use crate::tokenizer::{TOKENIZER_FILE, TextInput, TextTokenizer, TokenizedBatch};
use crate::weights::{WEIGHTS_FILE, Weights};

/// Sentence-embedding pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// No pooling: one vector per token.
    None,
    /// Mean over the tokens of the input (padding excluded).
    Mean,
    /// The `[CLS]` token's vector.
    Cls,
}

impl From<Pooling> for Option<Reduce> {
    fn from(p: Pooling) -> Self {
        match p {
            Pooling::None => None,
            Pooling::Mean => Some(Reduce::MaskedMean),
            Pooling::Cls => Some(Reduce::First),
        }
    }
}

/// Defaults declared by a sentence-transformers model folder (`modules.json`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EmbeddingDefaults {
    /// The pooling of its `Pooling` module, if it has one.
    pub pooling: Option<Pooling>,
    /// Whether it has a `Normalize` module.
    pub normalize: bool,
}

/// A loaded text model (an encoder of the registry: BERT, RoBERTa, XLM-RoBERTa).
pub struct TextModel {
    engine: Engine<dyn TextEncoder<Cpu>, dyn TextEncoder<Gpu>>,
    tokenizer: TextTokenizer,
    spec: TextSpec,
    architectures: Vec<String>,
    head: Head,
    max_length: usize,
    /// The loader's `max_length`, which requests cannot exceed.
    max_length_cap: Option<usize>,
    embedding: EmbeddingDefaults,
}

impl std::fmt::Debug for TextModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextModel")
            .field("device", &self.device())
            .field("architectures", &self.architectures)
            .field("hidden_size", &self.spec.hidden_size)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct StModule {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    path: String,
}

#[derive(Deserialize)]
struct StPooling {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

#[derive(Deserialize)]
struct StConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

fn embedding_defaults(files: &ModelFiles) -> Result<EmbeddingDefaults> {
    let Some(modules) = files.optional_json::<Vec<StModule>>("modules.json")? else {
        return Ok(EmbeddingDefaults::default());
    };
    let mut out = EmbeddingDefaults::default();
    for m in &modules {
        match m.kind.rsplit('.').next().unwrap_or("") {
            "Pooling" => {
                let name = if m.path.is_empty() {
                    "config.json".to_owned()
                } else {
                    format!("{}/config.json", m.path)
                };
                let cfg: StPooling = files.json(&name)?;
                out.pooling = Some(
                    match (
                        cfg.pooling_mode_cls_token,
                        cfg.pooling_mode_mean_tokens,
                        cfg.pooling_mode_max_tokens || cfg.pooling_mode_mean_sqrt_len_tokens,
                    ) {
                        (true, false, false) => Pooling::Cls,
                        (false, true, false) => Pooling::Mean,
                        _ => {
                            return Err(Error::InvalidConfig {
                                file: name,
                                message: "only one of pooling_mode_cls_token and \
                                          pooling_mode_mean_tokens is supported"
                                    .to_owned(),
                            });
                        }
                    },
                );
            }
            "Normalize" => out.normalize = true,
            "Transformer" => {}
            other => {
                // A Dense or other module changes the embedding; ignoring it would give
                // vectors that differ from sentence-transformers without any error.
                return Err(Error::InvalidConfig {
                    file: "modules.json".to_owned(),
                    message: format!(
                        "sentence-transformers module `{other}` is not supported (only \
                         Transformer, Pooling and Normalize)"
                    ),
                });
            }
        }
    }
    Ok(out)
}

impl TextModel {
    /// Loads a text model from its files (`config.json` must name a text architecture of the
    /// registry). `model.safetensors` is taken out of `files` and dropped as soon as the
    /// weights are converted, so the caller need not keep a second copy alive.
    pub fn load(files: ModelFiles, options: &LoadOptions) -> Result<Self> {
        let config = ModelConfig::parse(files.require(CONFIG_FILE)?)?;
        let resolved = registry::resolve(&config)?;
        match resolved.architecture.loader {
            Loader::Text(parse) => Self::load_parsed(
                &config,
                resolved.class.head,
                &*parse(&config, resolved.class.head)?,
                files,
                options,
            ),
            Loader::Image(_) | Loader::Decoder => Err(Error::UnsupportedTask {
                task: "text".to_owned(),
                reason: format!(
                    "config.json describes no text encoder ({})",
                    resolved.class.name
                ),
            }),
        }
    }

    /// Loads a text model whose `config.json` the registry has resolved and parsed.
    pub(crate) fn load_parsed(
        config: &ModelConfig,
        head: Head,
        arch: &dyn TextArchitecture,
        mut files: ModelFiles,
        options: &LoadOptions,
    ) -> Result<Self> {
        let spec = arch.spec();
        let tokenizer =
            TextTokenizer::from_bytes(files.require(TOKENIZER_FILE)?, spec.pad_token_id)?;
        let embedding = embedding_defaults(&files)?;

        let declared = files
            .optional_json::<StConfig>("sentence_bert_config.json")?
            .and_then(|c| c.max_seq_length)
            .or(files
                .optional_json::<TokenizerConfig>("tokenizer_config.json")?
                .and_then(|c| c.model_max_length)
                .filter(|m| (1.0..1e6).contains(m))
                .map(|m| m as usize));
        let limit = spec.max_length;
        let max_length = match options.max_length {
            Some(m) if m > limit => {
                return Err(Error::invalid_input(format!(
                    "max_length {m} exceeds the model's limit of {limit} tokens"
                )));
            }
            Some(m) => m,
            None => declared.map_or(limit, |d| d.min(limit)),
        };

        let weights_bytes = files.take(WEIGHTS_FILE).ok_or_else(|| Error::MissingFile {
            file: WEIGHTS_FILE.to_owned(),
        })?;
        let weights = Weights::parse(&weights_bytes)?;
        let gpu = |host: &Arc<dyn amphi_gpu::GpuHost>| -> Result<Engine<_, _>> {
            let be = Gpu::new(host.clone(), options.precision)?;
            Ok(Engine::Gpu(arch.build_gpu(&be, &weights)?, be))
        };
        let cpu = || -> Result<Engine<_, _>> { Ok(Engine::Cpu(arch.build_cpu(&weights)?)) };
        let engine = on_device(options, cpu, gpu)?;
        drop(weights);
        drop(weights_bytes);

        Ok(Self {
            engine,
            tokenizer,
            spec,
            architectures: config.architectures.clone(),
            head,
            max_length,
            max_length_cap: options.max_length,
            embedding,
        })
    }

    /// The device the model runs on (never [`Device::Auto`]).
    pub fn device(&self) -> Device {
        self.engine.device()
    }

    /// The precision the weights are stored in: [`Precision::F16`] only on a GPU with
    /// `shader-f16` when it was asked for.
    pub fn precision(&self) -> Precision {
        self.engine.precision()
    }

    /// The GPU adapter's name, when the model runs on a GPU.
    pub fn adapter(&self) -> Option<&str> {
        self.engine.adapter()
    }

    /// `config.json`'s `architectures`.
    pub fn architectures(&self) -> &[String] {
        &self.architectures
    }

    /// The width of the encoder's hidden states.
    pub fn hidden_size(&self) -> usize {
        self.spec.hidden_size
    }

    /// `config.json`'s `problem_type`.
    pub(crate) fn problem_type(&self) -> Option<&str> {
        self.spec.problem_type.as_deref()
    }

    /// The default maximum sequence length in tokens.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Label names of the classification head (empty for bare encoders).
    pub fn labels(&self) -> &[String] {
        match &self.engine {
            Engine::Cpu(m) => m.labels(),
            Engine::Gpu(m, _) => m.labels(),
        }
    }

    /// The tasks this model can run: `feature-extraction` always, plus its head's task.
    pub fn tasks(&self) -> Vec<Task> {
        self.head.tasks().to_vec()
    }

    /// The sentence-embedding defaults the model folder declares.
    pub fn embedding_defaults(&self) -> EmbeddingDefaults {
        self.embedding
    }

    pub(crate) fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    pub(crate) fn tokenize(
        &self,
        inputs: &[TextInput],
        max_length: Option<usize>,
        max_input_bytes: usize,
    ) -> Result<TokenizedBatch> {
        let max_length = match max_length {
            Some(m) if m > self.spec.max_length => {
                return Err(Error::invalid_input(format!(
                    "max_length {m} exceeds the model's limit of {} tokens",
                    self.spec.max_length
                )));
            }
            Some(m) => m.min(self.max_length_cap.unwrap_or(m)),
            None => self.max_length,
        };
        crate::profile::timed("tokenize", || {
            self.tokenizer
                .encode_batch(inputs, max_length, max_input_bytes)
        })
    }

    /// The model's raw outputs for a padded batch, like a Hugging Face model's forward: the
    /// classification logits (`[batch, labels]` or `[batch, seq, labels]`), the BERT
    /// `pooler_output` (`[batch, hidden]`) or `last_hidden_state` (`[batch, seq, hidden]`).
    pub fn raw_output(&self, inputs: &[TextInput], which: RawOutput) -> Result<RawTensor> {
        let batch = self.tokenize(inputs, None, usize::MAX)?;
        let shape = batch.input.shape;
        let (what, dims) = match which {
            RawOutput::LastHiddenState => (
                Forward::Hidden {
                    reduce: None,
                    normalize: false,
                },
                vec![shape.batch, shape.seq, self.spec.hidden_size],
            ),
            RawOutput::PoolerOutput => (Forward::Pooler, vec![shape.batch, self.spec.hidden_size]),
            RawOutput::Logits => {
                let labels = self.labels().len();
                let dims = match self.head {
                    Head::TokenClassification => vec![shape.batch, shape.seq, labels],
                    _ => vec![shape.batch, labels],
                };
                (Forward::Logits, dims)
            }
        };
        let data = self.forward(&batch, what)?;
        Ok(RawTensor { shape: dims, data })
    }

    /// Runs the encoder and the requested head, reading back only the final tensor.
    pub(crate) fn forward(&self, batch: &TokenizedBatch, what: Forward) -> Result<Vec<f32>> {
        match self.forward_start(batch, what)? {
            Fetched::Ready(data) => Ok(data),
            Fetched::Pending(_) => Err(Error::Backend {
                message: "this host reads GPU buffers asynchronously: use Pipeline::start"
                    .to_owned(),
            }),
        }
    }

    /// [`TextModel::forward`] whose readback may finish later.
    pub(crate) fn forward_start(&self, batch: &TokenizedBatch, what: Forward) -> Result<Fetched> {
        match &self.engine {
            Engine::Cpu(m) => run_forward(&Cpu, &**m, batch, what),
            Engine::Gpu(m, be) => run_forward(be, &**m, batch, what),
        }
    }
}

/// Which raw output [`TextModel::raw_output`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawOutput {
    /// The encoder's final hidden states.
    LastHiddenState,
    /// BERT's pooler: `tanh(dense(hidden[CLS]))`.
    PoolerOutput,
    /// The classification head's logits.
    Logits,
}

/// A dense row-major f32 tensor returned to the host.
#[derive(Debug, Clone, PartialEq)]
pub struct RawTensor {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// What a pipeline needs from the model, computed on the backend.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Forward {
    /// `last_hidden_state` (optionally pooled), optionally L2-normalised.
    Hidden {
        reduce: Option<Reduce>,
        normalize: bool,
    },
    /// `pooler_output`.
    Pooler,
    /// Classification logits.
    Logits,
}

fn run_forward<B: Backend>(
    be: &B,
    model: &dyn TextEncoder<B>,
    batch: &TokenizedBatch,
    what: Forward,
) -> Result<Fetched> {
    crate::interrupt::check()?;
    let enc: Encoded<B> = model.encode(be, &batch.input)?;
    let out = match what {
        Forward::Hidden { reduce, normalize } => {
            let x = match reduce {
                Some(how) => be.reduce(&enc.hidden, &enc.key_mask, enc.shape, how)?,
                None => enc.hidden,
            };
            if normalize { be.l2_normalize(&x)? } else { x }
        }
        Forward::Pooler => model
            .pool(be, &enc)?
            .ok_or_else(|| Error::UnsupportedTask {
                task: "pooler_output".to_owned(),
                reason: "the checkpoint has no pooler".to_owned(),
            })?,
        Forward::Logits => model.logits(be, &enc)?,
    };
    be.read_start(&out)
}
