//! [`Model`]: any loaded model (text encoder, image classifier, text generator), as the architecture registry resolves
//! `config.json`.

use serde::Serialize;

use crate::device::{Device, Precision};
use crate::engine::LoadOptions;
use crate::error::Result;
use crate::files::ModelFiles;
use crate::generator::GeneratorModel;
use crate::model::{EmbeddingDefaults, TextModel};
use crate::models::{CONFIG_FILE, ModelConfig};
use crate::registry::{self, Loader};
use crate::task::Task;
use crate::vision::ImageModel;
use crate::weights::gguf::GGUF_FILE;

/// A loaded model: a text encoder or an image classifier.
#[derive(Debug)]
#[non_exhaustive]
pub enum Model {
    /// Text pipelines (feature extraction, text and token classification).
    Text(Box<TextModel>),
    /// Image classification.
    Image(Box<ImageModel>),
    /// Text generation.
    Generator(Box<GeneratorModel>),
}

/// What a host shows about a loaded model (`amphi_model_info`, `GET /v1/models`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// The device it runs on.
    pub device: Device,
    /// The weights' precision.
    pub precision: Precision,
    /// The tasks it can run.
    pub tasks: Vec<Task>,
    /// `config.json`'s `architectures`.
    pub architectures: Vec<String>,
    /// Label names of the classification head (empty for bare encoders).
    pub labels: Vec<String>,
    /// Text models: the hidden size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden_size: Option<usize>,
    /// Text models: the default maximum sequence length in tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Text models: the sentence-embedding defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub embedding_defaults: Option<EmbeddingDefaults>,
    /// Image models: the limit on decoded pixels per image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_image_pixels: Option<u64>,
    /// Text generators: whether the model folder has a chat template (requests may send
    /// `messages`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chat_template: Option<bool>,
}

impl Model {
    /// Loads a model folder's files as the architecture `config.json` names (`config.json` is
    /// parsed once, here).
    pub fn load(mut files: ModelFiles, options: &LoadOptions) -> Result<Self> {
        // A GGUF file brings its config, tokenizer and chat template in its metadata.
        if let Some(bytes) = files.take(GGUF_FILE) {
            crate::weights::gguf::Gguf::parse(&bytes)?.complete(&mut files)?;
            files.insert(GGUF_FILE, bytes);
        }
        let config = ModelConfig::parse(files.require(CONFIG_FILE)?)?;
        let resolved = registry::resolve(&config)?;
        let head = resolved.class.head;
        Ok(match resolved.architecture.loader {
            Loader::Text(parse) => Model::Text(Box::new(TextModel::load_parsed(
                &config,
                head,
                &*parse(&config, head)?,
                files,
                options,
            )?)),
            Loader::Image(kind) => Model::Image(Box::new(ImageModel::load_parsed(
                &config,
                kind,
                resolved.class.name,
                files,
                options,
            )?)),
            Loader::Decoder => Model::Generator(Box::new(GeneratorModel::load_parsed(
                &config,
                resolved.architecture.model_type,
                resolved.class.name,
                files,
                options,
            )?)),
        })
    }

    /// The device the model runs on (never [`Device::Auto`]).
    pub fn device(&self) -> Device {
        match self {
            Model::Text(m) => m.device(),
            Model::Image(m) => m.device(),
            Model::Generator(m) => m.device(),
        }
    }

    /// The precision of the weights.
    pub fn precision(&self) -> Precision {
        match self {
            Model::Text(m) => m.precision(),
            Model::Image(m) => m.precision(),
            Model::Generator(m) => m.precision(),
        }
    }

    /// The GPU adapter's name, when the model runs on a GPU.
    pub fn adapter(&self) -> Option<&str> {
        match self {
            Model::Text(m) => m.adapter(),
            Model::Image(m) => m.adapter(),
            Model::Generator(m) => m.adapter(),
        }
    }

    /// Label names of the classification head.
    pub fn labels(&self) -> &[String] {
        match self {
            Model::Text(m) => m.labels(),
            Model::Image(m) => m.labels(),
            Model::Generator(_) => &[],
        }
    }

    /// The tasks this model can run.
    pub fn tasks(&self) -> Vec<Task> {
        match self {
            Model::Text(m) => m.tasks(),
            Model::Image(_) => vec![Task::ImageClassification],
            Model::Generator(_) => vec![Task::TextGeneration],
        }
    }

    /// The text model, if it is one.
    pub fn as_text(&self) -> Option<&TextModel> {
        match self {
            Model::Text(m) => Some(m),
            _ => None,
        }
    }

    /// The image model, if it is one.
    pub fn as_image(&self) -> Option<&ImageModel> {
        match self {
            Model::Image(m) => Some(m),
            _ => None,
        }
    }

    /// The text generator, if it is one.
    pub fn as_generator(&self) -> Option<&GeneratorModel> {
        match self {
            Model::Generator(m) => Some(m),
            _ => None,
        }
    }

    /// A description for hosts.
    pub fn info(&self) -> ModelInfo {
        let mut info = ModelInfo {
            device: self.device(),
            precision: self.precision(),
            tasks: self.tasks(),
            architectures: Vec::new(),
            labels: self.labels().to_vec(),
            hidden_size: None,
            max_length: None,
            embedding_defaults: None,
            max_image_pixels: None,
            chat_template: None,
        };
        match self {
            Model::Text(m) => {
                info.architectures = m.architectures().to_vec();
                info.hidden_size = Some(m.hidden_size());
                info.max_length = Some(m.max_length());
                info.embedding_defaults = Some(m.embedding_defaults());
            }
            Model::Image(m) => {
                info.architectures = vec![m.architecture().to_owned()];
                info.max_image_pixels = Some(m.max_image_pixels());
            }
            Model::Generator(m) => {
                info.architectures = vec![m.architecture().to_owned()];
                info.max_length = Some(m.context());
                info.chat_template = Some(m.has_chat_template());
            }
        }
        info
    }
}
