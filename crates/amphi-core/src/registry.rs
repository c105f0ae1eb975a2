//! The architecture registry: one table from `config.json`'s `model_type` and `architectures`
//! to a loader and the checkpoint classes it serves (each class's head decides its tasks).
//!
//! Adding an architecture is one folder under `models/` and one entry in [`ARCHITECTURES`];
//! the `unsupported_architecture` message is built from this table.

use crate::error::{Error, Result};
use crate::models::{self, Head, ModelConfig, TextArchitecture};

/// How an architecture's model is built.
#[derive(Clone, Copy)]
pub(crate) enum Loader {
    /// A text encoder: parses its typed `Config` for the class's head.
    Text(fn(&ModelConfig, Head) -> Result<Box<dyn TextArchitecture>>),
    /// An image classifier (`crate::vision`).
    Image(ImageKind),
    /// A decoder of the Llama family (`crate::generator`, `models::llama`).
    Decoder,
}

/// The image architectures `crate::vision` builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageKind {
    Vit,
    EfficientNet,
}

/// A checkpoint class as `config.json`'s `architectures` names it, and its head.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Class {
    pub name: &'static str,
    pub head: Head,
}

/// One architecture: its `model_type`, the classes it serves and its loader.
pub(crate) struct Architecture {
    pub model_type: &'static str,
    /// Classes by name; the first is the one a `model_type` alone resolves to.
    pub classes: &'static [Class],
    /// Other classes of this `model_type` (a `BertForMaskedLM`) load as the first class when
    /// their name starts with this: the backbone is there, the head is not run.
    pub class_prefix: &'static str,
    pub loader: Loader,
}

const fn class(name: &'static str, head: Head) -> Class {
    Class { name, head }
}

/// Every architecture the engine implements.
pub(crate) static ARCHITECTURES: &[Architecture] = &[
    Architecture {
        model_type: "bert",
        classes: &[
            class("BertModel", Head::Base),
            class(
                "BertForSequenceClassification",
                Head::SequenceClassification,
            ),
            class("BertForTokenClassification", Head::TokenClassification),
        ],
        class_prefix: "Bert",
        loader: Loader::Text(models::bert::architecture),
    },
    Architecture {
        model_type: "roberta",
        classes: &[
            class("RobertaModel", Head::Base),
            class(
                "RobertaForSequenceClassification",
                Head::SequenceClassification,
            ),
            class("RobertaForTokenClassification", Head::TokenClassification),
        ],
        class_prefix: "Roberta",
        loader: Loader::Text(models::roberta::architecture),
    },
    Architecture {
        model_type: "xlm-roberta",
        classes: &[
            class("XLMRobertaModel", Head::Base),
            class(
                "XLMRobertaForSequenceClassification",
                Head::SequenceClassification,
            ),
            class(
                "XLMRobertaForTokenClassification",
                Head::TokenClassification,
            ),
        ],
        class_prefix: "XLMRoberta",
        loader: Loader::Text(models::roberta::architecture),
    },
    Architecture {
        model_type: "llama",
        classes: &[class("LlamaForCausalLM", Head::CausalLm)],
        class_prefix: "Llama",
        loader: Loader::Decoder,
    },
    Architecture {
        model_type: "qwen2",
        classes: &[class("Qwen2ForCausalLM", Head::CausalLm)],
        class_prefix: "Qwen2",
        loader: Loader::Decoder,
    },
    Architecture {
        model_type: "qwen3",
        classes: &[class("Qwen3ForCausalLM", Head::CausalLm)],
        class_prefix: "Qwen3",
        loader: Loader::Decoder,
    },
    Architecture {
        model_type: "gemma3_text",
        classes: &[class("Gemma3ForCausalLM", Head::CausalLm)],
        class_prefix: "Gemma3ForCausalLM",
        loader: Loader::Decoder,
    },
    Architecture {
        model_type: "vit",
        classes: &[class(
            "ViTForImageClassification",
            Head::ImageClassification,
        )],
        class_prefix: "ViTForImageClassification",
        loader: Loader::Image(ImageKind::Vit),
    },
    Architecture {
        model_type: "efficientnet-lite",
        classes: &[class(
            "EfficientNetLiteForImageClassification",
            Head::ImageClassification,
        )],
        class_prefix: "EfficientNetLiteForImageClassification",
        loader: Loader::Image(ImageKind::EfficientNet),
    },
];

/// A `config.json` resolved to an architecture and one of its classes.
pub(crate) struct Resolved {
    pub architecture: &'static Architecture,
    pub class: Class,
}

/// Finds the architecture and class a `config.json` describes: its first `architectures` entry
/// by name (within its `model_type`'s architecture when it has one), else its `model_type` or
/// the class name's prefix (the architecture's first class).
pub(crate) fn resolve(config: &ModelConfig) -> Result<Resolved> {
    let named = config.architectures.first().map(String::as_str);
    let by_type = config
        .model_type
        .as_deref()
        .and_then(|t| ARCHITECTURES.iter().find(|a| a.model_type == t));
    if let Some(name) = named {
        for architecture in ARCHITECTURES {
            if by_type.is_some_and(|a| !std::ptr::eq(a, architecture)) {
                continue;
            }
            if let Some(class) = architecture.classes.iter().find(|c| c.name == name) {
                return Ok(Resolved {
                    architecture,
                    class: *class,
                });
            }
        }
    }
    let architecture = by_type.or_else(|| {
        named.and_then(|n| ARCHITECTURES.iter().find(|a| n.starts_with(a.class_prefix)))
    });
    match architecture {
        // A `model_type` decides, as in transformers' `AutoModel`; without one, the class name.
        Some(architecture) => Ok(Resolved {
            architecture,
            class: architecture.classes[0],
        }),
        _ => Err(Error::UnsupportedArchitecture {
            architecture: config
                .model_type
                .clone()
                .or_else(|| named.map(str::to_owned))
                .map(|t| match (named, &config.model_type) {
                    (Some(n), Some(_)) => format!("{t} ({n})"),
                    _ => t,
                })
                .unwrap_or_else(|| "<none: config.json names no model_type>".to_owned()),
            supported: supported(),
        }),
    }
}

/// `bert (BertModel, …), roberta (…), …`: the table, as the error message lists it.
pub(crate) fn supported() -> String {
    ARCHITECTURES
        .iter()
        .map(|a| {
            let classes: Vec<&str> = a.classes.iter().map(|c| c.name).collect();
            format!("{} ({})", a.model_type, classes.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_json(json: &str) -> Result<(&'static str, &'static str)> {
        let r = resolve(&ModelConfig::parse(json.as_bytes())?)?;
        Ok((r.architecture.model_type, r.class.name))
    }

    #[test]
    fn configs_resolve_by_class_then_model_type() {
        let ok = |json: &str, want: (&str, &str)| {
            assert_eq!(resolve_json(json).expect(json), want, "{json}");
        };
        ok(r#"{"model_type": "bert"}"#, ("bert", "BertModel"));
        ok(
            r#"{"model_type": "bert", "architectures": ["BertForSequenceClassification"]}"#,
            ("bert", "BertForSequenceClassification"),
        );
        // A head the engine does not run: the backbone loads.
        ok(
            r#"{"model_type": "bert", "architectures": ["BertForMaskedLM"]}"#,
            ("bert", "BertModel"),
        );
        ok(
            r#"{"architectures": ["BertForTokenClassification"]}"#,
            ("bert", "BertForTokenClassification"),
        );
        ok(
            r#"{"architectures": ["XLMRobertaModel"], "model_type": "xlm-roberta"}"#,
            ("xlm-roberta", "XLMRobertaModel"),
        );
        ok(
            r#"{"architectures": ["RobertaForSequenceClassification"]}"#,
            ("roberta", "RobertaForSequenceClassification"),
        );
        ok(
            r#"{"architectures": ["ViTForImageClassification"]}"#,
            ("vit", "ViTForImageClassification"),
        );
        ok(
            r#"{"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}"#,
            ("qwen2", "Qwen2ForCausalLM"),
        );
        ok(
            r#"{"model_type": "gemma3_text"}"#,
            ("gemma3_text", "Gemma3ForCausalLM"),
        );
    }

    #[test]
    fn unknown_architectures_list_the_table() {
        for json in [
            r#"{"model_type": "gpt2"}"#,
            r#"{"architectures": ["GPT2LMHeadModel"]}"#,
            r#"{}"#,
        ] {
            let e = resolve_json(json).expect_err(json);
            assert_eq!(e.code(), "unsupported_architecture");
            let message = e.to_string();
            for a in ARCHITECTURES {
                assert!(message.contains(a.model_type), "{message}");
                for c in a.classes {
                    assert!(message.contains(c.name), "{message}");
                }
            }
        }
    }
}
