//! Chat prompts: `messages` rendered with the model's own `chat_template` (the Jinja in
//! `tokenizer_config.json`, or `chat_template.jinja` beside it), as Transformers'
//! `apply_chat_template` renders it: `messages`, `add_generation_prompt`, the special tokens
//! (`bos_token`, `eos_token`, …) and `raise_exception`. There is no `strftime_now`, so
//! templates that date their system prompt take their fixed fallback date and the same
//! request renders the same prompt on every host and day.

use minijinja::{Environment, ErrorKind, Value};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user`, `assistant` (or a template's own roles).
    pub role: String,
    /// The text.
    pub content: String,
}

/// A compiled chat template and the special tokens it may refer to.
#[derive(Debug)]
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    tokens: Vec<(&'static str, String)>,
}

fn template_error(e: &minijinja::Error) -> Error {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    Error::InvalidConfig {
        file: "tokenizer_config.json".to_owned(),
        message: format!("chat_template: {message}"),
    }
}

impl ChatTemplate {
    /// Compiles `source`; `tokens` are the special tokens by their `tokenizer_config.json`
    /// names (`bos_token`, `eos_token`, `pad_token`, `unk_token`).
    pub fn new(source: String, tokens: Vec<(&'static str, String)>) -> Result<Self> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned("chat", source)
            .map_err(|e| template_error(&e))?;
        Ok(Self { env, tokens })
    }

    /// Renders a conversation.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let template = self
            .env
            .get_template("chat")
            .map_err(|e| template_error(&e))?;
        let mut ctx: std::collections::BTreeMap<&str, Value> = self
            .tokens
            .iter()
            .map(|(k, v)| (*k, Value::from(v.as_str())))
            .collect();
        ctx.insert("messages", Value::from_serialize(messages));
        ctx.insert("add_generation_prompt", Value::from(add_generation_prompt));
        template.render(ctx).map_err(|e| {
            // A template's own `raise_exception` is about the request, not the model.
            if e.kind() == ErrorKind::InvalidOperation {
                Error::invalid_input(format!("chat template: {}", e.detail().unwrap_or("")))
            } else {
                template_error(&e)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{fixtures, json};

    fn template(model: &str) -> ChatTemplate {
        let cfg: serde_json::Value = serde_json::from_slice(
            &std::fs::read(fixtures().join(format!("models/{model}/tokenizer_config.json")))
                .expect("tokenizer_config.json"),
        )
        .expect("json");
        let token = |k: &str| cfg[k].as_str().unwrap_or("").to_owned();
        ChatTemplate::new(
            cfg["chat_template"]
                .as_str()
                .expect("chat_template")
                .to_owned(),
            vec![
                ("bos_token", token("bos_token")),
                ("eos_token", token("eos_token")),
            ],
        )
        .expect("compiles")
    }

    /// The fixtures' rendered prompts (Transformers' `apply_chat_template`), exactly.
    #[test]
    fn renders_the_fixtures_templates_as_transformers() {
        for model in ["tiny-qwen2", "tiny-qwen3", "tiny-gemma3"] {
            let case = &json(&format!("golden/{model}.json"))["chat_template_case"];
            let messages: Vec<Message> =
                serde_json::from_value(case["messages"].clone()).expect("messages");
            let got = template(model)
                .render(
                    &messages,
                    case["add_generation_prompt"].as_bool().expect("flag"),
                )
                .expect("renders");
            assert_eq!(got, case["text"].as_str().expect("text"), "{model}");
        }
    }

    /// Python string methods (minijinja-contrib's pycompat) and `raise_exception` as a typed
    /// invalid-input error.
    #[test]
    fn python_methods_and_raise_exception() {
        let t = ChatTemplate::new(
            "{% if messages[0].role != 'user' %}{{ raise_exception('Conversations start with a user') }}{% endif %}{{ messages[0].content.strip().upper() }}".to_owned(),
            vec![],
        )
        .expect("compiles");
        let m = |role: &str| {
            vec![Message {
                role: role.into(),
                content: "  hi ".into(),
            }]
        };
        assert_eq!(t.render(&m("user"), false).expect("renders"), "HI");
        let e = t.render(&m("system"), false).expect_err("raises");
        assert_eq!(e.code(), "invalid_input");
        assert!(e.to_string().contains("start with a user"), "{e}");
        assert!(ChatTemplate::new("{% if %}".to_owned(), vec![]).is_err());
    }
}
