//! Downloading model folders from a hub-style endpoint (a local mimic of the Hugging Face hub).

use amphi_core::{LoadOptions, Pipeline, Task};
use amphi_serve::hub::{Hub, RepoRef};
use amphi_tests::{fixture_model, hub_mimic};
use anyhow::{Context, Result, ensure};

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("amphi-hub-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn repo_refs() {
    let r = RepoRef::parse("sentence-transformers/all-MiniLM-L6-v2").expect("id");
    assert_eq!(
        (r.repo.as_str(), r.revision.as_str()),
        ("sentence-transformers/all-MiniLM-L6-v2", "main")
    );
    let r = RepoRef::parse("org/name@v1.0").expect("id");
    assert_eq!(r.revision, "v1.0");
    for bad in [
        "name",
        "a/b/c",
        "../x",
        "org/..",
        "org/na me",
        "org/x@",
        "a--b/c",
        "org/-x",
        "org/x.",
    ] {
        assert!(RepoRef::parse(bad).is_none(), "{bad}");
    }
}

#[test]
fn downloads_verifies_caches_and_works_offline() -> Result<()> {
    let hub = hub_mimic::start();
    let cache = tmp("ok");
    let r = RepoRef::parse("fixtures/tiny-bert").context("id")?;
    let dir = Hub::new(&hub.endpoint, &cache).fetch(&r)?;
    for file in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "tokenizer_config.json",
    ] {
        ensure!(
            std::fs::read(dir.join(file))? == std::fs::read(fixture_model("tiny-bert").join(file))?,
            "{file} differs"
        );
    }
    ensure!(
        !dir.join("modules.json").exists(),
        "absent optional files are skipped"
    );
    // The downloaded folder runs.
    let files = amphi_core::ModelFiles::from_dir(&dir)?;
    let p = Pipeline::load(Task::FeatureExtraction, files, &LoadOptions::default())?;
    p.run(&["hello".into()], &Default::default())?;

    // A folder whose download pass did not complete is fetched again.
    std::fs::remove_file(dir.join(".amphi-complete"))?;
    std::fs::remove_file(dir.join("tokenizer_config.json"))?;
    let before = hub.requests.load(std::sync::atomic::Ordering::SeqCst);
    Hub::new(&hub.endpoint, &cache).fetch(&r)?;
    ensure!(hub.requests.load(std::sync::atomic::Ordering::SeqCst) > before);
    ensure!(dir.join("tokenizer_config.json").is_file());

    // Offline: the endpoint is gone, the cache answers.
    let endpoint = hub.endpoint.clone();
    drop(hub);
    let again = Hub::new(endpoint, &cache).fetch(&r)?;
    ensure!(again == dir);
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

#[test]
fn corrupt_downloads_are_rejected_and_not_kept() -> Result<()> {
    let hub = hub_mimic::start();
    let cache = tmp("corrupt");
    let r = RepoRef::parse("fixtures/corrupt-tiny-bert").context("id")?;
    let err = Hub::new(&hub.endpoint, &cache)
        .fetch(&r)
        .expect_err("corrupt");
    ensure!(err.to_string().contains("integrity check failed"), "{err}");
    let folder = Hub::new(&hub.endpoint, &cache).folder(&r);
    let left: Vec<_> = std::fs::read_dir(&folder)?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    ensure!(left.is_empty(), "left in the cache: {left:?}");
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

#[test]
fn unknown_repo_is_a_clear_error() -> Result<()> {
    let hub = hub_mimic::start();
    let cache = tmp("missing");
    let r = RepoRef::parse("fixtures/no-such-model").context("id")?;
    let err = Hub::new(&hub.endpoint, &cache)
        .fetch(&r)
        .expect_err("missing");
    ensure!(err.to_string().contains("config.json not found"), "{err}");
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}
