//! Tokenizer parity with `golden/tokenizer-minilm.json`, natively. The same test body runs
//! inside wasm32 through `tests/wasm-harness` (see `tests/wasm/harness.test.mjs`).

use amphi_tests::{fixture_model, fixtures, minilm_dir, tokenizer_parity};
use anyhow::{Result, ensure};

#[test]
fn minilm_tokenizer_matches_reference() -> Result<()> {
    let tokenizer = std::fs::read(minilm_dir().join("tokenizer.json"))?;
    let golden = std::fs::read(fixtures().join("golden/tokenizer-minilm.json"))?;
    let report = tokenizer_parity::run(&tokenizer, &golden).map_err(anyhow::Error::msg)?;
    ensure!(
        report.checked == 62 * 2 + 5,
        "checked {} encodings, expected 129",
        report.checked
    );
    ensure!(
        report.failures.is_empty(),
        "mismatches:\n{}",
        report.failures.join("\n")
    );
    Ok(())
}

/// RoBERTa's byte-level BPE and XLM-R's Unigram with the nmt_nfkc `Precompiled` normalizer: the
/// 30 `tokenizer_cases` of each golden (empty, accents, CJK, Thai, emoji, control characters,
/// ...), with and without special tokens, exactly.
#[test]
fn roberta_and_xlmr_tokenizers_match_reference() -> Result<()> {
    for name in ["tiny-roberta-seqcls", "tiny-xlmr"] {
        let tokenizer = std::fs::read(fixture_model(name).join("tokenizer.json"))?;
        let golden = std::fs::read(fixtures().join(format!("golden/{name}.json")))?;
        let report = tokenizer_parity::run(&tokenizer, &golden).map_err(anyhow::Error::msg)?;
        ensure!(
            report.checked == 30 * 2,
            "{name}: checked {}",
            report.checked
        );
        ensure!(
            report.failures.is_empty(),
            "{name} mismatches:\n{}",
            report.failures.join("\n")
        );
    }
    Ok(())
}
