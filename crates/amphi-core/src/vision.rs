//! A loaded image classifier: its preprocessing (`preprocessor_config.json`), its weights on a
//! backend, and its labels. Immutable once loaded, like [`crate::TextModel`].

use std::sync::Arc;

use crate::backend::cpu::Cpu;
use crate::backend::gpu::Gpu;
use crate::backend::{Backend, Fetched};
use crate::device::{Device, Precision};
use crate::engine::{Engine, LoadOptions, on_device};
use crate::error::{Error, Result};
use crate::files::ModelFiles;
use crate::image::{DEFAULT_MAX_IMAGE_PIXELS, Image, Preprocessor};
use crate::models::efficientnet::{self, EfficientNet};
use crate::models::vit::{self, Vit};
use crate::models::{CONFIG_FILE, ModelConfig};
use crate::registry::{self, ImageKind, Loader};
use crate::weights::{WEIGHTS_FILE, Weights};

const PREPROCESSOR_FILE: &str = "preprocessor_config.json";

/// A parsed image `config.json`.
enum ArchConfig {
    Vit(vit::Config),
    EfficientNet(efficientnet::Config),
}

impl ArchConfig {
    fn parse(config: &ModelConfig, kind: ImageKind) -> Result<Self> {
        Ok(match kind {
            ImageKind::EfficientNet => ArchConfig::EfficientNet(config.typed()?),
            ImageKind::Vit => ArchConfig::Vit(config.typed()?),
        })
    }

    fn image_size(&self) -> usize {
        match self {
            ArchConfig::Vit(c) => c.image_size,
            ArchConfig::EfficientNet(c) => c.image_size,
        }
    }
}

/// An architecture over one backend.
enum Arch<B: Backend> {
    Vit(Vit<B>),
    EfficientNet(EfficientNet<B>),
}

impl<B: Backend> Arch<B> {
    fn load(be: &B, weights: &Weights, config: &ArchConfig) -> Result<Self> {
        Ok(match config {
            ArchConfig::Vit(cfg) => Arch::Vit(Vit::load(be, weights, cfg)?),
            ArchConfig::EfficientNet(cfg) => {
                Arch::EfficientNet(EfficientNet::load(be, weights, cfg)?)
            }
        })
    }

    fn labels(&self) -> &[String] {
        match self {
            Arch::Vit(m) => m.labels(),
            Arch::EfficientNet(m) => m.labels(),
        }
    }

    fn logits(&self, be: &B, pixels: &[f32], batch: usize) -> Result<Fetched> {
        let out = match self {
            Arch::Vit(m) => m.logits(be, pixels, batch)?,
            Arch::EfficientNet(m) => m.logits(be, pixels, batch)?,
        };
        be.read_start(&out)
    }
}

/// Checks that the preprocessing always yields `size`×`size` images, whatever the input.
fn fixed_input(pre: &Preprocessor, size: usize) -> Result<()> {
    for input in [(997, 631), (631, 997), (size, size)] {
        let out = pre.output_size(input);
        if out != (size, size) {
            return Err(Error::InvalidConfig {
                file: PREPROCESSOR_FILE.to_owned(),
                message: format!(
                    "a {}×{} image becomes {}×{}; the model takes {size}×{size}",
                    input.0, input.1, out.0, out.1
                ),
            });
        }
    }
    Ok(())
}

/// A loaded image-classification model.
pub struct ImageModel {
    engine: Engine<Arch<Cpu>, Arch<Gpu>>,
    preprocessor: Preprocessor,
    architecture: &'static str,
    max_pixels: u64,
}

impl std::fmt::Debug for ImageModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageModel")
            .field("device", &self.device())
            .field("architecture", &self.architecture)
            .field("labels", &self.labels().len())
            .finish_non_exhaustive()
    }
}

impl ImageModel {
    /// Loads `config.json` (an image architecture of the registry), `preprocessor_config.json`
    /// and `model.safetensors` from `files`.
    pub fn load(files: ModelFiles, options: &LoadOptions) -> Result<Self> {
        let config = ModelConfig::parse(files.require(CONFIG_FILE)?)?;
        let resolved = registry::resolve(&config)?;
        match resolved.architecture.loader {
            Loader::Image(kind) => {
                Self::load_parsed(&config, kind, resolved.class.name, files, options)
            }
            Loader::Text(_) | Loader::Decoder => Err(Error::UnsupportedTask {
                task: "image-classification".to_owned(),
                reason: format!(
                    "config.json describes no image model ({})",
                    resolved.class.name
                ),
            }),
        }
    }

    /// Loads an image model whose `config.json` the registry has resolved.
    pub(crate) fn load_parsed(
        config: &ModelConfig,
        kind: ImageKind,
        architecture: &'static str,
        mut files: ModelFiles,
        options: &LoadOptions,
    ) -> Result<Self> {
        let config = ArchConfig::parse(config, kind)?;
        let preprocessor = Preprocessor::from_json(files.require(PREPROCESSOR_FILE)?)?;
        fixed_input(&preprocessor, config.image_size())?;
        let bytes = files.take(WEIGHTS_FILE).ok_or_else(|| Error::MissingFile {
            file: WEIGHTS_FILE.to_owned(),
        })?;
        let weights = Weights::parse(&bytes)?;
        let cpu = || -> Result<Engine<_, _>> {
            Ok(Engine::Cpu(Box::new(Arch::load(&Cpu, &weights, &config)?)))
        };
        let gpu = |host: &Arc<dyn amphi_gpu::GpuHost>| -> Result<Engine<_, _>> {
            let be = Gpu::new(host.clone(), options.precision)?;
            Ok(Engine::Gpu(
                Box::new(Arch::load(&be, &weights, &config)?),
                be,
            ))
        };
        let engine = on_device(options, cpu, gpu)?;
        Ok(Self {
            engine,
            preprocessor,
            architecture,
            max_pixels: options.max_image_pixels.unwrap_or(DEFAULT_MAX_IMAGE_PIXELS),
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

    /// The architecture (`ViTForImageClassification`, …).
    pub fn architecture(&self) -> &str {
        self.architecture
    }

    /// The classifier's labels, in id order.
    pub fn labels(&self) -> &[String] {
        match &self.engine {
            Engine::Cpu(m) => m.labels(),
            Engine::Gpu(m, _) => m.labels(),
        }
    }

    /// The preprocessing the model folder declares.
    pub fn preprocessor(&self) -> &Preprocessor {
        &self.preprocessor
    }

    /// The limit on decoded pixels per image.
    pub fn max_image_pixels(&self) -> u64 {
        self.max_pixels
    }

    /// The classification logits `[images, labels]` of preprocessed `pixel_values`
    /// (`[images, 3, height, width]`, as transformers' image processors produce them).
    pub fn logits(&self, pixel_values: &[f32], images: usize) -> Result<Vec<f32>> {
        match self.logits_start(pixel_values, images)? {
            Fetched::Ready(data) => Ok(data),
            Fetched::Pending(_) => Err(Error::Backend {
                message: "this host reads GPU buffers asynchronously: use Pipeline::start"
                    .to_owned(),
            }),
        }
    }

    pub(crate) fn logits_start(&self, pixels: &[f32], images: usize) -> Result<Fetched> {
        crate::profile::timed("model", || match &self.engine {
            Engine::Cpu(m) => m.logits(&Cpu, pixels, images),
            Engine::Gpu(m, be) => m.logits(be, pixels, images),
        })
    }

    /// The `pixel_values` of one image (its resize bounded by `max_image_pixels`).
    pub(crate) fn pixel_values(&self, image: &Image) -> Result<Vec<f32>> {
        crate::profile::timed("preprocess", || {
            self.preprocessor.pixel_values(image, self.max_pixels)
        })
    }
}
