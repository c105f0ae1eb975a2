//! A sampling profile of the guest, op by op (`amphi bench --runtime wasm --profile`): at every
//! epoch tick the guest's wasm call stack is captured and charged to the outermost CPU-backend op
//! on it, named as the native profile (`amphi_core::profile`) names them, so the two compare.
//! amphi.wasm has no clock, and timing its ops from the host would need one more import; the
//! stack samples need none, only the artifact's `name` section.

use std::collections::BTreeMap;

use wasmtime::WasmBacktrace;

/// Sample counts per op.
pub(crate) type Samples = BTreeMap<&'static str, u64>;

/// The CPU backend's ops in amphi.wasm's `name` section (`<Cpu as Backend>::METHOD`, mangled) and
/// the native profile's names for them; tokenization is charged to `tokenize`.
const OPS: [(&str, &str); 9] = [
    ("Backend$GT$6linear", "matmul"),
    ("Backend$GT$9attention", "attention"),
    ("Backend$GT$10layer_norm", "layer_norm"),
    ("Backend$GT$5embed", "embed"),
    ("Backend$GT$6reduce", "pool"),
    ("Backend$GT$3add", "add"),
    ("Backend$GT$9depthwise", "depthwise"),
    ("TextTokenizer6encode", "tokenize"),
    ("TextTokenizer12encode_batch", "tokenize"),
];

/// The op a stack belongs to: its outermost frame that is one (frames are innermost first), or
/// `other` (the model's own glue, the ABI, allocation).
pub(crate) fn classify(trace: &WasmBacktrace) -> &'static str {
    trace
        .frames()
        .iter()
        .rev()
        .filter_map(|f| f.func_name())
        .find_map(|name| {
            OPS.iter()
                .find(|(pattern, _)| name.contains("amphi_core") && name.contains(pattern))
                .map(|&(_, op)| op)
        })
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use super::OPS;

    /// Each pattern is the mangled form of its method: `$GT$` then the name's length and name.
    #[test]
    fn patterns_are_length_prefixed_names() {
        for (pattern, _) in OPS {
            let name = pattern.trim_start_matches("Backend$GT$");
            let name = name.trim_start_matches("TextTokenizer");
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            let rest = &name[digits.len()..];
            assert_eq!(digits.parse::<usize>().ok(), Some(rest.len()), "{pattern}");
        }
    }
}
