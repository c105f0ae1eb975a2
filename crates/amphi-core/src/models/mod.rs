//! Model architectures, one folder each.

pub mod bert;
pub(crate) mod efficientnet;
mod layers;
pub(crate) mod vit;
