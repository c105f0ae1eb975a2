//! Model architectures, one folder each.

pub mod bert;
// Tested against the fixtures' PyTorch logits; the image-classification pipeline reaches it next.
#[allow(dead_code)]
pub(crate) mod efficientnet;
mod layers;
// Tested against the fixtures' PyTorch logits; the image-classification pipeline that reaches
// it from the hosts (image decoding, preprocessing) is the next step of issue 7.
#[allow(dead_code)]
pub(crate) mod vit;
