//! Model architectures, one folder each.

pub mod bert;
// Tested against the fixtures' PyTorch logits; the image-classification pipeline reaches it next.
#[allow(dead_code)]
pub(crate) mod efficientnet;
mod layers;
pub(crate) mod vit;
