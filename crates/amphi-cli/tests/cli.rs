//! The `amphi` command as a user runs it: arguments, stdin, JSON on stdout, one-line errors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use amphi_tests::{GoldenTensor, assert_close, fixture_model, golden, minilm_dir};
use anyhow::{Context, Result, ensure};

fn amphi(args: &[&str], stdin: Option<&str>) -> Result<Output> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_amphi"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut pipe = child.stdin.take().context("stdin")?;
    pipe.write_all(stdin.unwrap_or("").as_bytes())?;
    drop(pipe);
    Ok(child.wait_with_output()?)
}

fn json(out: &Output) -> Result<serde_json::Value> {
    ensure!(
        out.status.success(),
        "amphi failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The same command on the CPU and on the GPU (Mesa lavapipe in CI; fails without an adapter).
#[test]
fn minilm_embedding_from_an_argument_on_cpu_and_gpu() -> Result<()> {
    let dir = minilm_dir();
    let g = golden("minilm-hello-world.json")?;
    let want = GoldenTensor::parse(&g["cases"][0]["embedding"])?;
    for device in ["cpu", "gpu"] {
        let out = amphi(
            &[
                "run",
                "feature-extraction",
                "--model",
                dir.to_str().context("path")?,
                "--device",
                device,
                "--verbose",
                "hello world",
            ],
            None,
        )?;
        let got: Vec<Vec<f32>> = serde_json::from_value(json(&out)?)?;
        assert_close(
            &format!("cli embedding ({device})"),
            &got[0],
            &want.data,
            1e-5,
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            stderr.contains(&format!("device={device}")),
            "--verbose does not report device {device}: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn batch_from_stdin_with_options() -> Result<()> {
    let dir = fixture_model("tiny-bert-seqcls");
    let g = golden("tiny-bert-seqcls.json")?;
    let case = &g["cases"][6]; // batch_with_empty
    let texts = serde_json::to_string(&case["texts"])?;
    let out = amphi(
        &[
            "run",
            "text-classification",
            "-m",
            dir.to_str().context("path")?,
            "--top-k",
            "all",
        ],
        Some(&texts),
    )?;
    let got = json(&out)?;
    let want = &case["outputs"]["pipeline_all_labels"];
    for (g, w) in got
        .as_array()
        .context("list")?
        .iter()
        .zip(want.as_array().context("list")?)
    {
        for (g, w) in g
            .as_array()
            .context("list")?
            .iter()
            .zip(w.as_array().context("list")?)
        {
            ensure!(g["label"] == w["label"]);
            let d = (g["score"].as_f64().context("score")?
                - w["score"].as_f64().context("score")?)
            .abs();
            ensure!(d <= 1e-5, "score differs by {d}");
        }
    }
    Ok(())
}

#[test]
fn errors_are_one_line_with_a_code_and_nonzero_exit() -> Result<()> {
    let tiny = fixture_model("tiny-bert");
    let tiny = tiny.to_str().context("path")?;
    for (args, stdin, code) in [
        (
            vec!["run", "feature-extraction", "-m", "/no/such/model", "x"],
            None,
            "missing_file",
        ),
        (
            vec!["run", "feature-extraction", "-m", tiny],
            Some("not json"),
            "invalid_input",
        ),
        (
            vec!["run", "feature-extraction", "-m", tiny],
            Some("[]"),
            "invalid_input",
        ),
        (
            vec!["run", "text-classification", "-m", tiny, "x"],
            None,
            "unsupported_task",
        ),
    ] {
        let out = amphi(&args, stdin)?;
        ensure!(
            out.status.code() == Some(2),
            "{args:?}: exit {:?}",
            out.status.code()
        );
        let err = String::from_utf8(out.stderr)?;
        ensure!(err.lines().count() == 1, "{args:?}: not one line: {err}");
        ensure!(
            err.starts_with(&format!("error[{code}]: ")),
            "{args:?}: {err}"
        );
        ensure!(out.stdout.is_empty(), "{args:?}: printed a result");
    }
    Ok(())
}

/// `--device gpu` on a machine without a GPU (no Vulkan driver visible): a typed error, natively
/// and through the artifact.
#[test]
fn device_gpu_without_a_gpu_is_device_unavailable() -> Result<()> {
    let tiny = fixture_model("tiny-bert");
    let tiny = tiny.to_str().context("path")?;
    for runtime in ["native", "wasm"] {
        let out = Command::new(env!("CARGO_BIN_EXE_amphi"))
            .args(["run", "feature-extraction", "-m", tiny, "--device", "gpu"])
            .args(["--runtime", runtime, "x"])
            .env("VK_ICD_FILENAMES", "/nonexistent/icd.json")
            .env("VK_DRIVER_FILES", "/nonexistent/icd.json")
            .output()?;
        let err = String::from_utf8(out.stderr)?;
        ensure!(
            out.status.code() == Some(2),
            "{runtime}: exit {:?}: {err}",
            out.status.code()
        );
        ensure!(
            err.starts_with("error[device_unavailable]: "),
            "{runtime}: {err}"
        );
    }
    Ok(())
}

#[test]
fn runtime_wasm_gives_the_same_results_and_errors() -> Result<()> {
    let artifact = amphi_tests::artifact_path();
    let artifact = artifact.to_str().context("path")?;
    let dir = minilm_dir();
    let dir = dir.to_str().context("path")?;
    let out = amphi(
        &[
            "run",
            "feature-extraction",
            "--runtime",
            "wasm",
            "--artifact",
            artifact,
            "-m",
            dir,
            "hello world",
        ],
        None,
    )?;
    let got: Vec<Vec<f32>> = serde_json::from_value(json(&out)?)?;
    let want = GoldenTensor::parse(&golden("minilm-hello-world.json")?["cases"][0]["embedding"])?;
    assert_close("wasm cli embedding", &got[0], &want.data, 1e-5)?;

    // Same shape of output as the native path for a classification batch.
    let tiny = fixture_model("tiny-bert-tokcls");
    let tiny = tiny.to_str().context("path")?;
    let args = [
        "run",
        "token-classification",
        "-m",
        tiny,
        "--aggregation-strategy",
        "simple",
    ];
    let stdin = r#"["My name is Sarah and I live in London.", "short text"]"#;
    let native = json(&amphi(&args, Some(stdin))?)?;
    let mut wasm_args = args.to_vec();
    wasm_args.extend(["--runtime", "wasm", "--artifact", artifact]);
    let wasm = json(&amphi(&wasm_args, Some(stdin))?)?;
    let strip = |v: &serde_json::Value| -> serde_json::Value {
        let mut v = v.clone();
        for text in v.as_array_mut().into_iter().flatten() {
            for e in text.as_array_mut().into_iter().flatten() {
                e["score"] = serde_json::Value::Null;
            }
        }
        v
    };
    ensure!(
        strip(&native) == strip(&wasm),
        "native {native}\nwasm {wasm}"
    );

    // Errors keep their codes through the artifact.
    let out = amphi(
        &[
            "run",
            "feature-extraction",
            "--runtime",
            "wasm",
            "--artifact",
            artifact,
            "-m",
            tiny,
        ],
        Some("[]"),
    )?;
    ensure!(out.status.code() == Some(2));
    let err = String::from_utf8(out.stderr)?;
    ensure!(err.starts_with("error[invalid_input]: "), "{err}");
    Ok(())
}

#[test]
fn models_by_hub_id_are_downloaded_into_the_cache() -> Result<()> {
    let hub = amphi_tests::hub_mimic::start();
    let cache = std::env::temp_dir().join(format!("amphi-cli-hub-{}", std::process::id()));
    let run = |args: &[&str]| -> Result<Output> {
        Ok(Command::new(env!("CARGO_BIN_EXE_amphi"))
            .args(args)
            .env("HF_ENDPOINT", &hub.endpoint)
            .env("AMPHI_CACHE_DIR", &cache)
            .stdin(Stdio::null())
            .output()?)
    };
    let out = run(&[
        "run",
        "text-classification",
        "--model",
        "fixtures/tiny-bert-seqcls",
        "--top-k",
        "all",
        "My name is Sarah and I live in London.",
    ])?;
    let got = json(&out)?;
    let g = golden("tiny-bert-seqcls.json")?;
    let want = &g["cases"][6]["outputs"]["pipeline_all_labels"][2];
    ensure!(got[0]["label"] == want[0]["label"], "{got} vs {want}");
    ensure!(
        cache
            .join("hub/fixtures--tiny-bert-seqcls/main/model.safetensors")
            .is_file()
    );
    let served = hub.requests.load(std::sync::atomic::Ordering::SeqCst);
    // A second run is served from the cache.
    json(&run(&[
        "run",
        "text-classification",
        "--model",
        "hub:fixtures/tiny-bert-seqcls",
        "x",
    ])?)?;
    ensure!(
        hub.requests.load(std::sync::atomic::Ordering::SeqCst) == served,
        "hit the hub again"
    );
    let out = run(&[
        "run",
        "text-classification",
        "--model",
        "fixtures/nothing-here",
        "x",
    ])?;
    ensure!(out.status.code() == Some(2));
    ensure!(String::from_utf8(out.stderr)?.starts_with("error[missing_file]: "));
    let _ = std::fs::remove_dir_all(&cache);
    Ok(())
}

/// `amphi bench`: the inputs are exactly `seq` tokens, and the embeddings it times agree between
/// the native engine and amphi.wasm, with either kind of deadline (cosine ≥ 0.9999, the harness's
/// own check), and with a plain `amphi run` of the same texts (abs 1e-5). Every runtime also
/// reports its kernel microbenchmarks, and `--profile` puts time in the matrix multiply, natively
/// (timed) and in amphi.wasm (sampled).
#[test]
fn bench_times_agreeing_embeddings_on_exact_shapes() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("amphi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let model = minilm_dir();
    let model = model.to_string_lossy();
    let path = |f: &str| dir.join(f).to_string_lossy().into_owned();
    let shapes = ["--shapes", "1x8,2x16"];
    let quick = ["--warmup", "1", "--min-runs", "1", "--max-runs", "1"];
    let wrote = amphi(
        &[
            &[
                "bench",
                "--model",
                &model,
                "--write-inputs",
                &path("inputs.json"),
            ],
            &shapes[..],
        ]
        .concat(),
        None,
    )?;
    ensure!(
        wrote.status.success(),
        "{}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    let inputs: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("inputs.json"))?)?;
    let mut results = Vec::new();
    for (i, (runtime, extra)) in [
        ("native", &["--profile"][..]),
        ("wasm", &["--preemptive", "--profile"][..]),
        ("wasm", &[][..]),
        // The WGSL kernels through wgpu (lavapipe in CI): a GPU must be found.
        ("native", &["--device", "gpu"][..]),
    ]
    .into_iter()
    .enumerate()
    {
        let out = path(&format!("{i}.json"));
        let status = amphi(
            &[
                &[
                    "bench",
                    "--model",
                    &model,
                    "--runtime",
                    runtime,
                    "--out",
                    &out,
                ],
                &shapes[..],
                &quick[..],
                extra,
            ]
            .concat(),
            None,
        )?;
        ensure!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        let result = serde_json::from_slice::<serde_json::Value>(&std::fs::read(&out)?)?;
        let kernels = &result["kernels"];
        if extra.contains(&"gpu") {
            // The microbenchmarks are the CPU kernel's: skipped on the GPU.
            ensure!(kernels.is_null(), "gpu: kernels {kernels}");
            let name = result["runtime"].as_str().unwrap_or_default();
            ensure!(name.starts_with("amphi native (GPU f32: "), "{name}");
            results.push(result);
            continue;
        }
        for key in ["peak_gflops", "matmul_gflops"] {
            ensure!(
                kernels[key].as_f64().is_some_and(|g| g > 0.0),
                "{runtime} {extra:?}: {key} in {kernels}"
            );
        }
        if extra.contains(&"--profile") {
            // Natively each op's time; in amphi.wasm stack samples every 5 ms (a dozen or so
            // here), most of them in the matrix multiply.
            let matmul: Vec<&serde_json::Value> = result["results"]
                .as_array()
                .context("results")?
                .iter()
                .flat_map(|r| r["profile"].as_array().into_iter().flatten())
                .filter(|o| o["op"] == "matmul")
                .collect();
            ensure!(
                matmul.iter().any(|o| o["share"].as_f64() > Some(0.0)),
                "{runtime}: no matmul in the profile: {}",
                result["results"]
                    .as_array()
                    .map(|r| r
                        .iter()
                        .map(|x| x["profile"].to_string())
                        .collect::<Vec<_>>()
                        .join("; "))
                    .unwrap_or_default()
            );
        }
        results.push(result);
    }
    for (s, shape) in inputs["shapes"]
        .as_array()
        .context("shapes")?
        .iter()
        .enumerate()
    {
        let seq = shape["seq"].as_u64().context("seq")? as usize;
        for ids in shape["ids"].as_array().context("ids")? {
            ensure!(
                ids.as_array().map(Vec::len) == Some(seq),
                "{ids} is not {seq} tokens"
            );
        }
        let texts: Vec<String> = serde_json::from_value(shape["texts"].clone())?;
        let run = json(&amphi(
            &[
                "run",
                "feature-extraction",
                "--model",
                &model,
                "--device",
                "cpu",
            ],
            Some(&serde_json::to_string(&texts)?),
        )?)?;
        let floats = |v: &serde_json::Value| -> Result<Vec<Vec<f32>>> {
            Ok(serde_json::from_value(v.clone())?)
        };
        let native = floats(&results[0]["results"][s]["embeddings"])?;
        for other in &results[1..] {
            let wasm = floats(&other["results"][s]["embeddings"])?;
            for (i, (a, b)) in native.iter().zip(&wasm).enumerate() {
                let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                ensure!(
                    cos >= 0.9999,
                    "shape {s} text {i}: native vs {} cosine {cos}",
                    other["runtime"]
                );
            }
        }
        for (i, a) in native.iter().enumerate() {
            assert_close(&format!("shape {s} text {i}"), a, &floats(&run)?[i], 1e-5)?;
        }
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// `amphi bench --device gpu` is the native runtime's: amphi.wasm under `amphi bench` runs on the
/// CPU, so the combination is refused before anything loads.
#[test]
fn bench_refuses_the_gpu_in_wasm() -> Result<()> {
    let model = minilm_dir();
    let ran = amphi(
        &[
            "bench",
            "--model",
            &model.to_string_lossy(),
            "--runtime",
            "wasm",
            "--device",
            "gpu",
        ],
        None,
    )?;
    let stderr = String::from_utf8_lossy(&ran.stderr);
    ensure!(!ran.status.success(), "accepted: {stderr}");
    ensure!(
        stderr.contains("invalid_input") && stderr.contains("native runtime only"),
        "{stderr}"
    );
    Ok(())
}

/// `amphi bench --step`: a harness paces the runs (`warm`, `run`, `done` per shape, in any
/// order), each command is answered with one `ok`, and the results hold exactly the runs asked
/// for; a command it does not know ends it with an error.
#[test]
fn bench_runs_are_paced_from_stdin() -> Result<()> {
    let model = minilm_dir();
    let model = model.to_string_lossy();
    let out = std::env::temp_dir().join(format!("amphi-step-{}.json", std::process::id()));
    let out_path = out.to_string_lossy();
    let argv = [
        "bench",
        "--model",
        &model,
        "--runtime",
        "native",
        "--no-kernels",
        "--warmup",
        "1",
        "--shapes",
        "1x8,2x16",
        "--step",
        "--out",
        &out_path,
    ];
    let commands = "warm 1\nrun 1\nrun 1\ndone 1\nwarm 0\nrun 0\ndone 0\n";
    let ran = amphi(&argv, Some(commands))?;
    ensure!(
        ran.status.success(),
        "{}",
        String::from_utf8_lossy(&ran.stderr)
    );
    ensure!(
        String::from_utf8_lossy(&ran.stdout) == "ok\n".repeat(8),
        "stdout {:?}",
        String::from_utf8_lossy(&ran.stdout)
    );
    let result: serde_json::Value = serde_json::from_slice(&std::fs::read(&out)?)?;
    let rows = result["results"].as_array().context("results")?;
    let got: Vec<(u64, u64, usize)> = rows
        .iter()
        .map(|r| {
            (
                r["batch"].as_u64().unwrap_or(0),
                r["seq"].as_u64().unwrap_or(0),
                r["ms"].as_array().map_or(0, Vec::len),
            )
        })
        .collect();
    ensure!(got == [(2, 16, 2), (1, 8, 1)], "{got:?}");
    std::fs::remove_file(&out)?;
    let bad = amphi(&argv, Some("warm 0\njump 0\n"))?;
    ensure!(
        !bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("jump"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    Ok(())
}

/// `amphi run image-classification`: a file argument, a JSON list of paths on stdin, natively
/// and through amphi.wasm (same labels, probabilities within 1e-5 of the golden), and one-line
/// errors for a file that is not an image.
#[test]
fn image_classification_from_files_native_and_wasm() -> Result<()> {
    let artifact = amphi_tests::artifact_path();
    let artifact = artifact.to_str().context("path")?;
    let vit = fixture_model("tiny-vit");
    let vit = vit.to_str().context("path")?;
    let g = golden("tiny-vit.json")?;
    let fixtures = amphi_tests::fixtures();
    let image = |name: &str| {
        fixtures
            .join("images")
            .join(name)
            .to_string_lossy()
            .into_owned()
    };
    for runtime in ["native", "wasm"] {
        let common = ["--runtime", runtime, "--artifact", artifact, "-m", vit];
        let mut args = vec!["run", "image-classification"];
        args.extend(common);
        let chelsea = image("chelsea.png");
        let mut one = args.clone();
        one.extend(["--top-k", "all", chelsea.as_str()]);
        let out = json(&amphi(&one, None)?)?;
        let want = &g["cases"][0]["pipeline"];
        let labels = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .map(|x| x["label"].as_str().unwrap_or("").to_owned())
                .collect()
        };
        ensure!(labels(&out) == labels(want), "{runtime}: {out} vs {want}");
        for (got, want) in out
            .as_array()
            .into_iter()
            .flatten()
            .zip(want.as_array().into_iter().flatten())
        {
            let (got, want) = (got["score"].as_f64(), want["score"].as_f64());
            ensure!(
                matches!((got, want), (Some(a), Some(b)) if (a - b).abs() <= 1e-5),
                "{runtime}: {got:?} vs {want:?}"
            );
        }
        let stdin = serde_json::to_string(&[image("chelsea.png"), image("coffee.png")])?;
        let batch = json(&amphi(&args, Some(&stdin))?)?;
        ensure!(
            batch.as_array().map(Vec::len) == Some(2),
            "{runtime}: {batch}"
        );
        ensure!(
            batch[1][0]["label"] == "dog",
            "{runtime}: tiny-vit's coffee.png: {batch}"
        );

        let not_an_image = fixture_model("tiny-vit").join("config.json");
        let mut bad = args.clone();
        bad.push(not_an_image.to_str().context("path")?);
        let out = amphi(&bad, None)?;
        ensure!(
            out.status.code() == Some(2),
            "{runtime}: exit {:?}",
            out.status
        );
        let err = String::from_utf8(out.stderr)?;
        ensure!(
            err.starts_with("error[invalid_image]: "),
            "{runtime}: {err}"
        );
        ensure!(err.lines().count() == 1, "{runtime}: {err}");
    }
    Ok(())
}

/// `--stream`: one JSON line per input, in input order, natively and through amphi.wasm; each
/// line is printed when its input has been computed — a token-classification stream whose third
/// input is a pair (refused when its turn comes) prints two lines, then fails.
#[test]
fn stream_prints_a_line_per_input_native_and_wasm() -> Result<()> {
    let artifact = amphi_tests::artifact_path();
    let g = golden("tiny-xlmr.json")?;
    let case = g["cases"]
        .as_array()
        .context("cases")?
        .iter()
        .find(|c| c["name"] == "batch_padded")
        .context("batch_padded")?;
    let want = GoldenTensor::parse(&case["embedding"])?;
    let xlmr = fixture_model("tiny-xlmr");
    let tokcls = fixture_model("tiny-bert-tokcls");
    for runtime in ["native", "wasm"] {
        let base = |task: &'static str, model: &std::path::Path| -> Result<Vec<String>> {
            Ok([
                "run",
                task,
                "--stream",
                "--device",
                "cpu",
                "--runtime",
                runtime,
                "--artifact",
                artifact.to_str().context("path")?,
                "-m",
                model.to_str().context("path")?,
            ]
            .map(str::to_owned)
            .to_vec())
        };
        let args = base("feature-extraction", &xlmr)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = amphi(&args, Some(&case["texts"].to_string()))?;
        ensure!(
            out.status.success(),
            "{runtime}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)?
            .lines()
            .map(serde_json::from_str)
            .collect::<Result<_, _>>()?;
        ensure!(lines.len() == 3, "{runtime}: {} lines", lines.len());
        for (i, line) in lines.iter().enumerate() {
            ensure!(
                line["index"] == i,
                "{runtime}: line {i} is {}",
                line["index"]
            );
            let got: Vec<f32> = serde_json::from_value(line["output"].clone())?;
            assert_close(&format!("{runtime} stream[{i}]"), &got, want.row(i), 1e-6)?;
        }

        let args = base("token-classification", &tokcls)?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let stdin = r#"["My name is Sarah.", "hello world", {"text": "a", "text_pair": "pair"}]"#;
        let out = amphi(&args, Some(stdin))?;
        let stdout = String::from_utf8(out.stdout)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            !out.status.success()
                && stdout.lines().count() == 2
                && stderr.contains("invalid_input"),
            "{runtime}: {stdout} / {stderr}"
        );
    }
    Ok(())
}

/// `amphi run text-generation`: the golden's greedy text as Hugging Face's pipeline JSON, the
/// same text streamed to stdout (natively and through amphi.wasm), and a conversation from
/// stdin with `--chat`.
#[test]
fn text_generation_prints_json_or_streams_text_native_and_wasm() -> Result<()> {
    let g = golden("tiny-llama.json")?;
    let p = &g["prompts"][0];
    let dir = fixture_model("tiny-llama");
    let dir = dir.to_str().context("path")?;
    let prompt = p["prompt"].as_str().context("prompt")?;
    let greedy = p["greedy_text"].as_str().context("greedy_text")?;
    for runtime in ["native", "wasm"] {
        let base = [
            "run",
            "text-generation",
            "--model",
            dir,
            "--runtime",
            runtime,
        ];
        let args = [
            &base[..],
            &[prompt, "--max-new-tokens", "20", "--do-sample", "false"],
        ]
        .concat();
        let out = json(&amphi(&args, None)?)?;
        ensure!(
            out[0]["generated_text"] == p["full_text"],
            "{runtime}: {out}"
        );
        let args = [&base[..], &[prompt, "--max-new-tokens", "20", "--stream"]].concat();
        let out = amphi(&args, None)?;
        ensure!(
            out.status.success(),
            "{runtime}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        ensure!(
            String::from_utf8(out.stdout)? == format!("{greedy}\n"),
            "{runtime}: streamed text"
        );
    }
    let qwen = fixture_model("tiny-qwen2");
    let case = &golden("tiny-qwen2.json")?["chat_template_case"];
    let args = [
        "run",
        "text-generation",
        "--model",
        qwen.to_str().context("path")?,
        "--chat",
        "--max-new-tokens",
        "4",
    ];
    let out = json(&amphi(&args, Some(&case["messages"].to_string()))?)?;
    let conversation = out[0]["generated_text"]
        .as_array()
        .context("a conversation")?;
    ensure!(
        conversation
            .last()
            .is_some_and(|m| m["role"] == "assistant"),
        "{out}"
    );
    let bad = amphi(
        &[
            "run",
            "text-generation",
            "--model",
            dir,
            "x",
            "--top-p",
            "0",
        ],
        None,
    )?;
    ensure!(bad.status.code() == Some(2), "a bad option exits 2");
    ensure!(
        String::from_utf8_lossy(&bad.stderr).starts_with("error[invalid_input]"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    Ok(())
}
