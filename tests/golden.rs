//! Reference parity on the shared fixtures, natively on the CPU.

use amphi_core::tokenization::{TextInput, Tokenizer};
use amphi_core::{Device, LoadOptions, RawOutput, TextModel};
use amphi_tests::checks::{self, TOL_TINY};
use amphi_tests::hosts::Native;
use amphi_tests::{
    GoldenTensor, assert_close, case_inputs, case_mask, fixture_model, golden, minilm_dir,
    model_files,
};
use anyhow::{Context, Result, ensure};

fn cpu() -> Native {
    Native::new(Device::Cpu)
}

#[test]
fn tiny_bert_hidden_states() -> Result<()> {
    checks::tiny_bert_hidden_states(&cpu())
}

#[test]
fn tiny_bert_seqcls_pipeline() -> Result<()> {
    checks::tiny_seqcls(&cpu())
}

#[test]
fn tiny_bert_tokcls_pipeline() -> Result<()> {
    checks::tiny_tokcls(&cpu())
}

#[test]
fn tiny_roberta_seqcls_pipeline() -> Result<()> {
    checks::tiny_roberta_seqcls(&cpu())
}

#[test]
fn tiny_xlmr_embeddings() -> Result<()> {
    checks::tiny_xlmr(&cpu())
}

#[test]
fn streaming() -> Result<()> {
    checks::streaming(&cpu())
}

#[test]
fn text_generation() -> Result<()> {
    amphi_tests::generation::all(&cpu())
}

#[test]
fn smollm2_from_gguf() -> Result<()> {
    amphi_tests::generation::smollm2(&cpu(), &amphi_tests::smollm2_dir())
}

#[test]
fn minilm_embeddings() -> Result<()> {
    checks::minilm(&cpu(), &minilm_dir())
}

#[test]
fn tiny_vit_image_classification() -> Result<()> {
    checks::tiny_vit(&cpu())
}

#[test]
fn efficientnet_lite0_image_classification() -> Result<()> {
    checks::efficientnet(&cpu(), &amphi_tests::efficientnet_dir())
}

/// Extreme aspect ratios inside the default pixel limit: classified or `input_too_large`, and
/// the pipelines keep serving.
#[test]
fn extreme_images_are_classified_or_refused() -> Result<()> {
    checks::hostile_images(&cpu(), &amphi_tests::efficientnet_dir(), 20_000_000)
}

fn load(name: &str) -> Result<TextModel> {
    Ok(TextModel::load(
        model_files(&fixture_model(name))?,
        &LoadOptions::default(),
    )?)
}

/// Compares a padded `[batch, seq, ...]` model output with the golden on mask-1 positions only
/// (the reference computes padded rows too, but they carry no meaning).
fn assert_masked(
    what: &str,
    got: &amphi_core::RawTensor,
    want: &GoldenTensor,
    mask: &[Vec<u32>],
) -> Result<()> {
    ensure!(
        got.shape == want.shape,
        "{what}: shape {:?} vs {:?}",
        got.shape,
        want.shape
    );
    let inner: usize = want.shape[2..].iter().product();
    for (b, row) in mask.iter().enumerate() {
        for (t, &m) in row.iter().enumerate() {
            if m == 1 {
                let at = (b * want.shape[1] + t) * inner;
                assert_close(
                    &format!("{what}[{b}][{t}]"),
                    &got.data[at..at + inner],
                    &want.data[at..at + inner],
                    TOL_TINY,
                )?;
            }
        }
    }
    Ok(())
}

/// The model's raw outputs, including the ones pipelines do not expose (`pooler_output`, the
/// token logits of the sentence-pair case), and the padded batches' ids and masks.
#[test]
fn tiny_models_raw_outputs_and_inputs() -> Result<()> {
    for (name, file) in [
        ("tiny-bert", "tiny-bert.json"),
        ("tiny-bert-seqcls", "tiny-bert-seqcls.json"),
        ("tiny-bert-tokcls", "tiny-bert-tokcls.json"),
    ] {
        let model = load(name)?;
        let tokenizer =
            Tokenizer::from_bytes(&std::fs::read(fixture_model(name).join("tokenizer.json"))?)?;
        let g = golden(file)?;
        for case in g["cases"].as_array().context("cases")? {
            let case_name = format!("{name} {}", case["name"].as_str().unwrap_or("?"));
            let inputs: Vec<TextInput> = case_inputs(case)?;
            let mask = case_mask(case)?;

            // Token ids, type ids and character offsets, exactly.
            let ids: Vec<Vec<u32>> = serde_json::from_value(case["input_ids"].clone())?;
            let type_ids: Vec<Vec<u32>> = serde_json::from_value(case["token_type_ids"].clone())?;
            let offsets: Vec<Vec<(usize, usize)>> =
                serde_json::from_value(case["offsets_char"].clone())?;
            for (b, input) in inputs.iter().enumerate() {
                let enc = tokenizer.encode(input, 128)?;
                let n = mask[b].iter().filter(|&&m| m == 1).count();
                ensure!(
                    enc.ids == ids[b][..n],
                    "{case_name}[{b}]: ids {:?} vs {:?}",
                    enc.ids,
                    &ids[b][..n]
                );
                ensure!(
                    enc.type_ids == type_ids[b][..n],
                    "{case_name}[{b}]: type ids differ"
                );
                ensure!(
                    enc.offsets_char == offsets[b][..n],
                    "{case_name}[{b}]: offsets differ"
                );
                ensure!(
                    ids[b][n..].iter().all(|&id| id == 0),
                    "golden pads with id 0"
                );
            }

            let out = &case["outputs"];
            if let Some(v) = out.get("last_hidden_state") {
                let got = model.raw_output(&inputs, RawOutput::LastHiddenState)?;
                assert_masked(
                    &format!("{case_name} last_hidden_state"),
                    &got,
                    &GoldenTensor::parse(v)?,
                    &mask,
                )?;
            }
            if let Some(v) = out.get("pooler_output") {
                let got = model.raw_output(&inputs, RawOutput::PoolerOutput)?;
                let want = GoldenTensor::parse(v)?;
                ensure!(got.shape == want.shape, "{case_name}: pooler shape");
                assert_close(
                    &format!("{case_name} pooler_output"),
                    &got.data,
                    &want.data,
                    TOL_TINY,
                )?;
            }
            if let Some(v) = out.get("logits") {
                let got = model.raw_output(&inputs, RawOutput::Logits)?;
                let want = GoldenTensor::parse(v)?;
                if want.shape.len() == 3 {
                    assert_masked(&format!("{case_name} logits"), &got, &want, &mask)?;
                } else {
                    ensure!(got.shape == want.shape, "{case_name}: logits shape");
                    assert_close(
                        &format!("{case_name} logits"),
                        &got.data,
                        &want.data,
                        TOL_TINY,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// A padded row must give the same result as the same text alone (masking works).
#[test]
fn padding_does_not_change_results() -> Result<()> {
    let model = load("tiny-bert")?;
    let texts: Vec<TextInput> = vec![
        "hi".into(),
        "a much longer sentence that forces padding".into(),
    ];
    let batch = model.raw_output(&texts, RawOutput::LastHiddenState)?;
    let alone = model.raw_output(&texts[..1], RawOutput::LastHiddenState)?;
    let hidden = batch.shape[2];
    let n = alone.shape[1];
    assert_close(
        "padded row vs alone",
        &batch.data[..n * hidden],
        &alone.data,
        1e-5,
    )?;
    Ok(())
}

/// Weights stored as f16 and bf16 load (converted to f32 at load) and stay close to the f32
/// PyTorch reference; the tolerance covers the rounding of the weights, not of the engine.
#[test]
fn half_precision_weights_load() -> Result<()> {
    let dir = fixture_model("tiny-bert");
    let bytes = std::fs::read(dir.join("model.safetensors"))?;
    let g = golden("tiny-bert.json")?;
    let case = g["cases"]
        .as_array()
        .context("cases")?
        .iter()
        .find(|c| c["name"] == "sentence")
        .context("sentence case")?;
    let want = GoldenTensor::parse(&case["outputs"]["last_hidden_state"])?;
    for (dtype, tol) in [("F16", 2e-2f32), ("BF16", 1.5e-1)] {
        let converted = amphi_tests::safetensors_to(&bytes, dtype)?;
        let files = model_files(&dir)?.with("model.safetensors", converted);
        let model = TextModel::load(files, &LoadOptions::default())?;
        let got = model.raw_output(&case_inputs(case)?, RawOutput::LastHiddenState)?;
        assert_close(&format!("{dtype} weights"), &got.data, &want.data, tol)?;
    }
    Ok(())
}

/// As transformers: an `[UNK]` token is reported with the text it stands for, not `[UNK]`.
#[test]
fn unknown_tokens_are_reported_as_their_text() -> Result<()> {
    let p = amphi_core::Pipeline::load(
        amphi_core::Task::TokenClassification,
        model_files(&fixture_model("tiny-bert-tokcls"))?,
        &LoadOptions::default(),
    )?;
    let text = "I ❤️ Rust 🦀 and 日本!";
    let options = amphi_core::RunOptions {
        ignore_labels: Some(vec![]),
        ..Default::default()
    };
    let amphi_core::Output::Entities(out) = p.run(&[text.into()], &options)? else {
        anyhow::bail!("expected entities");
    };
    let words: Vec<String> = out[0]
        .iter()
        .map(|e| match e {
            amphi_core::Entity::Token { word, .. } => word.clone(),
            amphi_core::Entity::Group { word, .. } => word.clone(),
        })
        .collect();
    ensure!(words.contains(&"❤".to_owned()), "{words:?}"); // U+FE0F is cleaned away
    ensure!(words.contains(&"🦀".to_owned()), "{words:?}");
    ensure!(!words.contains(&"[UNK]".to_owned()), "{words:?}");
    Ok(())
}
