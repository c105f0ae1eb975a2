//! Reading `model.safetensors` (or a GGUF file, `gguf.rs`) into backend tensors.
//!
//! The file's bytes are borrowed, never copied whole: each tensor is converted to f32 (from f32,
//! f16 or bf16; GGUF blocks dequantized) straight into the buffer handed to the backend, so at
//! most one converted copy of the weights exists beside the file's bytes, and the host can drop
//! the bytes right after load.

pub(crate) mod gguf;

use safetensors::{Dtype, SafeTensors};

use crate::backend::Backend;
use crate::error::{Error, Result};

pub(crate) const WEIGHTS_FILE: &str = "model.safetensors";

/// A parsed weights file: safetensors, or GGUF read by Hugging Face tensor names.
pub(crate) struct Weights<'a> {
    source: Source<'a>,
}

enum Source<'a> {
    Safetensors(SafeTensors<'a>),
    Gguf(Box<gguf::Gguf<'a>>),
}

impl<'a> Weights<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| Error::InvalidWeights {
            file: WEIGHTS_FILE.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Self {
            source: Source::Safetensors(tensors),
        })
    }

    /// A GGUF file's tensors.
    pub fn parse_gguf(bytes: &'a [u8]) -> Result<Self> {
        Ok(Self {
            source: Source::Gguf(Box::new(gguf::Gguf::parse(bytes)?)),
        })
    }

    fn tensors(&self) -> Option<&SafeTensors<'a>> {
        match &self.source {
            Source::Safetensors(t) => Some(t),
            Source::Gguf(_) => None,
        }
    }

    pub fn contains(&self, name: &str) -> bool {
        match &self.source {
            Source::Safetensors(t) => t.tensor(name).is_ok(),
            Source::Gguf(g) => g.contains(name),
        }
    }

    /// The shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors()?
            .tensor(name)
            .ok()
            .map(|v| v.shape().to_vec())
    }

    /// Reads a tensor as f32 data, checking its shape.
    pub fn read(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        crate::interrupt::check()?;
        let tensors = match &self.source {
            Source::Safetensors(t) => t,
            Source::Gguf(g) => return g.read(name, shape),
        };
        let full = name.to_owned();
        let view = tensors.tensor(&full).map_err(|_| Error::MissingTensor {
            file: WEIGHTS_FILE.to_owned(),
            tensor: full.clone(),
        })?;
        if view.shape() != shape {
            return Err(Error::ShapeMismatch {
                file: WEIGHTS_FILE.to_owned(),
                tensor: full,
                expected: shape.to_vec(),
                found: view.shape().to_vec(),
            });
        }
        let data = view.data();
        let out: Vec<f32> = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::UnsupportedDtype {
                    file: WEIGHTS_FILE.to_owned(),
                    tensor: full,
                    dtype: format!("{other:?}"),
                });
            }
        };
        Ok(out)
    }

    /// Reads a tensor and uploads it to the backend.
    pub fn get<B: Backend>(&self, backend: &B, name: &str, shape: &[usize]) -> Result<B::Tensor> {
        backend.upload(self.read(name, shape)?, shape)
    }

    /// Reads a linear layer's weight `[out, inp]` and uploads it as one.
    pub fn get_weight<B: Backend>(
        &self,
        backend: &B,
        name: &str,
        out: usize,
        inp: usize,
    ) -> Result<B::Weight> {
        backend.upload_weight(self.read(name, &[out, inp])?, out, inp)
    }

    /// Reads several tensors of one shape, concatenated (the fused QKV projection).
    pub fn read_stacked(&self, names: &[String], shape: &[usize]) -> Result<Vec<f32>> {
        let mut data = Vec::new();
        for name in names {
            data.extend(self.read(name, shape)?);
        }
        Ok(data)
    }
}
