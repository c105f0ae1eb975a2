//! Model architectures, one folder each.

pub mod bert;
