//! Reference-parity checks against `../shared/fixtures/golden`, written once for every host.
//! Tolerances are those of the fixtures README, section 4.

use amphi_core::Task;
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};

use crate::hosts::{Host, Streamed};
use crate::{GoldenTensor, assert_close, case_inputs, case_mask, fixture_model, golden};

/// Logits, hidden states, pooled outputs of the tiny models: abs 1e-4.
pub const TOL_TINY: f32 = 1e-4;
/// Probabilities and pipeline scores: abs 1e-5.
pub const TOL_PROB: f32 = 1e-5;
/// MiniLM hidden states and mean pooling: abs 1e-4.
pub const TOL_MINILM_HIDDEN: f32 = 1e-4;
/// MiniLM normalized embedding: abs 1e-5.
pub const TOL_MINILM_EMBEDDING: f32 = 1e-5;

/// Tolerances of the MiniLM check ([`minilm_within`]).
#[derive(Debug, Clone, Copy)]
pub struct MinilmTolerance {
    /// Normalized embedding, abs.
    pub embedding: f32,
    /// Hidden states and mean pooling, abs.
    pub hidden: f32,
}

/// The fixtures README's MiniLM tolerances (f32 weights).
pub const TOL_MINILM: MinilmTolerance = MinilmTolerance {
    embedding: TOL_MINILM_EMBEDDING,
    hidden: TOL_MINILM_HIDDEN,
};

/// f16 weights on a GPU (not in the fixtures README: our own bound for reduced precision).
/// Rounding every weight to f16 (relative 2⁻¹¹) and summing products in f16 over slices of 16
/// moved MiniLM's outputs on lavapipe by at most 2.3e-4 (normalized embedding), 1.25e-3 (mean
/// pooling) and between 2.7e-3 and 5e-3 (hidden states): the bounds are 2–4× that.
pub const TOL_MINILM_F16: MinilmTolerance = MinilmTolerance {
    embedding: 5e-4,
    hidden: 1e-2,
};

fn floats(v: &Value) -> Result<Vec<f32>> {
    let xs: Vec<f64> = serde_json::from_value(v.clone()).context("expected a list of numbers")?;
    Ok(xs.into_iter().map(|x| x as f32).collect())
}

/// Compares per-token vectors (`pooling: none` output, one list per input) with a golden
/// `[batch, seq, hidden]` tensor on the positions whose attention mask is 1.
fn check_tokens(
    what: &str,
    got: &Value,
    want: &GoldenTensor,
    mask: &[Vec<u32>],
    tol: f32,
) -> Result<f32> {
    let got = got.as_array().context("expected a list per input")?;
    ensure!(
        got.len() == want.shape[0],
        "{what}: {} inputs, expected {}",
        got.len(),
        want.shape[0]
    );
    let hidden = want.shape[2];
    let mut worst = 0f32;
    for (b, tokens) in got.iter().enumerate() {
        let tokens = tokens
            .as_array()
            .context("expected a list of token vectors")?;
        let real = mask[b].iter().filter(|&&m| m == 1).count();
        ensure!(
            tokens.len() == real,
            "{what}[{b}]: {} tokens, expected {real}",
            tokens.len()
        );
        for (t, vector) in tokens.iter().enumerate() {
            let start = (b * want.shape[1] + t) * hidden;
            let d = assert_close(
                &format!("{what}[{b}][{t}]"),
                &floats(vector)?,
                &want.data[start..start + hidden],
                tol,
            )?;
            worst = worst.max(d);
        }
    }
    Ok(worst)
}

/// tiny-bert: `last_hidden_state` of every case through `feature-extraction` with no pooling.
pub fn tiny_bert_hidden_states(host: &dyn Host) -> Result<()> {
    let g = golden("tiny-bert.json")?;
    let model = fixture_model("tiny-bert");
    for case in g["cases"].as_array().context("cases")? {
        let name = case["name"].as_str().unwrap_or("?");
        let inputs = case_inputs(case)?;
        let request =
            json!({"inputs": inputs, "parameters": {"pooling": "none", "normalize": false}});
        let got = host.run(Task::FeatureExtraction, &model, &request)?;
        let want = GoldenTensor::parse(&case["outputs"]["last_hidden_state"])?;
        check_tokens(
            &format!("{}: tiny-bert {name} last_hidden_state", host.name()),
            &got,
            &want,
            &case_mask(case)?,
            TOL_TINY,
        )?;
    }
    Ok(())
}

/// tiny-bert-seqcls: raw logits (`function_to_apply: none`), softmax probabilities for every label,
/// and the default top-1 output, for every case.
pub fn tiny_seqcls(host: &dyn Host) -> Result<()> {
    seqcls(host, "tiny-bert-seqcls", TOL_TINY)
}

/// tiny-roberta-seqcls (byte-level BPE, RoBERTa's position ids and head): as
/// [`tiny_seqcls`], logits within the golden's suggested 1e-5.
pub fn tiny_roberta_seqcls(host: &dyn Host) -> Result<()> {
    seqcls(host, "tiny-roberta-seqcls", TOL_WAVE2_LOGITS)
}

/// Logits of the wave-2 classifiers (RoBERTa, DistilBERT): abs 1e-5, the goldens'
/// `suggested_tolerance` (f32 vs f64 was 5.5e-7).
pub const TOL_WAVE2_LOGITS: f32 = 1e-5;

/// tiny-xlmr (SentencePiece Unigram with the nmt_nfkc charsmap, sentence-transformers layout):
/// the folder's default (mean pooling + normalize) within 1e-6, mean pooling within 1e-5 and
/// the hidden states (mask-1 positions) within 2e-5, the golden's suggested tolerances.
pub fn tiny_xlmr(host: &dyn Host) -> Result<()> {
    let g = golden("tiny-xlmr.json")?;
    let model = fixture_model("tiny-xlmr");
    for case in g["cases"].as_array().context("cases")? {
        let name = case["name"].as_str().unwrap_or("?");
        let what = format!("{}: tiny-xlmr {name}", host.name());
        let inputs = case_inputs(case)?;
        for (parameters, key, tol) in [
            (json!({}), "embedding", 1e-6),
            (
                json!({"pooling": "mean", "normalize": false}),
                "mean_pooled",
                1e-5,
            ),
        ] {
            let got = host.run(
                Task::FeatureExtraction,
                &model,
                &json!({"inputs": inputs, "parameters": parameters}),
            )?;
            let want = GoldenTensor::parse(&case[key])?;
            let rows = got.as_array().context("a vector per input")?;
            ensure!(
                rows.len() == want.shape[0],
                "{what} {key}: {} rows",
                rows.len()
            );
            for (b, row) in rows.iter().enumerate() {
                assert_close(
                    &format!("{what} {key}[{b}]"),
                    &floats(row)?,
                    want.row(b),
                    tol,
                )?;
            }
        }
        let got = host.run(
            Task::FeatureExtraction,
            &model,
            &json!({"inputs": inputs, "parameters": {"pooling": "none", "normalize": false}}),
        )?;
        check_tokens(
            &format!("{what} last_hidden_state"),
            &got,
            &GoldenTensor::parse(&case["last_hidden_state"])?,
            &case_mask(case)?,
            2e-5,
        )?;
    }
    Ok(())
}

fn seqcls(host: &dyn Host, fixture: &str, tol_logits: f32) -> Result<()> {
    let g = golden(&format!("{fixture}.json"))?;
    let model = fixture_model(fixture);
    let id2label: std::collections::BTreeMap<String, String> =
        serde_json::from_value(g["id2label"].clone())?;
    let label_index = |label: &str| {
        id2label
            .iter()
            .find(|(_, l)| l.as_str() == label)
            .and_then(|(i, _)| i.parse::<usize>().ok())
    };
    for case in g["cases"].as_array().context("cases")? {
        let name = case["name"].as_str().unwrap_or("?");
        let what = format!("{}: {fixture} {name}", host.name());
        let inputs = case_inputs(case)?;
        let out = &case["outputs"];

        // Raw logits, in label-id order.
        let raw = host.run(
            Task::TextClassification,
            &model,
            &json!({"inputs": inputs, "parameters": {"top_k": null, "function_to_apply": "none"}}),
        )?;
        let logits = GoldenTensor::parse(&out["logits"])?;
        for (b, ranked) in raw.as_array().context("list per input")?.iter().enumerate() {
            let mut by_id = vec![f32::NAN; logits.shape[1]];
            for item in ranked.as_array().context("ranked labels")? {
                let label = item["label"].as_str().context("label")?;
                let i = label_index(label).with_context(|| format!("unknown label {label}"))?;
                by_id[i] = item["score"].as_f64().context("score")? as f32;
            }
            assert_close(
                &format!("{what} logits[{b}]"),
                &by_id,
                logits.row(b),
                tol_logits,
            )?;
        }
        if out.get("pipeline_all_labels").is_none() {
            continue; // the sentence pair: the pipeline was not run on it
        }

        // All labels, sorted (transformers `top_k=None`).
        let all = host.run(
            Task::TextClassification,
            &model,
            &json!({"inputs": inputs, "parameters": {"top_k": null}}),
        )?;
        compare_label_lists(&what, &all, &out["pipeline_all_labels"])?;

        // Default: best label per input.
        let top1 = host.run(Task::TextClassification, &model, &json!({"inputs": inputs}))?;
        compare_label_lists(&what, &json!([top1]), &json!([out["pipeline_top1"]]))?;
    }
    Ok(())
}

fn compare_label_lists(what: &str, got: &Value, want: &Value) -> Result<()> {
    let (got, want) = (
        got.as_array().context("list")?,
        want.as_array().context("golden list")?,
    );
    ensure!(
        got.len() == want.len(),
        "{what}: {} results, expected {}",
        got.len(),
        want.len()
    );
    for (g, w) in got.iter().zip(want) {
        if let (Some(g), Some(w)) = (g.as_array(), w.as_array()) {
            compare_label_lists(what, &Value::Array(g.clone()), &Value::Array(w.clone()))?;
            continue;
        }
        ensure!(
            g["label"] == w["label"],
            "{what}: label {} vs expected {}",
            g["label"],
            w["label"]
        );
        let (gs, ws) = (
            g["score"].as_f64().context("score")?,
            w["score"].as_f64().context("score")?,
        );
        ensure!(
            (gs - ws).abs() as f32 <= TOL_PROB,
            "{what}: score {gs} vs expected {ws} (tolerance {TOL_PROB:e})"
        );
    }
    Ok(())
}

/// Compares entity lists: every field exact except `score` (abs 1e-5).
fn compare_entities(what: &str, got: &Value, want: &Value) -> Result<()> {
    let (got, want) = (
        got.as_array().context("list")?,
        want.as_array().context("golden list")?,
    );
    ensure!(
        got.len() == want.len(),
        "{what}: {} entities, expected {}:\n got {got:?}\nwant {want:?}",
        got.len(),
        want.len()
    );
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.is_array() {
            compare_entities(&format!("{what}[{i}]"), g, w)?;
            continue;
        }
        let (g, w) = (
            g.as_object().context("entity")?,
            w.as_object().context("entity")?,
        );
        ensure!(
            g.keys().collect::<Vec<_>>() == w.keys().collect::<Vec<_>>(),
            "{what}[{i}]: fields {:?}, expected {:?}",
            g.keys(),
            w.keys()
        );
        for (k, wv) in w {
            let gv = &g[k];
            if k == "score" {
                let (a, b) = (gv.as_f64().context("score")?, wv.as_f64().context("score")?);
                ensure!(
                    (a - b).abs() as f32 <= TOL_PROB,
                    "{what}[{i}].score {a} vs {b}"
                );
            } else {
                ensure!(gv == wv, "{what}[{i}].{k}: {gv} vs expected {wv}");
            }
        }
    }
    Ok(())
}

/// tiny-bert-tokcls: `aggregation_strategy` none and simple for every single-text case, and the
/// argmax label and probability of every token (`ignore_labels: []`).
pub fn tiny_tokcls(host: &dyn Host) -> Result<()> {
    let g = golden("tiny-bert-tokcls.json")?;
    let model = fixture_model("tiny-bert-tokcls");
    for case in g["cases"].as_array().context("cases")? {
        if case.get("text_pairs").is_some() {
            continue; // token classification takes single texts; the pair's logits are checked natively
        }
        let name = case["name"].as_str().unwrap_or("?");
        let what = format!("{}: tokcls {name}", host.name());
        let inputs = case_inputs(case)?;
        let out = &case["outputs"];
        for (strategy, key) in [
            ("none", "pipeline_aggregation_none"),
            ("simple", "pipeline_aggregation_simple"),
        ] {
            let got = host.run(
                Task::TokenClassification,
                &model,
                &json!({"inputs": inputs, "parameters": {"aggregation_strategy": strategy}}),
            )?;
            compare_entities(&format!("{what} {strategy}"), &got, &out[key])?;
        }

        // Every non-special token: argmax label and its probability.
        let all = host.run(
            Task::TokenClassification,
            &model,
            &json!({"inputs": inputs, "parameters": {"ignore_labels": []}}),
        )?;
        let probs = GoldenTensor::parse(&out["probabilities"])?;
        let labels: Vec<Vec<String>> = serde_json::from_value(out["predicted_labels"].clone())?;
        let special: Vec<Vec<u32>> = serde_json::from_value(case["special_tokens_mask"].clone())?;
        let mask = case_mask(case)?;
        let n_labels = probs.shape[2];
        for (b, entities) in all.as_array().context("list per input")?.iter().enumerate() {
            let entities = entities.as_array().context("entities")?;
            let expected: Vec<usize> = (0..mask[b].len())
                .filter(|&t| mask[b][t] == 1 && special[b][t] == 0)
                .collect();
            ensure!(
                entities.len() == expected.len(),
                "{what}[{b}]: {} tokens, expected {}",
                entities.len(),
                expected.len()
            );
            for (e, &t) in entities.iter().zip(&expected) {
                ensure!(
                    e["index"] == json!(t),
                    "{what}[{b}]: index {} vs {t}",
                    e["index"]
                );
                ensure!(
                    e["entity"] == json!(labels[b][t]),
                    "{what}[{b}][{t}]: {} vs {}",
                    e["entity"],
                    labels[b][t]
                );
                let row = (b * probs.shape[1] + t) * n_labels;
                let best = probs.data[row..row + n_labels]
                    .iter()
                    .copied()
                    .fold(f32::MIN, f32::max);
                let score = e["score"].as_f64().context("score")? as f32;
                ensure!(
                    (score - best).abs() <= TOL_PROB,
                    "{what}[{b}][{t}]: score {score} vs {best}"
                );
            }
        }
    }
    Ok(())
}

/// all-MiniLM-L6-v2: the sentence-transformers default (mean pooling + normalize, from the
/// model folder), mean pooling without normalization, and the hidden states.
pub fn minilm(host: &dyn Host, model: &std::path::Path) -> Result<()> {
    minilm_within(host, model, TOL_MINILM)
}

/// [`minilm`] with other tolerances (reduced precision).
pub fn minilm_within(host: &dyn Host, model: &std::path::Path, tol: MinilmTolerance) -> Result<()> {
    let g = golden("minilm-hello-world.json")?;
    for case in g["cases"].as_array().context("cases")? {
        let name = case["name"].as_str().unwrap_or("?");
        let what = format!("{}: minilm {name}", host.name());
        let texts: Vec<String> = serde_json::from_value(case["texts"].clone())?;

        let embedding = GoldenTensor::parse(&case["embedding"])?;
        let got = host.run(Task::FeatureExtraction, model, &json!({"inputs": texts}))?;
        for (b, v) in got.as_array().context("list per input")?.iter().enumerate() {
            assert_close(
                &format!("{what} embedding[{b}]"),
                &floats(v)?,
                embedding.row(b),
                tol.embedding,
            )?;
        }

        let pooled = GoldenTensor::parse(&case["mean_pooled"])?;
        let got = host.run(
            Task::FeatureExtraction,
            model,
            &json!({"inputs": texts, "parameters": {"pooling": "mean", "normalize": false}}),
        )?;
        for (b, v) in got.as_array().context("list per input")?.iter().enumerate() {
            assert_close(
                &format!("{what} mean_pooled[{b}]"),
                &floats(v)?,
                pooled.row(b),
                tol.hidden,
            )?;
        }

        let hidden = GoldenTensor::parse(&case["last_hidden_state"])?;
        let got = host.run(
            Task::FeatureExtraction,
            model,
            &json!({"inputs": texts, "parameters": {"pooling": "none", "normalize": false}}),
        )?;
        check_tokens(
            &format!("{what} last_hidden_state"),
            &got,
            &hidden,
            &case_mask(case)?,
            tol.hidden,
        )?;
    }
    Ok(())
}

/// Label → score of a ranked pipeline output (`[{label, score}, …]`).
fn scores(v: &Value) -> Result<Vec<(String, f32)>> {
    v.as_array()
        .context("expected a list of {label, score}")?
        .iter()
        .map(|x| {
            Ok((
                x["label"].as_str().context("label")?.to_owned(),
                x["score"].as_f64().context("score")? as f32,
            ))
        })
        .collect()
}

/// Compares a ranked output with a golden distribution over `labels` (label order exact).
fn check_ranked(what: &str, got: &Value, labels: &[String], want: &[f32], tol: f32) -> Result<()> {
    let got = scores(got)?;
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
    ensure!(got.len() <= want.len(), "{what}: {} labels", got.len());
    for ((label, score), &i) in got.iter().zip(&order) {
        ensure!(
            label == &labels[i],
            "{what}: label {label}, expected {}",
            labels[i]
        );
        ensure!(
            (score - want[i]).abs() <= tol,
            "{what}: {label} {score} vs {} (tolerance {tol})",
            want[i]
        );
    }
    Ok(())
}

/// The `{"blob": i}` reference to attachment `i`, raw RGBA pixels when given a size.
fn blob(i: usize, size: Option<(usize, usize)>) -> Value {
    match size {
        Some((w, h)) => json!({"blob": i, "width": w, "height": h}),
        None => json!({"blob": i}),
    }
}

fn fixture_bytes(path: &str) -> Result<Vec<u8>> {
    let path = crate::fixtures().join(path);
    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
}

/// tiny-vit image classification, from the image files (PNG bytes as an attachment, and as a
/// base64 string in the JSON), from the stored `resized_rgb_u8` as raw RGBA pixels, and both
/// images as a batch: every label's probability within 1e-5 of PyTorch's (the fixtures'
/// tolerance; the resize is Pillow's bit for bit, so the image files need no looser bound),
/// labels in the same order.
pub fn tiny_vit(host: &dyn Host) -> Result<()> {
    use base64::Engine as _;
    let g = golden("tiny-vit.json")?;
    let model = fixture_model("tiny-vit");
    let labels: Vec<String> = (0..3)
        .map(|i| g["id2label"][i.to_string()].as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .context("id2label")?;
    let all = json!({"top_k": null});
    let mut files = Vec::new();
    let mut batch_want = Vec::new();
    for case in g["cases"].as_array().context("cases")? {
        let Some(image) = case["image"].as_str() else {
            continue;
        };
        let name = case["name"].as_str().unwrap_or("?");
        let what = format!("{}: tiny-vit {name}", host.name());
        let want = floats(&case["probabilities"]["data"])?;
        let bytes = fixture_bytes(image)?;
        let run = |inputs: Value, attachments: &[Vec<u8>]| {
            host.run_with(
                Task::ImageClassification,
                &model,
                &json!({"inputs": inputs, "parameters": all}),
                attachments,
            )
        };
        let out = run(blob(0, None), std::slice::from_ref(&bytes))?;
        check_ranked(&format!("{what} (file)"), &out, &labels, &want, TOL_PROB)?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let out = run(json!(b64), &[])?;
        check_ranked(&format!("{what} (base64)"), &out, &labels, &want, TOL_PROB)?;
        // The stored resize as raw RGBA: the preprocessing's resize is then the identity.
        let rgb = GoldenTensor::parse(&case["resized_rgb_u8"])?;
        let rgba: Vec<u8> = rgb
            .data
            .chunks_exact(3)
            .flat_map(|p| [p[0] as u8, p[1] as u8, p[2] as u8, 255])
            .collect();
        let out = run(blob(0, Some((32, 32))), &[rgba])?;
        check_ranked(&format!("{what} (RGBA)"), &out, &labels, &want, TOL_PROB)?;
        // Default parameters: the top 5 (here all 3 labels).
        let default = host.run_with(
            Task::ImageClassification,
            &model,
            &json!({"inputs": blob(0, None)}),
            std::slice::from_ref(&bytes),
        )?;
        ensure!(scores(&default)?.len() == 3, "{what}: default top_k");
        files.push(bytes);
        batch_want.push(want);
    }
    let out = host.run_with(
        Task::ImageClassification,
        &model,
        &json!({"inputs": [blob(0, None), blob(1, None)], "parameters": {"top_k": 2}}),
        &files,
    )?;
    let out = out.as_array().context("a list per image")?;
    ensure!(out.len() == 2, "batch: {} outputs", out.len());
    for (i, (got, want)) in out.iter().zip(&batch_want).enumerate() {
        ensure!(scores(got)?.len() == 2, "batch[{i}]: top_k 2");
        check_ranked(
            &format!("{}: tiny-vit batch[{i}]", host.name()),
            got,
            &labels,
            want,
            TOL_PROB,
        )?;
    }
    Ok(())
}

/// EfficientNet-Lite0 on coffee.png, from the image file: the top-5 labels in the golden's
/// order, their probabilities within 1e-4 and their logits (`function_to_apply: none`) within
/// 1e-3 (the fixtures' tolerances; the preprocessing is Pillow's bit for bit).
pub fn efficientnet(host: &dyn Host, model: &std::path::Path) -> Result<()> {
    let g = golden("efficientnet-lite0-coffee.json")?;
    let case = &g["cases"][0];
    let bytes = fixture_bytes(case["image"].as_str().context("image")?)?;
    let top5 = case["top5"].as_array().context("top5")?;
    for (field, function, tol) in [("probability", "softmax", 1e-4), ("logit", "none", 1e-3)] {
        let out = host.run_with(
            Task::ImageClassification,
            model,
            &json!({"inputs": blob(0, None), "parameters": {"top_k": 5, "function_to_apply": function}}),
            std::slice::from_ref(&bytes),
        )?;
        let got = scores(&out)?;
        ensure!(got.len() == 5, "{}: {} labels", host.name(), got.len());
        for ((label, score), want) in got.iter().zip(top5) {
            let want_label = want["label"].as_str().context("label")?;
            let want_score = want[field].as_f64().context("score")? as f32;
            ensure!(
                label == want_label,
                "{}: {label} vs {want_label}",
                host.name()
            );
            ensure!(
                (score - want_score).abs() <= tol,
                "{}: {label} {field} {score} vs {want_score} (tolerance {tol})",
                host.name()
            );
        }
    }
    Ok(())
}

/// A PNG of `width × height` pixels (a gradient along the long side): a few hundred kilobytes
/// for tens of millions of pixels, since the rows compress to almost nothing.
pub fn png(width: u32, height: u32) -> Result<Vec<u8>> {
    let img = image::RgbImage::from_fn(width, height, |x, y| {
        let v = ((x + y) % 251) as u8;
        image::Rgb([v, 255 - v, 128])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// Images whose header is legal but extreme: 1 × `long` and `long` × 1 pixels, inside the host's
/// pixel limit. tiny-vit (an exact 32 × 32 resize) classifies them; at `long` = 20 M (inside the
/// default 40 M limit) Pillow's order would hold a 32 × 20 M intermediate (1.9 GB, the guest's
/// memory), so the vertical pass runs first. EfficientNet-Lite0 (shortest edge 256) would need
/// a 256 × 256·`long` resize: `input_too_large`, whose message names the aspect ratio. Neither may trap the guest or fail the host: the same host then classifies
/// an ordinary image with the golden probabilities (abs 1e-5).
pub fn hostile_images(host: &dyn Host, efficientnet: &std::path::Path, long: u32) -> Result<()> {
    let vit = fixture_model("tiny-vit");
    let run = |model: &std::path::Path, bytes: &[u8]| {
        host.run_with(
            Task::ImageClassification,
            model,
            &json!({"inputs": blob(0, None), "parameters": {"top_k": null}}),
            &[bytes.to_vec()],
        )
    };
    for (w, h) in [(1, long), (long, 1)] {
        let bytes = png(w, h)?;
        let what = format!("{}: a {w}×{h} PNG ({} kB)", host.name(), bytes.len() / 1000);
        let out = run(&vit, &bytes).with_context(|| format!("{what}, tiny-vit"))?;
        let got = scores(&out)?;
        let total: f32 = got.iter().map(|(_, p)| p).sum();
        ensure!(
            got.len() == 3 && (total - 1.0).abs() < 1e-4,
            "{what}: tiny-vit gave {out}"
        );
        let err = match run(efficientnet, &bytes) {
            Ok(out) => anyhow::bail!("{what}: EfficientNet should refuse it, gave {out}"),
            Err(e) => format!("{e:#}"),
        };
        ensure!(
            err.contains("extreme aspect ratio"),
            "{what}: EfficientNet's error should be input_too_large for the aspect ratio: {err}"
        );
    }
    let g = golden("tiny-vit.json")?;
    let case = g["cases"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["image"].is_string()))
        .context("a tiny-vit case with an image")?;
    let bytes = fixture_bytes(case["image"].as_str().context("image")?)?;
    let labels: Vec<String> = (0..3)
        .map(|i| g["id2label"][i.to_string()].as_str().map(str::to_owned))
        .collect::<Option<_>>()
        .context("id2label")?;
    let want = floats(&case["probabilities"]["data"])?;
    check_ranked(
        &format!("{}: tiny-vit after the extreme images", host.name()),
        &run(&vit, &bytes)?,
        &labels,
        &want,
        TOL_PROB,
    )
}

/// Streaming (`"stream": true`), on any host: tiny-xlmr's padded batch of 3 streams 3 chunks in
/// input order, each equal (1e-6) to the non-streamed result's item and to the golden
/// embedding (1e-6) or hidden states (2e-5). And chunks arrive before later inputs run: a
/// token-classification stream whose third input is a pair (refused when its step runs) delivers
/// the first two results, then the error — the same request unstreamed is refused whole.
pub fn streaming(host: &dyn Host) -> Result<()> {
    let g = golden("tiny-xlmr.json")?;
    let xlmr = fixture_model("tiny-xlmr");
    let case = g["cases"]
        .as_array()
        .context("cases")?
        .iter()
        .find(|c| c["name"] == "batch_padded")
        .context("batch_padded")?;
    let inputs = case_inputs(case)?;
    let what = format!("{}: stream tiny-xlmr", host.name());
    for parameters in [json!({}), json!({"pooling": "none", "normalize": false})] {
        let request = json!({"inputs": inputs, "parameters": parameters});
        let whole = host.run(Task::FeatureExtraction, &xlmr, &request)?;
        let Streamed { chunks, error } = host.stream(Task::FeatureExtraction, &xlmr, &request)?;
        ensure!(error.is_none(), "{what}: ended with {error:?}");
        ensure!(
            chunks.len() == inputs.len(),
            "{what}: {} chunks",
            chunks.len()
        );
        for (i, chunk) in chunks.iter().enumerate() {
            ensure!(
                chunk["index"] == json!(i),
                "{what}: chunk {i} is {}",
                chunk["index"]
            );
            let got = flatten(&chunk["output"])?;
            assert_close(
                &format!("{what}[{i}] vs unstreamed"),
                &got,
                &flatten(&whole[i])?,
                1e-6,
            )?;
        }
        if parameters == json!({}) {
            let want = GoldenTensor::parse(&case["embedding"])?;
            for (i, chunk) in chunks.iter().enumerate() {
                assert_close(
                    &format!("{what}[{i}] embedding"),
                    &floats(&chunk["output"])?,
                    want.row(i),
                    1e-6,
                )?;
            }
        } else {
            let tokens: Vec<Value> = chunks.iter().map(|c| c["output"].clone()).collect();
            check_tokens(
                &format!("{what} last_hidden_state"),
                &Value::Array(tokens),
                &GoldenTensor::parse(&case["last_hidden_state"])?,
                &case_mask(case)?,
                2e-5,
            )?;
        }
    }

    let tokcls = fixture_model("tiny-bert-tokcls");
    let request = json!({"inputs": [
        "My name is Sarah and I live in London.",
        "hello world",
        {"text": "a pair", "text_pair": "is refused"}
    ]});
    ensure!(
        host.run(Task::TokenClassification, &tokcls, &request)
            .is_err(),
        "{}: a pair is refused by token-classification",
        host.name()
    );
    let Streamed { chunks, error } = host.stream(Task::TokenClassification, &tokcls, &request)?;
    let indices: Vec<&Value> = chunks.iter().map(|c| &c["index"]).collect();
    ensure!(
        indices == [&json!(0), &json!(1)] && error.as_deref() == Some("invalid_input"),
        "{}: token-classification stream gave chunks {indices:?} and {error:?}",
        host.name()
    );
    Ok(())
}

fn flatten(v: &Value) -> Result<Vec<f32>> {
    match v {
        Value::Array(items) => Ok(items
            .iter()
            .map(flatten)
            .collect::<Result<Vec<_>>>()?
            .concat()),
        other => Ok(vec![other.as_f64().context("a number")? as f32]),
    }
}
