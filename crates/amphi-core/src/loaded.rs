//! [`Model`]: any loaded model, text or image, chosen from `config.json`.

use serde::Serialize;

use crate::error::Result;
use crate::files::ModelFiles;
use crate::model::{Device, EmbeddingDefaults, LoadOptions, Precision, TextModel};
use crate::pipelines::Task;
use crate::vision::{self, ImageModel};

/// A loaded model: a BERT-family text model or an image classifier.
#[derive(Debug)]
pub enum Model {
    /// Text pipelines (feature extraction, text and token classification).
    Text(Box<TextModel>),
    /// Image classification.
    Image(Box<ImageModel>),
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
}

impl Model {
    /// Loads a model folder's files: an image model when `config.json` names a vision
    /// architecture (`ViTForImageClassification`), else a text model.
    pub fn load(files: ModelFiles, options: &LoadOptions) -> Result<Self> {
        if vision::is_image_model(files.require("config.json")?) {
            ImageModel::load(files, options).map(|m| Model::Image(Box::new(m)))
        } else {
            TextModel::load(files, options).map(|m| Model::Text(Box::new(m)))
        }
    }

    /// The device the model runs on (never [`Device::Auto`]).
    pub fn device(&self) -> Device {
        match self {
            Model::Text(m) => m.device(),
            Model::Image(m) => m.device(),
        }
    }

    /// The precision of the weights.
    pub fn precision(&self) -> Precision {
        match self {
            Model::Text(m) => m.precision(),
            Model::Image(m) => m.precision(),
        }
    }

    /// The GPU adapter's name, when the model runs on a GPU.
    pub fn adapter(&self) -> Option<&str> {
        match self {
            Model::Text(m) => m.adapter(),
            Model::Image(m) => m.adapter(),
        }
    }

    /// Label names of the classification head.
    pub fn labels(&self) -> &[String] {
        match self {
            Model::Text(m) => m.labels(),
            Model::Image(m) => m.labels(),
        }
    }

    /// The tasks this model can run.
    pub fn tasks(&self) -> Vec<Task> {
        match self {
            Model::Text(m) => m.tasks(),
            Model::Image(_) => vec![Task::ImageClassification],
        }
    }

    /// The text model, if it is one.
    pub fn as_text(&self) -> Option<&TextModel> {
        match self {
            Model::Text(m) => Some(m),
            Model::Image(_) => None,
        }
    }

    /// The image model, if it is one.
    pub fn as_image(&self) -> Option<&ImageModel> {
        match self {
            Model::Image(m) => Some(m),
            Model::Text(_) => None,
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
        };
        match self {
            Model::Text(m) => {
                info.architectures = m.config().architectures.clone();
                info.hidden_size = Some(m.config().hidden_size);
                info.max_length = Some(m.max_length());
                info.embedding_defaults = Some(m.embedding_defaults());
            }
            Model::Image(m) => {
                info.architectures = vec![m.architecture().to_owned()];
                info.max_image_pixels = Some(m.max_image_pixels());
            }
        }
        info
    }
}
