//! Arbitrary model folders: a real tiny fixture (BERT, BERT + sequence head, BERT + token head,
//! ViT) edited by the input, then loaded with `amphi_core` and, when it loads, run on a short
//! input for every task it accepts.
//!
//! The input is a structured mutation, so that the corpus stays meaningful (a few bytes each)
//! while the fixture files are large: byte 0 picks the fixture, then each edit is one byte
//! (which of [`ModelFiles::KNOWN`] and what to do) and its operands:
//! replace the file (or create it), overwrite bytes at an offset, insert bytes, truncate,
//! remove, set a JSON value at a dotted path, or remove one. For `model.safetensors` the JSON
//! edits apply to its header (re-encoded with the right length), so shapes, dtypes and offsets
//! can be changed one at a time. What is left after the edits is the text to run.
//!
//! Loading must never panic, abort or exhaust memory: a typed [`amphi_core::Error`] is fine.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use amphi_core::image::ImageInput;
use amphi_core::{Device, LoadOptions, Model, ModelFiles, Pipeline, RunOptions, Task, TextInput};
use serde_json::Value;

use crate::common::{Input, fixture_model};

/// The fixtures edits start from.
const BASES: [&str; 4] = [
    "tiny-bert",
    "tiny-bert-seqcls",
    "tiny-bert-tokcls",
    "tiny-vit",
];

/// Most edits per input.
const MAX_EDITS: usize = 8;

/// Decoded pixels per image: small, so that no valid input allocates much.
const MAX_IMAGE_PIXELS: u64 = 1 << 16;

fn bases() -> &'static HashMap<&'static str, ModelFiles> {
    static FILES: OnceLock<HashMap<&'static str, ModelFiles>> = OnceLock::new();
    FILES.get_or_init(|| {
        BASES
            .into_iter()
            .map(|name| {
                let dir = fixture_model(name);
                match ModelFiles::from_dir(&dir) {
                    // A missing fixture makes the target meaningless: stop here.
                    Ok(files) => (name, files),
                    Err(e) => panic!(
                        "{}: {e} (the fixtures: ../shared/fixtures or $AMPHI_FIXTURES)",
                        dir.display()
                    ),
                }
            })
            .collect()
    })
}

/// A dotted path into a JSON value: object keys, or array indices.
fn json_edit(root: &mut Value, path: &str, value: Option<Value>) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut at = root;
    for p in parts {
        at = match at {
            Value::Object(o) => o
                .entry(p.to_owned())
                .or_insert_with(|| Value::Object(serde_json::Map::new())),
            Value::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                Some(v) => v,
                None => return,
            },
            _ => return,
        };
    }
    match (at, value) {
        (Value::Object(o), Some(v)) => {
            o.insert(last.to_owned(), v);
        }
        (Value::Object(o), None) => {
            o.remove(last);
        }
        (Value::Array(a), v) => {
            if let Ok(i) = last.parse::<usize>() {
                match v {
                    Some(v) if i < a.len() => a[i] = v,
                    Some(v) => a.push(v),
                    None if i < a.len() => {
                        a.remove(i);
                    }
                    None => {}
                }
            }
        }
        _ => {}
    }
}

/// Applies a JSON edit to a file: the whole file, or a safetensors header.
fn edit_json(name: &str, bytes: &mut Vec<u8>, path: &str, value: Option<Value>) {
    if name == "model.safetensors" {
        let Some(n) = bytes.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
            return;
        };
        let n = u64::from_le_bytes(n);
        let Some(end) = usize::try_from(n).ok().and_then(|n| n.checked_add(8)) else {
            return;
        };
        let Some(header) = bytes.get(8..end) else {
            return;
        };
        let Ok(mut json) = serde_json::from_slice::<Value>(header) else {
            return;
        };
        json_edit(&mut json, path, value);
        let Ok(header) = serde_json::to_vec(&json) else {
            return;
        };
        let mut out = (header.len() as u64).to_le_bytes().to_vec();
        out.extend_from_slice(&header);
        out.extend_from_slice(&bytes[end..]);
        *bytes = out;
    } else {
        let Ok(mut json) = serde_json::from_slice::<Value>(bytes) else {
            return;
        };
        json_edit(&mut json, path, value);
        if let Ok(b) = serde_json::to_vec(&json) {
            *bytes = b;
        }
    }
}

/// An offset into a file of `len` bytes: usually near the start (headers, keys), anywhere
/// otherwise.
fn offset(input: &mut Input<'_>, len: usize) -> usize {
    let raw = match input.u8() % 4 {
        0 => input.u32() as usize,
        _ => usize::from(input.u16()),
    };
    raw % (len + 1)
}

/// The folder the input describes, and the text to run.
fn decode(data: &[u8]) -> (ModelFiles, String) {
    let mut input = Input(data);
    let base = input.pick(&BASES);
    let mut files = bases()[base].clone();
    let known = ModelFiles::KNOWN;
    let edits = usize::from(input.u8()) % (MAX_EDITS + 1);
    for _ in 0..edits {
        let op = input.u8();
        let name = known[usize::from(op) % known.len()];
        let mut bytes = files.take(name).unwrap_or_default();
        let mut keep = true;
        match (usize::from(op) / known.len()) % 7 {
            0 => bytes = input.chunk().to_vec(),
            1 => {
                let at = offset(&mut input, bytes.len());
                let patch = input.chunk();
                let end = (at + patch.len()).min(bytes.len());
                bytes[at..end].copy_from_slice(&patch[..end - at]);
            }
            2 => {
                let at = offset(&mut input, bytes.len());
                let patch = input.chunk();
                bytes.splice(at..at, patch.iter().copied());
            }
            3 => {
                let at = offset(&mut input, bytes.len());
                bytes.truncate(at);
            }
            4 => keep = false,
            k => {
                let path = String::from_utf8_lossy(input.chunk()).into_owned();
                let value = (k == 5).then(|| {
                    let raw = input.chunk();
                    serde_json::from_slice(raw).unwrap_or_else(|_| {
                        Value::String(String::from_utf8_lossy(raw).into_owned())
                    })
                });
                edit_json(name, &mut bytes, &path, value);
            }
        }
        if keep {
            files.insert(name, bytes);
        }
    }
    let text = String::from_utf8_lossy(input.take(256)).into_owned();
    (files, text)
}

/// The target: load the edited folder; run every task it accepts.
pub fn model_files(data: &[u8]) {
    let (files, text) = decode(data);
    let options = LoadOptions {
        device: Device::Cpu,
        max_image_pixels: Some(MAX_IMAGE_PIXELS),
        ..LoadOptions::default()
    };
    let Ok(model) = Model::load(files, &options) else {
        return;
    };
    let model = Arc::new(model);
    let _ = serde_json::to_string(&model.info());
    let limits = amphi_core::Limits {
        max_batch: 4,
        max_input_bytes: 1024,
    };
    let text = if text.is_empty() {
        "hello world".to_owned()
    } else {
        text
    };
    let inputs = [
        TextInput::from(text.as_str()),
        TextInput::Pair {
            text: "a pair".to_owned(),
            text_pair: text.clone(),
        },
    ];
    for task in Task::ALL {
        let Ok(pipeline) = Pipeline::new(task, model.clone()) else {
            continue;
        };
        let pipeline = pipeline.with_limits(limits);
        if task == Task::ImageClassification {
            let rgba: Vec<u8> = text.bytes().cycle().take(7 * 5 * 4).collect();
            let image = ImageInput::Rgba {
                width: 7,
                height: 5,
                data: if rgba.is_empty() { vec![0; 140] } else { rgba },
            };
            let _ = pipeline.run_images(vec![image], &RunOptions::default());
        } else {
            let _ = pipeline.run(&inputs, &RunOptions::default());
            let _ = pipeline.run(&inputs[..1], &RunOptions::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_edits_reach_nested_values_and_safetensors_headers() {
        let mut v: Value = serde_json::json!({"a": {"b": [1, 2]}});
        json_edit(&mut v, "a.b.1", Some(Value::from(7)));
        json_edit(&mut v, "a.c", Some(Value::from("x")));
        json_edit(&mut v, "a.b.0", None);
        assert_eq!(v, serde_json::json!({"a": {"b": [7], "c": "x"}}));

        let header = br#"{"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#;
        let mut st = (header.len() as u64).to_le_bytes().to_vec();
        st.extend_from_slice(header);
        st.extend_from_slice(&[0, 0, 128, 63]);
        edit_json(
            "model.safetensors",
            &mut st,
            "t.shape.0",
            Some(Value::from(2)),
        );
        let n = u64::from_le_bytes(st[..8].try_into().unwrap_or_default()) as usize;
        let json: Value = serde_json::from_slice(&st[8..8 + n]).unwrap_or_default();
        assert_eq!(json["t"]["shape"], serde_json::json!([2]));
        assert_eq!(&st[8 + n..], &[0, 0, 128, 63]);
    }

    #[test]
    fn every_base_loads_unedited() {
        for (i, base) in BASES.iter().enumerate() {
            let (files, _) = decode(&[i as u8]);
            let options = LoadOptions {
                device: Device::Cpu,
                ..LoadOptions::default()
            };
            if let Err(e) = Model::load(files, &options) {
                panic!("{base}: {e}");
            }
        }
        model_files(&[]);
        model_files(&[3, 1, 4]);
    }
}
