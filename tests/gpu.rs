//! Every pipeline golden on the GPU backend, natively (Mesa lavapipe in CI), with the fixtures'
//! tolerances: the same check bodies as on the CPU (`tests/golden.rs`), the artifact and HTTP.

use amphi_core::{Device, LoadOptions, Pipeline, Precision, Task};
use amphi_tests::checks;
use amphi_tests::hosts::Native;
use amphi_tests::{fixture_model, gpu, minilm_dir, model_files};
use anyhow::{Result, ensure};

fn on_gpu() -> Native {
    Native::new(Device::Gpu)
}

#[test]
fn tiny_bert_hidden_states() -> Result<()> {
    checks::tiny_bert_hidden_states(&on_gpu())
}

#[test]
fn tiny_bert_seqcls_pipeline() -> Result<()> {
    checks::tiny_seqcls(&on_gpu())
}

#[test]
fn tiny_bert_tokcls_pipeline() -> Result<()> {
    checks::tiny_tokcls(&on_gpu())
}

#[test]
fn tiny_roberta_seqcls_pipeline() -> Result<()> {
    checks::tiny_roberta_seqcls(&on_gpu())
}

#[test]
fn tiny_xlmr_embeddings() -> Result<()> {
    checks::tiny_xlmr(&on_gpu())
}

#[test]
fn streaming() -> Result<()> {
    checks::streaming(&on_gpu())
}

#[test]
fn text_generation() -> Result<()> {
    amphi_tests::generation::all(&on_gpu())
}

#[test]
fn minilm_embeddings() -> Result<()> {
    checks::minilm(&on_gpu(), &minilm_dir())
}

#[test]
fn tiny_vit_image_classification() -> Result<()> {
    checks::tiny_vit(&on_gpu())
}

#[test]
fn efficientnet_lite0_image_classification() -> Result<()> {
    checks::efficientnet(&on_gpu(), &amphi_tests::efficientnet_dir())
}

/// MiniLM with f16 weights, within [`checks::TOL_MINILM_F16`]. The host fails the check if the
/// model loads in f32: lavapipe (CI) has `shader-f16`.
#[test]
fn minilm_embeddings_f16() -> Result<()> {
    checks::minilm_within(
        &Native::with_precision(Device::Gpu, Precision::F16),
        &minilm_dir(),
        checks::TOL_MINILM_F16,
    )
}

#[test]
fn device_choice() -> Result<()> {
    let host = gpu()?;
    let files = || model_files(&fixture_model("tiny-bert"));
    let load = |device, gpu| {
        Pipeline::load(
            Task::FeatureExtraction,
            files()?,
            &LoadOptions {
                device,
                gpu,
                ..LoadOptions::default()
            },
        )
        .map_err(anyhow::Error::from)
    };
    ensure!(load(Device::Gpu, Some(host.clone()))?.device() == Device::Gpu);
    ensure!(load(Device::Cpu, Some(host.clone()))?.device() == Device::Cpu);
    // `auto` skips a software adapter (lavapipe, SwiftShader): the CPU kernels are faster.
    let auto = load(Device::Auto, Some(host.clone()))?.device();
    let want = if host.info().software {
        Device::Cpu
    } else {
        Device::Gpu
    };
    ensure!(auto == want, "auto chose {auto} on {:?}", host.info());
    // `gpu` without a GPU is a typed error.
    let err = load(Device::Gpu, None).expect_err("no GPU given");
    let code = err.downcast_ref::<amphi_core::Error>().map(|e| e.code());
    ensure!(code == Some("device_unavailable"), "{err}");
    Ok(())
}
