//! What the engine's unit tests share: the fixtures beside the repository and golden files.

use std::path::PathBuf;

/// `../shared/fixtures` beside the repository, or `$AMPHI_FIXTURES`.
pub(crate) fn fixtures() -> PathBuf {
    std::env::var_os("AMPHI_FIXTURES").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures"),
        PathBuf::from,
    )
}

/// A JSON file of the fixtures (`golden/tiny-vit.json`, …).
pub(crate) fn json(path: &str) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(fixtures().join(path)).expect(path)).expect("json")
}

/// Every number of a golden tensor (`{"data": …}`) or nested list, flattened.
pub(crate) fn numbers(v: &serde_json::Value) -> Vec<f64> {
    fn walk(v: &serde_json::Value, out: &mut Vec<f64>) {
        match v {
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            serde_json::Value::Number(n) => out.push(n.as_f64().expect("f64")),
            serde_json::Value::Object(o) => walk(&o["data"], out),
            _ => panic!("unexpected {v}"),
        }
    }
    let mut out = Vec::new();
    walk(v, &mut out);
    out
}
