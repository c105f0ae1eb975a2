//! The tokenizer parity test body, shared by the native test (`tests/tokenizer.rs`) and the
//! wasm32 harness (`tests/wasm-harness`), so both run exactly the same checks.
//!
//! It checks every case of `golden/tokenizer-minilm.json` (62 single texts with and without
//! special tokens, 5 sentence pairs) for exact ids, tokens, type ids, character offsets, special
//! token masks and word ids.

use amphi_core::tokenization::{Encoded, TextInput, Tokenizer};
use serde_json::Value;

/// Outcome of a parity run.
#[derive(Debug, Default)]
pub struct ParityReport {
    /// Encodings compared.
    pub checked: usize,
    /// One line per mismatch.
    pub failures: Vec<String>,
}

fn field<T: serde::de::DeserializeOwned>(v: &Value, key: &str) -> Result<T, String> {
    serde_json::from_value(v.get(key).cloned().ok_or(format!("golden lacks `{key}`"))?)
        .map_err(|e| format!("golden `{key}`: {e}"))
}

fn compare(name: &str, got: &Encoded, want: &Value, report: &mut ParityReport) {
    report.checked += 1;
    let mut check = |what: &str, ok: Result<bool, String>| match ok {
        Ok(true) => {}
        Ok(false) => report.failures.push(format!("{name}: {what} differ")),
        Err(e) => report.failures.push(format!("{name}: {e}")),
    };
    check("ids", field::<Vec<u32>>(want, "ids").map(|w| w == got.ids));
    check(
        "tokens",
        field::<Vec<String>>(want, "tokens").map(|w| w == got.tokens),
    );
    check(
        "offsets_char",
        field::<Vec<(usize, usize)>>(want, "offsets_char").and_then(|w| {
            match w == got.offsets_char {
                true => Ok(true),
                false => Err(format!("offsets_char {:?} vs {w:?}", got.offsets_char)),
            }
        }),
    );
    check(
        "word_ids",
        field::<Vec<Option<u32>>>(want, "word_ids").map(|w| w == got.word_ids),
    );
    if want.get("type_ids").is_some() {
        check(
            "type_ids",
            field::<Vec<u32>>(want, "type_ids").map(|w| w == got.type_ids),
        );
        check(
            "special_tokens_mask",
            field::<Vec<u32>>(want, "special_tokens_mask").map(|w| w == got.special_tokens_mask),
        );
    }
}

/// Runs every case of the golden file against `tokenizer_json`: `cases` and `pairs` of the
/// tokenizer goldens, or the `tokenizer_cases` that the wave-2 model goldens carry.
pub fn run(tokenizer_json: &[u8], golden_json: &[u8]) -> Result<ParityReport, String> {
    let tokenizer = Tokenizer::from_bytes(tokenizer_json).map_err(|e| e.to_string())?;
    let golden: Value = serde_json::from_slice(golden_json).map_err(|e| e.to_string())?;
    let mut report = ParityReport::default();
    let no_limit = usize::MAX;
    let cases = golden
        .get("tokenizer_cases")
        .unwrap_or(&golden["cases"])
        .as_array()
        .ok_or("golden lacks `cases`")?;
    for case in cases {
        let name = case["name"].as_str().unwrap_or("?");
        let text: String = field(case, "text")?;
        match tokenizer.encode_plain(&text) {
            Ok(e) => compare(
                &format!("{name}/no_special"),
                &e,
                &case["no_special"],
                &mut report,
            ),
            Err(e) => report.failures.push(format!("{name}: {e}")),
        }
        match tokenizer.encode(&TextInput::Text(text), no_limit) {
            Ok(e) => compare(
                &format!("{name}/with_special"),
                &e,
                &case["with_special"],
                &mut report,
            ),
            Err(e) => report.failures.push(format!("{name}: {e}")),
        }
    }
    let pairs = match golden.get("tokenizer_cases") {
        Some(_) => &[][..],
        None => golden["pairs"].as_array().ok_or("golden lacks `pairs`")?,
    };
    for case in pairs {
        let name = case["name"].as_str().unwrap_or("?");
        let input = TextInput::Pair {
            text: field(case, "text")?,
            text_pair: field(case, "text_pair")?,
        };
        match tokenizer.encode(&input, no_limit) {
            Ok(e) => compare(
                &format!("pair {name}"),
                &e,
                &case["with_special"],
                &mut report,
            ),
            Err(e) => report.failures.push(format!("pair {name}: {e}")),
        }
    }
    Ok(report)
}
