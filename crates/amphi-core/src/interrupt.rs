//! Stopping a call between two ops. A host that enforces deadlines installs a check; the engine
//! asks it before every CPU op, before each forward pass and while loading weights, and returns
//! [`Error::Interrupted`] when it says stop. The call unwinds through ordinary error returns, so
//! the instance stays usable; preempting compiled code instead (wasmtime's epoch interruption)
//! puts a check in every loop, which costs the SIMD128 kernels half their speed.
//!
//! The longest stretch between two checks is one op: at the serverless host's largest request
//! (64 inputs of 512 tokens), the largest op of a MiniLM-sized model (its FFN multiply, 39
//! GFLOP) takes under a second in amphi.wasm under wasmtime.

use crate::error::{Error, Result};

static CHECK: std::sync::OnceLock<fn() -> bool> = std::sync::OnceLock::new();

/// Installs the host's check, once per process: the engine calls `check` between ops and stops
/// the call with [`Error::Interrupted`] when it returns `true`. Returns `false` (and keeps the
/// first) if one was installed already.
pub fn set_interrupt_check(check: fn() -> bool) -> bool {
    CHECK.set(check).is_ok()
}

/// `Err(Interrupted)` if the host says stop.
pub(crate) fn check() -> Result<()> {
    match CHECK.get() {
        Some(stop) if stop() => Err(Error::Interrupted),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use crate::test_support::fixtures;
    use crate::{Error, LoadOptions, ModelFiles, Pipeline, RunOptions, Task};

    thread_local! {
        /// Per thread, so that the process-wide check stops only this test's calls.
        static STOP: Cell<bool> = const { Cell::new(false) };
    }

    fn stop() -> bool {
        STOP.with(Cell::get)
    }

    /// A stopped call returns `Interrupted`, loading too; the same model then serves the next
    /// call, with the same embedding as before (bit for bit: nothing was left half done).
    #[test]
    fn a_stopped_call_returns_interrupted_and_the_model_keeps_serving() {
        super::set_interrupt_check(stop);
        let files = || ModelFiles::from_dir(fixtures().join("models/tiny-bert")).expect("files");
        let load = || Pipeline::load(Task::FeatureExtraction, files(), &LoadOptions::default());
        let texts = ["a sentence long enough for several ops".into()];
        let options = RunOptions::default();

        STOP.with(|s| s.set(true));
        assert!(matches!(load(), Err(Error::Interrupted)));
        STOP.with(|s| s.set(false));
        let model = load().expect("load");
        let before = serde_json::to_value(model.run(&texts, &options).expect("run")).expect("json");

        STOP.with(|s| s.set(true));
        let err = model.run(&texts, &options).expect_err("interrupted");
        assert!(matches!(err, Error::Interrupted), "{err}");
        assert_eq!(err.code(), "interrupted");
        assert!(!err.is_client_error());

        STOP.with(|s| s.set(false));
        let after = serde_json::to_value(model.run(&texts, &options).expect("run")).expect("json");
        assert_eq!(before, after);
    }

    /// A stream computes each input when it is asked for the next chunk: after the first chunk,
    /// a stop makes the second step fail (so the first arrived before the second input ran).
    /// Every chunk, streamed to the end, is the non-streamed result's item at its index.
    #[test]
    fn a_stream_computes_each_input_when_asked_and_matches_the_batch() {
        super::set_interrupt_check(stop);
        let files = ModelFiles::from_dir(fixtures().join("models/tiny-bert")).expect("files");
        let p =
            Pipeline::load(Task::FeatureExtraction, files, &LoadOptions::default()).expect("load");
        let texts: Vec<crate::TextInput> = vec![
            "hello".into(),
            "a much longer sentence, which pads the others in a batch".into(),
            "third".into(),
        ];
        for options in [
            RunOptions::default(),
            RunOptions {
                pooling: Some(crate::Pooling::Mean),
                normalize: Some(true),
                ..RunOptions::default()
            },
        ] {
            let whole = serde_json::to_value(p.run(&texts, &options).expect("run")).expect("json");
            let chunks: Vec<_> = p
                .stream(&texts, &options)
                .expect("stream")
                .collect::<crate::Result<_>>()
                .expect("chunks");
            assert_eq!(chunks.len(), texts.len());
            for (i, chunk) in chunks.iter().enumerate() {
                assert_eq!(chunk.index, i);
                let got = serde_json::to_value(chunk).expect("json");
                let (got, want) = (flat(&got["output"]), flat(&whole[i]));
                assert_eq!(got.len(), want.len(), "input {i}");
                let diff = got
                    .iter()
                    .zip(&want)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                // Alone or padded in a batch, the same input: masked keys add exact zeros.
                assert!(
                    diff <= 1e-6,
                    "input {i}: streamed vs batched differ by {diff}"
                );
            }
        }

        let mut stream = p.stream(&texts, &RunOptions::default()).expect("stream");
        assert_eq!(stream.next().expect("first").expect("chunk").index, 0);
        STOP.with(|s| s.set(true));
        let second = stream.next().expect("second");
        STOP.with(|s| s.set(false));
        assert!(matches!(second, Err(Error::Interrupted)), "{second:?}");
        assert!(stream.next().is_none(), "a failed stream is finished");
    }

    fn flat(v: &serde_json::Value) -> Vec<f64> {
        match v {
            serde_json::Value::Array(items) => items.iter().flat_map(flat).collect(),
            other => vec![other.as_f64().expect("number")],
        }
    }
}
