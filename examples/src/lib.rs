//! See the examples in this folder (`cargo run -p amphi-examples --example ...`).
