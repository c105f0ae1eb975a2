//! `cargo xtask bench`: all-MiniLM-L6-v2 embeddings timed in one run on this machine, by amphi
//! (native, amphi.wasm under wasmtime, the npm package in Node and in headless Chromium) and by
//! its peers (onnxruntime from PyPI, onnxruntime-web in Node and Chromium, Transformers.js in
//! Chromium), on the same token ids. The peers are installed here, outside the source tree:
//! a venv in `target/bench/venv`, an npm folder in `target/bench/npm` (`bench/package.json` and
//! its lock file). Results: `target/bench/results/results.md` (the runners' JSON beside it),
//! also written into README.md's performance section.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::{artifact, cargo, fetch_model, npm_package, output, root, run, step, system_packages};

/// onnxruntime from PyPI (the fp32 export in ../shared/bench was checked with 1.32).
const ONNXRUNTIME: &str = "onnxruntime==1.32.0";
const NUMPY: &str = "numpy==2.3.5";
/// Pillow for the vision peer's preprocessing (the version the fixtures' references used).
const PILLOW: &str = "pillow==13.0.0";

fn bench_dir() -> PathBuf {
    root().join("target/bench")
}

/// The venv and the npm folder of the peers, and amphi's packed package installed beside them.
fn peers(tarball: &Path) -> Result<(PathBuf, PathBuf)> {
    let dir = bench_dir();
    let venv = dir.join("venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        step("peers: a Python venv with onnxruntime (target/bench/venv)");
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        ONNXRUNTIME,
        NUMPY,
        PILLOW,
    ]))?;
    step("peers: onnxruntime-web, Transformers.js and playwright-core (target/bench/npm)");
    let npm = dir.join("npm");
    std::fs::create_dir_all(&npm)?;
    for entry in std::fs::read_dir(root().join("bench"))? {
        let path = entry?.path();
        if path.is_file() {
            std::fs::copy(&path, npm.join(path.file_name().context("file name")?))?;
        }
    }
    // Transformers.js depends on onnxruntime-node, whose install script would download
    // binaries; the benchmark uses the wasm backends only.
    run(Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .env("ONNXRUNTIME_NODE_INSTALL", "skip")
        .current_dir(&npm))?;
    run(Command::new("npm")
        .args(["install", "--no-save", "--no-audit", "--no-fund"])
        .arg(tarball)
        .env("ONNXRUNTIME_NODE_INSTALL", "skip")
        .current_dir(&npm))?;
    Ok((python, npm))
}

fn gzip_len(file: &Path) -> Result<u64> {
    let out = output(
        Command::new("sh")
            .arg("-c")
            .arg(format!("gzip -6 -c '{}' | wc -c", file.display())),
    )?;
    Ok(out.trim().parse()?)
}

/// `amphi serve --instances 1`: milliseconds from spawning it to the first embedding served,
/// and its peak RSS (KiB) then.
fn serve_start(amphi: &Path, minilm: &Path) -> Result<(f64, u64)> {
    let addr = "127.0.0.1:18931";
    let started = Instant::now();
    let mut child = Command::new(amphi)
        .args(["serve", "--addr", addr, "--instances", "1", "--model"])
        .arg(format!("all-MiniLM-L6-v2={}", minilm.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| {
        loop {
            ensure!(
                started.elapsed() < Duration::from_secs(120),
                "amphi serve did not answer"
            );
            if let Some(status) = child.try_wait()? {
                bail!("amphi serve exited: {status}");
            }
            let code = Command::new("curl")
                .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
                .args(["-H", "content-type: application/json"])
                .args(["-d", r#"{"input": "hello world"}"#])
                .arg(format!("http://{addr}/v1/embeddings"))
                .output()?;
            if code.stdout == b"200" {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let ms = started.elapsed().as_secs_f64() * 1e3;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))?;
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .context("VmHWM")?;
        Ok((ms, rss))
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

pub(crate) fn bench() -> Result<()> {
    step(
        "set-up: Chromium, all-MiniLM-L6-v2, amphi.wasm, the release CLI, the npm package, the peers",
    );
    system_packages()?;
    let minilm = fetch_model()?;
    let wasm = artifact()?;
    run(cargo().args(["build", "--release", "-p", "amphi-cli"]))?;
    let tarball = npm_package()?;
    let (python, npm) = peers(&tarball)?;
    let shared = root().join("../shared/bench");
    let onnx = shared.join("minilm-l6-v2-onnx/onnx/model.onnx");
    ensure!(
        onnx.is_file(),
        "{} is missing (the peers' ONNX export)",
        onnx.display()
    );

    let out = bench_dir().join("results");
    if out.is_dir() {
        std::fs::remove_dir_all(&out)?;
    }
    std::fs::create_dir_all(&out)?;
    let amphi = root().join("target/release/amphi");
    let inputs = out.join("inputs.json");
    let amphi_bench = |extra: &[&str]| {
        let mut cmd = Command::new(&amphi);
        cmd.arg("bench").arg("--model").arg(&minilm).args(extra);
        cmd
    };
    run(&mut amphi_bench(&[
        "--write-inputs",
        &inputs.to_string_lossy(),
    ]))?;

    step(
        "in alternating rounds: amphi native (1 thread), amphi.wasm under wasmtime (with and without deadlines), onnxruntime (PyPI, 1 thread and all threads)",
    );
    let path = |file: &str| out.join(file).to_string_lossy().into_owned();
    let amphi_step = |extra: &[&str]| -> Vec<String> {
        let mut cmd = vec![
            amphi.to_string_lossy().into_owned(),
            "bench".into(),
            "--model".into(),
            minilm.to_string_lossy().into_owned(),
            "--step".into(),
        ];
        cmd.extend(extra.iter().map(|s| s.to_string()));
        cmd
    };
    let ort_step = |threads: &str, file: &str| -> Vec<String> {
        vec![
            python.to_string_lossy().into_owned(),
            npm.join("ort.py").to_string_lossy().into_owned(),
            inputs.to_string_lossy().into_owned(),
            onnx.to_string_lossy().into_owned(),
            threads.into(),
            path(file),
            "--step".into(),
        ]
    };
    // Each times its own runs; with preemptive deadlines, amphi.wasm's profile is sampled on
    // their epoch ticks.
    let runners = serde_json::json!([
        {"cmd": amphi_step(&["--runtime", "native", "--profile", "--out", &path("amphi-native.json")]), "env": {"RAYON_NUM_THREADS": "1"}},
        {"cmd": amphi_step(&["--runtime", "wasm", "--out", &path("amphi-wasm.json")])},
        {"cmd": amphi_step(&["--runtime", "wasm", "--preemptive", "--profile", "--out", &path("amphi-wasm-preemptive.json")])},
        {"cmd": ort_step("1", "ort-1.json")},
        {"cmd": ort_step("0", "ort-all.json")},
    ]);
    let runners_file = out.join("native-runners.json");
    std::fs::write(&runners_file, runners.to_string())?;
    run(Command::new("node")
        .arg("native.mjs")
        .arg(&inputs)
        .arg(&runners_file)
        .current_dir(&npm))?;

    step("Node.js: amphi's npm package, onnxruntime-web (wasm, 1 thread)");
    run(Command::new("node")
        .arg("node.mjs")
        .arg(&inputs)
        .arg(&minilm)
        .arg(&onnx)
        .arg(&out)
        .args(["amphi", "ort-web"])
        .current_dir(&npm))?;

    step(
        "headless Chromium: amphi's npm package, onnxruntime-web, Transformers.js (wasm, 1 thread)",
    );
    run(Command::new("node")
        .arg("chromium.mjs")
        .arg(&inputs)
        .arg(&minilm)
        .arg(&shared)
        .arg(&out)
        .args(["amphi,ort-web", "transformers"])
        .current_dir(&npm))?;

    step("serverless host: start-up and memory; sizes");
    let (first_ms, rss_kb) = serve_start(&amphi, &minilm)?;
    let ort_wasm = npm.join("node_modules/onnxruntime-web/dist/ort-wasm-simd-threaded.wasm");
    let machine = output(Command::new("sh").arg("-c").arg(
        "printf '%s, %s cores' \"$(lscpu | sed -n 's/^Model name: *//p' | head -1)\" \"$(nproc)\"",
    ))?;
    let date = output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    std::fs::write(
        out.join("extras.json"),
        format!(
            r#"{{"machine": {machine:?}, "date": {date:?}, "serve": {{"first_ms": {first_ms}, "rss_kb": {rss_kb}}}, "sizes": {{"amphi": {}, "amphi_gz": {}, "ort": {}, "ort_gz": {}}}}}"#,
            std::fs::metadata(&wasm)?.len(),
            gzip_len(&wasm)?,
            std::fs::metadata(&ort_wasm)?.len(),
            gzip_len(&ort_wasm)?,
            date = date.trim(),
        ),
    )?;

    step("report");
    run(Command::new("node")
        .arg("report.mjs")
        .arg(&out)
        .arg(root().join("README.md"))
        .current_dir(&npm))?;
    eprintln!(
        "\nwritten to {} and README.md's performance section",
        out.join("results.md").display()
    );
    Ok(())
}

/// `cargo xtask bench-vision`: EfficientNet-Lite0 classifying one photo end to end (decode,
/// resize, crop, normalise, model, softmax), in one run: amphi natively (1 thread), amphi.wasm
/// under wasmtime (with and without deadlines), the npm package in Node, and onnxruntime (PyPI,
/// 1 thread and all threads) on the BN-folded ONNX export with Pillow's preprocessing. Every
/// runtime's top 5 must agree before the times count. Results: `target/bench/results/vision.md`.
pub(crate) fn bench_vision() -> Result<()> {
    step("set-up: EfficientNet-Lite0, amphi.wasm, the release CLI, the npm package, the peers");
    let model = crate::efficientnet::fetch_efficientnet()?;
    artifact()?;
    run(cargo().args(["build", "--release", "-p", "amphi-cli"]))?;
    let tarball = npm_package()?;
    let (python, npm) = peers(&tarball)?;
    let onnx = root().join("../shared/bench/efficientnet-lite0/model.onnx");
    ensure!(
        onnx.is_file(),
        "{} is missing (the peer's ONNX export)",
        onnx.display()
    );
    let image = std::env::var_os("AMPHI_BENCH_IMAGE")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/fixtures/images/coffee.png"));
    ensure!(
        image.is_file(),
        "{} is missing (set AMPHI_BENCH_IMAGE)",
        image.display()
    );

    let out = bench_dir().join("results");
    std::fs::create_dir_all(&out)?;
    let amphi = root().join("target/release/amphi");
    let mut files = Vec::new();
    step("amphi native (1 thread), amphi.wasm under wasmtime (deadlines between ops, preemptive)");
    for (file, extra) in [
        (
            "vision-native.json",
            &["--runtime", "native", "--profile"][..],
        ),
        ("vision-wasm.json", &["--runtime", "wasm"][..]),
        (
            "vision-wasm-preemptive.json",
            &["--runtime", "wasm", "--preemptive"][..],
        ),
    ] {
        let path = out.join(file);
        run(Command::new(&amphi)
            .arg("bench")
            .arg("--model")
            .arg(&model)
            .arg("--image")
            .arg(&image)
            .args(extra)
            .arg("--out")
            .arg(&path)
            .env("RAYON_NUM_THREADS", "1"))?;
        files.push(path);
    }
    step("Node.js: amphi's npm package");
    let node = out.join("vision-node.json");
    run(Command::new("node")
        .arg("vision-node.mjs")
        .arg(&model)
        .arg(&image)
        .arg(&node)
        .current_dir(&npm))?;
    files.push(node);
    step("onnxruntime (PyPI) with Pillow preprocessing: 1 thread, all threads");
    for (threads, file) in [("1", "vision-ort-1.json"), ("0", "vision-ort-all.json")] {
        let path = out.join(file);
        run(Command::new(&python)
            .arg(npm.join("ort_vision.py"))
            .arg(&onnx)
            .arg(&model)
            .arg(&image)
            .arg(threads)
            .arg(&path))?;
        files.push(path);
    }

    let rows: Vec<serde_json::Value> = files
        .iter()
        .map(|f| Ok(serde_json::from_slice(&std::fs::read(f)?)?))
        .collect::<Result<_>>()?;
    let labels = |r: &serde_json::Value| -> Vec<String> {
        r["top5"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|x| x["label"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    // rows[4]: onnxruntime with one thread, the reference of the ratios.
    let reference = &rows[4];
    for r in &rows {
        ensure!(
            labels(r) == labels(reference),
            "{} disagrees with onnxruntime: {:?} vs {:?}",
            r["runtime"],
            labels(r),
            labels(reference)
        );
        let (a, b) = (&r["top5"][0]["score"], &reference["top5"][0]["score"]);
        let d = (a.as_f64().unwrap_or(f64::NAN) - b.as_f64().unwrap_or(f64::NAN)).abs();
        ensure!(
            d <= 1e-4,
            "{}: top-1 probability {a} vs onnxruntime's {b}",
            r["runtime"]
        );
    }
    let ort1 = reference["median"].as_f64().context("median")?;
    let mut md = format!(
        "EfficientNet-Lite0 on {} ({}), end to end (decode, resize, crop, normalise, model, \
         softmax), batch 1; top 5 identical in every runtime ({}).\n\n\
         | runtime | median ms (min–max) | onnxruntime 1 thread ÷ this |\n|---|---|---|\n",
        image.file_name().and_then(|n| n.to_str()).unwrap_or("?"),
        output(
            Command::new("sh")
                .arg("-c")
                .arg("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2")
        )?
        .trim(),
        labels(reference).join("; ")
    );
    for r in &rows {
        let median = r["median"].as_f64().context("median")?;
        md.push_str(&format!(
            "| {} | {median:.1} ({:.1}–{:.1}) | {:.2}× |\n",
            r["runtime"].as_str().unwrap_or("?"),
            r["min"].as_f64().unwrap_or(f64::NAN),
            r["max"].as_f64().unwrap_or(f64::NAN),
            ort1 / median
        ));
    }
    let profile: Vec<String> = rows[0]["profile"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|o| o["ms_per_run"].as_f64().unwrap_or(0.0) >= 0.05)
        .map(|o| {
            format!(
                "{} {:.1} ms",
                o["op"].as_str().unwrap_or("?"),
                o["ms_per_run"].as_f64().unwrap_or(0.0)
            )
        })
        .collect();
    md.push_str(&format!(
        "\namphi native, per run: {}.\n",
        profile.join(", ")
    ));
    let wasm = root().join("target/amphi.wasm");
    md.push_str(&format!(
        "Run {} UTC on commit {}; amphi.wasm {:.2} MB, {:.2} MB gzipped.\n",
        output(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M"]))?.trim(),
        output(Command::new("git").args(["rev-parse", "--short", "HEAD"]))?.trim(),
        std::fs::metadata(&wasm)?.len() as f64 / 1e6,
        gzip_len(&wasm)? as f64 / 1e6,
    ));
    std::fs::write(out.join("vision.md"), &md)?;
    let readme = root().join("README.md");
    let doc = std::fs::read_to_string(&readme)?;
    let (start, end) = ("<!-- bench-vision:start -->", "<!-- bench-vision:end -->");
    match (doc.find(start), doc.find(end)) {
        (Some(i), Some(j)) if i < j => std::fs::write(
            &readme,
            format!("{}\n{md}{}", &doc[..i + start.len()], &doc[j..]),
        )?,
        _ => bail!("README.md has no {start} … {end} section"),
    }
    eprintln!("\n{md}");
    Ok(())
}
