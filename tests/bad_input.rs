//! Bad model files and bad requests: each gives its typed error (with a stable code, naming the
//! file and tensor where there is one), and none panics.

use amphi_core::{
    Device, Error, LoadOptions, ModelFiles, Pipeline, RunOptions, Task, TextInput, TopK,
};
use amphi_tests::{RawEntry, fixture_model, model_files, read_safetensors, write_safetensors};
use anyhow::{Result, bail};

fn tiny(name: &str) -> ModelFiles {
    model_files(&fixture_model(name)).expect("fixture model")
}

fn load_err(task: Task, files: ModelFiles) -> Error {
    load_err_on(task, files, Device::Cpu)
}

fn load_err_on(task: Task, files: ModelFiles, device: Device) -> Error {
    let options = LoadOptions {
        device,
        ..LoadOptions::default()
    };
    match Pipeline::load(task, files, &options) {
        Ok(_) => panic!("loading should have failed"),
        Err(e) => e,
    }
}

fn weights(edit: impl FnOnce(&mut Vec<RawEntry>)) -> Result<ModelFiles> {
    let files = tiny("tiny-bert");
    let mut entries = read_safetensors(files.get("model.safetensors").expect("weights"))?;
    edit(&mut entries);
    Ok(files.with("model.safetensors", write_safetensors(&entries)?))
}

fn with_config(edit: impl FnOnce(&mut serde_json::Value)) -> Result<ModelFiles> {
    let files = tiny("tiny-bert");
    let mut config: serde_json::Value =
        serde_json::from_slice(files.get("config.json").expect("config"))?;
    edit(&mut config);
    Ok(files.with("config.json", serde_json::to_vec(&config)?))
}

#[test]
fn corrupt_safetensors() -> Result<()> {
    for bytes in [
        b"not a safetensors file at all".to_vec(),
        Vec::new(),
        // A header that promises more data than there is.
        {
            let mut b = tiny("tiny-bert")
                .get("model.safetensors")
                .expect("weights")
                .to_vec();
            b.truncate(b.len() / 2);
            b
        },
    ] {
        let e = load_err(
            Task::FeatureExtraction,
            tiny("tiny-bert").with("model.safetensors", bytes),
        );
        assert_eq!(e.code(), "invalid_weights", "{e}");
        assert!(e.to_string().contains("model.safetensors"), "{e}");
    }
    Ok(())
}

#[test]
fn missing_tensor_is_named() -> Result<()> {
    let files = weights(|e| e.retain(|t| t.name != "encoder.layer.1.output.dense.bias"))?;
    let e = load_err(Task::FeatureExtraction, files);
    match &e {
        Error::MissingTensor { file, tensor } => {
            assert_eq!(file, "model.safetensors");
            assert_eq!(tensor, "encoder.layer.1.output.dense.bias");
        }
        other => bail!("expected MissingTensor, got {other}"),
    }
    assert_eq!(e.code(), "missing_tensor");
    Ok(())
}

#[test]
fn shape_mismatch_is_named() -> Result<()> {
    let files = with_config(|c| c["intermediate_size"] = 38.into())?;
    let e = load_err(Task::FeatureExtraction, files);
    match &e {
        Error::ShapeMismatch {
            tensor,
            expected,
            found,
            ..
        } => {
            assert_eq!(tensor, "encoder.layer.0.intermediate.dense.weight");
            assert_eq!(expected, &[38, 32]);
            assert_eq!(found, &[37, 32]);
        }
        other => bail!("expected ShapeMismatch, got {other}"),
    }
    Ok(())
}

#[test]
fn unsupported_dtype_is_named() -> Result<()> {
    let files = weights(|entries| {
        let t = entries
            .iter_mut()
            .find(|t| t.name == "embeddings.LayerNorm.bias")
            .expect("tensor");
        t.dtype = "I32".to_owned();
    })?;
    let e = load_err(Task::FeatureExtraction, files);
    assert_eq!(e.code(), "unsupported_dtype", "{e}");
    assert!(e.to_string().contains("embeddings.LayerNorm.bias"), "{e}");
    Ok(())
}

#[test]
fn unknown_architecture() -> Result<()> {
    let files = with_config(|c| {
        c["model_type"] = "gpt2".into();
        c["architectures"] = serde_json::json!(["GPT2LMHeadModel"]);
    })?;
    let e = load_err(Task::FeatureExtraction, files);
    assert_eq!(e.code(), "unsupported_architecture", "{e}");
    assert!(e.to_string().contains("gpt2"), "{e}");
    Ok(())
}

#[test]
fn missing_and_malformed_files() -> Result<()> {
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let mut files = tiny("tiny-bert");
        files.take(file);
        let e = load_err(Task::FeatureExtraction, files);
        assert_eq!(e.code(), "missing_file", "{e}");
        assert!(e.to_string().contains(file), "{e}");
    }
    for file in ["config.json", "tokenizer.json", "modules.json"] {
        let files = tiny("tiny-bert").with(file, b"{ not json".to_vec());
        let e = load_err(Task::FeatureExtraction, files);
        assert_eq!(e.code(), "invalid_json", "{file}: {e}");
        assert!(e.to_string().contains(file), "{e}");
    }
    // Valid JSON, wrong values.
    let files = with_config(|c| c["num_attention_heads"] = 5.into())?;
    assert_eq!(
        load_err(Task::FeatureExtraction, files).code(),
        "invalid_config"
    );
    let files = with_config(|c| c["hidden_size"] = "big".into())?;
    assert_eq!(
        load_err(Task::FeatureExtraction, files).code(),
        "invalid_json"
    );
    Ok(())
}

#[test]
fn task_needs_its_head() {
    let e = load_err(Task::TextClassification, tiny("tiny-bert"));
    assert_eq!(e.code(), "unsupported_task", "{e}");
    let e = load_err(Task::TokenClassification, tiny("tiny-bert-seqcls"));
    assert_eq!(e.code(), "unsupported_task", "{e}");
}

#[test]
fn gpu_request_without_gpu_backend_fails_clearly() {
    let e = load_err_on(Task::FeatureExtraction, tiny("tiny-bert"), Device::Gpu);
    assert_eq!(e.code(), "device_unavailable", "{e}");
}

fn pipeline(task: Task, name: &str) -> Pipeline {
    Pipeline::load(task, tiny(name), &LoadOptions::default()).expect("fixture loads")
}

#[test]
fn bad_requests() {
    let fe = pipeline(Task::FeatureExtraction, "tiny-bert");
    let none = RunOptions::default();

    let e = fe.run(&[], &none).expect_err("empty batch");
    assert_eq!(e.code(), "invalid_input");

    let huge = TextInput::Text("word ".repeat(300_000));
    let e = fe.run(&[huge], &none).expect_err("huge text");
    assert_eq!(e.code(), "input_too_large", "{e}");

    let many: Vec<TextInput> = (0..257).map(|i| TextInput::Text(i.to_string())).collect();
    assert_eq!(
        fe.run(&many, &none).expect_err("batch").code(),
        "input_too_large"
    );

    let stray = RunOptions {
        top_k: TopK::K(2),
        ..RunOptions::default()
    };
    assert_eq!(
        fe.run(&["x".into()], &stray)
            .expect_err("stray option")
            .code(),
        "invalid_input"
    );

    for max_length in [2, 129] {
        let o = RunOptions {
            max_length: Some(max_length),
            ..RunOptions::default()
        };
        assert_eq!(
            fe.run(&["x".into()], &o).expect_err("max_length").code(),
            "invalid_input"
        );
    }

    let tok = pipeline(Task::TokenClassification, "tiny-bert-tokcls");
    let pair = TextInput::Pair {
        text: "a".into(),
        text_pair: "b".into(),
    };
    assert_eq!(
        tok.run(&[pair], &RunOptions::default())
            .expect_err("pair")
            .code(),
        "invalid_input"
    );
}

#[test]
fn long_and_odd_texts_are_truncated_not_rejected() -> Result<()> {
    let fe = pipeline(Task::FeatureExtraction, "tiny-bert");
    let long = TextInput::Text("hello world ".repeat(5_000));
    let odd = TextInput::Text("\u{0}\u{200b}\u{feff}🦀\u{fffd}".to_owned());
    let out = fe.run(&[long, odd, "".into()], &RunOptions::default())?;
    let amphi_core::Output::Tokens(tokens) = out else {
        bail!("expected token vectors");
    };
    assert_eq!(
        tokens[0].len(),
        128,
        "truncated to the model's 128 positions"
    );
    assert_eq!(tokens[2].len(), 2, "empty text is [CLS] [SEP]");
    Ok(())
}

/// A request's `max_length` cannot raise the loader's (the operator's `--max-tokens`): it is
/// clamped to it, while a smaller one still applies.
#[test]
fn request_max_length_cannot_raise_the_operators_limit() -> Result<()> {
    let options = LoadOptions {
        device: Device::Cpu,
        max_length: Some(16),
        ..LoadOptions::default()
    };
    let fe = Pipeline::load(Task::FeatureExtraction, tiny("tiny-bert"), &options)?;
    let long = TextInput::Text("hello world ".repeat(100));
    for (asked, want) in [(Some(128), 16), (None, 16), (Some(8), 8)] {
        let run = RunOptions {
            max_length: asked,
            ..RunOptions::default()
        };
        let amphi_core::Output::Tokens(tokens) = fe.run(std::slice::from_ref(&long), &run)? else {
            bail!("expected token vectors");
        };
        assert_eq!(tokens[0].len(), want, "max_length {asked:?}");
    }
    Ok(())
}

#[test]
fn unknown_request_fields_are_rejected() {
    let err = serde_json::from_value::<amphi_core::Request>(serde_json::json!({
        "inputs": "x", "parameters": {"poolin": "mean"}
    }))
    .expect_err("typo in option name");
    assert!(err.to_string().contains("poolin"), "{err}");
}

#[test]
fn unsupported_sentence_transformers_modules_are_refused() -> Result<()> {
    let modules = serde_json::json!([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    ]);
    let files = tiny("tiny-bert").with("modules.json", serde_json::to_vec(&modules)?);
    let e = load_err(Task::FeatureExtraction, files);
    assert_eq!(e.code(), "invalid_config", "{e}");
    assert!(e.to_string().contains("Dense"), "{e}");
    Ok(())
}

#[test]
fn a_classifier_without_labels_is_refused() -> Result<()> {
    let files = tiny("tiny-bert-seqcls");
    let mut entries = read_safetensors(files.get("model.safetensors").expect("weights"))?;
    for t in &mut entries {
        if t.name.starts_with("classifier.") {
            t.shape[0] = 0;
            t.bytes.clear();
        }
    }
    let mut config: serde_json::Value =
        serde_json::from_slice(files.get("config.json").expect("config"))?;
    config.as_object_mut().expect("object").remove("id2label");
    config.as_object_mut().expect("object").remove("label2id");
    let files = files
        .with("model.safetensors", write_safetensors(&entries)?)
        .with("config.json", serde_json::to_vec(&config)?);
    let e = load_err(Task::TextClassification, files);
    assert_eq!(e.code(), "shape_mismatch", "{e}");
    Ok(())
}

fn vit_files() -> ModelFiles {
    tiny("tiny-vit")
}

/// Image models: broken preprocessing configs and configs that do not fit the model, images
/// given to text pipelines and text to image pipelines, and limits.
#[test]
fn image_model_errors() -> Result<()> {
    let edit = |pre: &str| vit_files().with("preprocessor_config.json", pre.as_bytes().to_vec());
    let cases = [
        (edit("{not json"), "invalid_json"),
        (
            edit(r#"{"size": {"height": 0, "width": 32}}"#),
            "invalid_config",
        ),
        (
            edit(r#"{"size": {"height": 32, "width": 32}, "resample": 7}"#),
            "invalid_json",
        ),
        // A resize that does not give the model's 32×32.
        (
            edit(r#"{"size": {"height": 64, "width": 64}}"#),
            "invalid_config",
        ),
        (edit(r#"{"size": {"shortest_edge": 32}}"#), "invalid_config"),
        (
            {
                let mut f = vit_files();
                f.take("preprocessor_config.json");
                f
            },
            "missing_file",
        ),
    ];
    for (files, code) in cases {
        let e = load_err(Task::ImageClassification, files);
        assert_eq!(e.code(), code, "{e}");
    }
    let e = load_err(Task::FeatureExtraction, vit_files());
    assert_eq!(e.code(), "unsupported_task", "{e}");
    let e = load_err(Task::ImageClassification, tiny("tiny-bert-seqcls"));
    assert_eq!(e.code(), "unsupported_task", "{e}");

    let vit = Pipeline::load(
        Task::ImageClassification,
        vit_files(),
        &LoadOptions::default(),
    )?;
    let options = RunOptions::default();
    let code = |r: amphi_core::Result<amphi_core::Output>| r.expect_err("refused").code();
    assert_eq!(
        code(vit.run(&["text".into()], &options)),
        "unsupported_task"
    );
    assert_eq!(code(vit.run_images(Vec::new(), &options)), "invalid_input");
    let gray = amphi_core::image::ImageInput::Rgba {
        width: 8,
        height: 8,
        data: vec![128; 256],
    };
    let many = vec![gray.clone(); 300];
    assert_eq!(code(vit.run_images(many, &options)), "input_too_large");
    let pooled = RunOptions {
        pooling: Some(amphi_core::Pooling::Mean),
        ..RunOptions::default()
    };
    assert_eq!(
        code(vit.run_images(vec![gray.clone()], &pooled)),
        "invalid_input"
    );
    assert_eq!(vit.run_images(vec![gray], &options)?.len(), 1);
    let started = vit.start_json(br#"{"inputs": {"blob": 0, "width": 2}}"#, vec![vec![0; 16]]);
    assert_eq!(started.expect_err("refused").code(), "invalid_input");
    let started = vit.start_json(br#"{"inputs": [], "parameters": {"top_k": 1}}"#, Vec::new());
    assert_eq!(started.expect_err("refused").code(), "invalid_input");

    let text = Pipeline::load(
        Task::TextClassification,
        tiny("tiny-bert-seqcls"),
        &LoadOptions::default(),
    )?;
    assert_eq!(
        code(text.run_images(
            vec![amphi_core::image::ImageInput::Encoded(vec![1])],
            &options
        )),
        "unsupported_task"
    );
    Ok(())
}

/// A corrupt or mismatched ViT checkpoint gives the typed weight errors text models give.
#[test]
fn image_model_weights() -> Result<()> {
    let files = vit_files().with("model.safetensors", b"garbage".to_vec());
    assert_eq!(
        load_err(Task::ImageClassification, files).code(),
        "invalid_weights"
    );
    let mut entries = read_safetensors(vit_files().get("model.safetensors").expect("weights"))?;
    entries.retain(|e| e.name != "vit.layernorm.weight");
    let files = vit_files().with("model.safetensors", write_safetensors(&entries)?);
    assert_eq!(
        load_err(Task::ImageClassification, files).code(),
        "missing_tensor"
    );
    Ok(())
}
