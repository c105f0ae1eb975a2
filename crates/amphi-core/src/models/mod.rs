//! Model architectures, one folder each.

pub mod bert;
mod layers;
pub(crate) mod vit;
