//! text-generation: prompts or chat conversations continued token by token. A request is a
//! session ([`Generation`]): the prompt's prefill is one step, then one decode step per token
//! over the KV cache, each ending with the logits' readback. Streamed, every piece of text
//! that is complete (whole UTF-8 characters, no stop string it could still start) is a
//! [`Chunk`]; otherwise the response comes at the end, shaped as Hugging Face's pipeline
//! writes it (`[{"generated_text": …}]`).

use serde::{Deserialize, Serialize};

use super::{Chunk, Output, Pipeline, Response, Session, SessionStep};
use crate::backend::{Fetched, f32s};
use crate::error::{Error, Result};
use crate::generate::chat::Message;
use crate::generate::detok::Detokenizer;
use crate::generate::sample::{Sample, Sampler, Sampling};
use crate::generate::stop::{Released, StopStrings};
use crate::generator::{GeneratorModel, Run};

/// Prompts: a text, a conversation (a list of `{role, content}`), or a list of either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Prompts {
    /// One text to continue.
    Text(String),
    /// One conversation, rendered with the model's chat template.
    Chat(Vec<Message>),
    /// Several texts.
    Texts(Vec<String>),
    /// Several conversations.
    Chats(Vec<Vec<Message>>),
}

/// A stop string or a list of them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum StopList {
    /// One stop string.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// text-generation options, named as in Hugging Face `generate` (and OpenAI's penalties);
/// what is absent comes from the model's `generation_config.json`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationOptions {
    /// Tokens to generate at most (default: `generation_config.json`'s, else 256; never past
    /// the model's context).
    pub max_new_tokens: Option<usize>,
    /// Sample (`true`) or take the most likely token (`false`). Default: `true` when a
    /// `temperature` above 0 is given, else `generation_config.json`'s `do_sample`.
    pub do_sample: Option<bool>,
    /// Softmax temperature when sampling (0 means greedy).
    pub temperature: Option<f32>,
    /// Sample among the `top_k` most likely tokens (0: all).
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens whose mass reaches `top_p`.
    pub top_p: Option<f32>,
    /// Drop tokens less likely than `min_p` times the most likely one.
    pub min_p: Option<f32>,
    /// Hugging Face's repetition penalty (1: none).
    pub repetition_penalty: Option<f32>,
    /// OpenAI's presence penalty over generated tokens.
    pub presence_penalty: Option<f32>,
    /// OpenAI's frequency penalty over generated tokens.
    pub frequency_penalty: Option<f32>,
    /// The sampler's seed: the same seed, the same tokens, on every host (default 0).
    pub seed: Option<u64>,
    /// Text that ends generation when it appears (not included in the output).
    #[serde(alias = "stop_strings")]
    pub stop: Option<StopList>,
    /// Token ids that end generation, besides the model's end-of-sequence ids.
    pub stop_token_ids: Option<Vec<u32>>,
    /// Return the prompt followed by the new text (Hugging Face's default, `true`), or the
    /// new text only. For a conversation, the full text is the conversation with the
    /// assistant's reply appended.
    pub return_full_text: Option<bool>,
    /// Conversations: end the rendered prompt with the assistant's turn (default `true`).
    pub add_generation_prompt: Option<bool>,
    /// Text prompts: add the tokenizer's special tokens (BOS) (default `true`; conversations
    /// take the template's own).
    pub add_special_tokens: Option<bool>,
}

/// Why generation ended (OpenAI's `finish_reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// An end-of-sequence token, a stop token or a stop string.
    Stop,
    /// `max_new_tokens`, or the model's context.
    Length,
}

/// What a prompt generated.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum GeneratedText {
    /// The text (with the prompt before it when `return_full_text`).
    Text(String),
    /// The conversation with the assistant's reply appended.
    Chat(Vec<Message>),
}

/// One prompt's result, as Hugging Face's pipeline writes it, with why it stopped.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generated {
    /// The generated text.
    pub generated_text: GeneratedText,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Tokens generated (the end-of-sequence token included when one ended it).
    pub generated_tokens: usize,
}

/// A streamed piece of one prompt's output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TextDelta {
    /// New text (possibly empty on the last chunk).
    pub text: String,
    /// The tokens that produced it (a character split over tokens arrives with its last).
    pub token_ids: Vec<u32>,
    /// Set on a prompt's last chunk.
    pub finish_reason: Option<FinishReason>,
}

/// A text-generation request: `{"inputs": prompts, "parameters": {…}, "stream": bool}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GenerationRequest {
    pub inputs: Prompts,
    #[serde(default)]
    pub parameters: GenerationOptions,
    #[serde(default)]
    pub stream: bool,
}

/// One prompt ready to run.
struct Prompt {
    ids: Vec<u32>,
    /// The text prompt, or the conversation.
    source: Result<String, Vec<Message>>,
}

/// The options resolved against the model's defaults.
struct Settings {
    sampling: Sampling,
    max_new_tokens: usize,
    stops: Vec<String>,
    stop_ids: Vec<u32>,
    return_full_text: bool,
}

/// The prompt being generated.
struct Current {
    index: usize,
    run: Run,
    sampler: Sampler,
    detok: Detokenizer,
    stop: StopStrings,
    /// The last chosen token, fed next; `None` before the prefill.
    last: Option<u32>,
    generated: usize,
    limit: usize,
    text: String,
    /// Tokens since the last chunk.
    unsent: Vec<u32>,
    /// Tokens to count in the next chunk (the prompt's in the first).
    uncounted: usize,
    waiting: bool,
}

/// A text-generation session's state.
pub(crate) struct Generation {
    prompts: Vec<Prompt>,
    settings: Settings,
    stream: bool,
    single: bool,
    next: usize,
    current: Option<Current>,
    results: Vec<Vec<Generated>>,
    tokens: usize,
}

/// What one advance produced.
pub(crate) enum Progress {
    Chunk(Chunk),
    Pending(u32),
    Done(Option<Response>),
}

fn check(ok: bool, what: &str) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::invalid_input(format!("text-generation: {what}")))
    }
}

impl Generation {
    pub fn new(
        model: &GeneratorModel,
        request: GenerationRequest,
        max_batch: usize,
    ) -> Result<Self> {
        let o = &request.parameters;
        let g = &model.generation;
        let temperature = o.temperature.or(g.temperature).unwrap_or(1.0);
        check(
            temperature.is_finite() && temperature >= 0.0,
            "temperature must be ≥ 0",
        )?;
        let top_p = o.top_p.or(g.top_p).unwrap_or(1.0);
        check(top_p > 0.0 && top_p <= 1.0, "top_p must be in (0, 1]")?;
        let min_p = o.min_p.or(g.min_p).unwrap_or(0.0);
        check((0.0..=1.0).contains(&min_p), "min_p must be in [0, 1]")?;
        let repetition_penalty = o.repetition_penalty.or(g.repetition_penalty).unwrap_or(1.0);
        check(
            repetition_penalty > 0.0 && repetition_penalty.is_finite(),
            "repetition_penalty must be > 0",
        )?;
        let penalty = |p: Option<f32>| -> Result<f32> {
            let p = p.unwrap_or(0.0);
            check(
                p.is_finite() && (-2.0..=2.0).contains(&p),
                "presence and frequency penalties are in [-2, 2]",
            )?;
            Ok(p)
        };
        let max_new_tokens = o.max_new_tokens.or(g.max_new_tokens).unwrap_or(256);
        check(max_new_tokens > 0, "max_new_tokens must be at least 1")?;
        let do_sample = o.do_sample.unwrap_or(
            o.temperature
                .map_or(g.do_sample.unwrap_or(false), |t| t > 0.0),
        ) && temperature > 0.0;
        let sampling = Sampling {
            sample: do_sample.then(|| Sample {
                temperature,
                top_k: o.top_k.or(g.top_k).unwrap_or(0),
                top_p,
                min_p,
                seed: o.seed.unwrap_or(0),
            }),
            repetition_penalty,
            presence_penalty: penalty(o.presence_penalty)?,
            frequency_penalty: penalty(o.frequency_penalty)?,
        };
        let stops = match &o.stop {
            None => Vec::new(),
            Some(StopList::One(s)) => vec![s.clone()],
            Some(StopList::Many(v)) => v.clone(),
        };
        check(
            stops.len() <= 16 && stops.iter().all(|s| s.len() <= 256),
            "at most 16 stop strings of 256 bytes",
        )?;
        let mut stop_ids = model.eos.clone();
        stop_ids.extend(o.stop_token_ids.iter().flatten());

        let (single, sources): (bool, Vec<Result<String, Vec<Message>>>) = match request.inputs {
            Prompts::Text(t) => (true, vec![Ok(t)]),
            Prompts::Chat(c) => (true, vec![Err(c)]),
            Prompts::Texts(v) => (false, v.into_iter().map(Ok).collect()),
            Prompts::Chats(v) => (false, v.into_iter().map(Err).collect()),
        };
        check(!sources.is_empty(), "no prompts")?;
        check(
            sources
                .iter()
                .all(|s| s.as_ref().err().is_none_or(|m| !m.is_empty())),
            "a conversation without messages",
        )?;
        if sources.len() > max_batch {
            return Err(Error::InputTooLarge {
                message: format!(
                    "{} prompts in one request, the limit is {max_batch}",
                    sources.len()
                ),
            });
        }
        let prompts = sources
            .into_iter()
            .map(|source| {
                crate::interrupt::check()?;
                let ids = match &source {
                    Ok(text) => model
                        .tokenizer
                        .encode_prompt(text, o.add_special_tokens.unwrap_or(true))?,
                    Err(messages) => {
                        let chat = model.chat.as_ref().ok_or_else(|| {
                            Error::invalid_input(
                                "this model has no chat template: send a text prompt",
                            )
                        })?;
                        let text =
                            chat.render(messages, o.add_generation_prompt.unwrap_or(true))?;
                        model
                            .tokenizer
                            .encode_prompt(&text, o.add_special_tokens.unwrap_or(false))?
                    }
                };
                check(!ids.is_empty(), "an empty prompt")?;
                Ok(Prompt { ids, source })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            settings: Settings {
                sampling,
                max_new_tokens,
                stops,
                stop_ids,
                return_full_text: o.return_full_text.unwrap_or(true),
            },
            results: Vec::with_capacity(prompts.len()),
            prompts,
            stream: request.stream,
            single,
            next: 0,
            current: None,
            tokens: 0,
        })
    }

    /// Runs until a chunk is ready (streaming), a readback is awaited, or the end.
    pub fn step(&mut self, model: &GeneratorModel) -> Result<Progress> {
        loop {
            crate::interrupt::check()?;
            if self.current.as_ref().is_some_and(|c| c.waiting) {
                return Err(Error::invalid_input(
                    "the session is waiting for a readback: resume it",
                ));
            }
            if self.current.is_none() {
                let Some(prompt) = self.prompts.get(self.next) else {
                    // Streamed too: the whole response follows the last chunk.
                    return Ok(Progress::Done(Some(self.response())));
                };
                let room = model
                    .context()
                    .checked_sub(prompt.ids.len())
                    .filter(|&r| r > 0);
                let Some(room) = room else {
                    return Err(Error::InputTooLarge {
                        message: format!(
                            "the prompt is {} tokens; the model's context is {}",
                            prompt.ids.len(),
                            model.context()
                        ),
                    });
                };
                let limit = self.settings.max_new_tokens.min(room);
                // The last chosen token is never fed back, so the cache holds one less.
                let run = model.run(prompt.ids.len() + limit - 1)?;
                self.tokens += prompt.ids.len();
                self.current = Some(Current {
                    index: self.next,
                    run,
                    sampler: Sampler::new(self.settings.sampling.clone(), &prompt.ids),
                    detok: Detokenizer::default(),
                    stop: StopStrings::new(self.settings.stops.clone()),
                    last: None,
                    generated: 0,
                    limit,
                    text: String::new(),
                    unsent: Vec::new(),
                    uncounted: prompt.ids.len(),
                    waiting: false,
                });
                self.next += 1;
            }
            let prompt = &self.prompts[self.next - 1];
            let Some(current) = self.current.as_mut() else {
                continue;
            };
            let fetched = match current.last {
                None => model.step(&mut current.run, &prompt.ids)?,
                Some(t) => model.step(&mut current.run, &[t])?,
            };
            match fetched {
                Fetched::Ready(logits) => {
                    if let Some(chunk) = self.advance(model, logits)? {
                        return Ok(Progress::Chunk(chunk));
                    }
                }
                Fetched::Pending(id) => {
                    current.waiting = true;
                    return Ok(Progress::Pending(id));
                }
            }
        }
    }

    /// Finishes a step with its readback; the chunk it completed, if any (the caller steps
    /// again when there is none).
    pub fn resume(&mut self, model: &GeneratorModel, readback: &[u8]) -> Result<Option<Chunk>> {
        match self.current.as_mut() {
            Some(c) if c.waiting => c.waiting = false,
            _ => {
                return Err(Error::invalid_input(
                    "the session is not waiting for a readback",
                ));
            }
        }
        self.advance(model, f32s(readback))
    }

    /// Chooses the next token from the logits and turns it into text.
    fn advance(&mut self, model: &GeneratorModel, mut logits: Vec<f32>) -> Result<Option<Chunk>> {
        let tok = &model.tokenizer;
        let vocab = model.vocab();
        let Some(c) = self.current.as_mut() else {
            return Ok(None);
        };
        if logits.len() != vocab {
            return Err(Error::Backend {
                message: format!("{} logits for a vocabulary of {vocab}", logits.len()),
            });
        }
        let token = c.sampler.choose(&mut logits);
        c.sampler.push(token);
        c.generated += 1;
        c.unsent.push(token);
        c.uncounted += 1;
        let mut finished = None;
        let mut new_text = String::new();
        if self.settings.stop_ids.contains(&token) {
            finished = Some(FinishReason::Stop);
        } else {
            c.last = Some(token);
            let piece = c.detok.push(tok, token)?;
            match c.stop.push(&piece) {
                Released::Text(t) => new_text = t,
                Released::Stopped(t) => {
                    new_text = t;
                    finished = Some(FinishReason::Stop);
                }
            }
            if finished.is_none() && c.generated >= c.limit {
                finished = Some(FinishReason::Length);
            }
        }
        if finished == Some(FinishReason::Length)
            || (finished == Some(FinishReason::Stop) && self.settings.stop_ids.contains(&token))
        {
            // What the detokenizer and the stop strings still held.
            let rest = c.detok.finish(tok)?;
            match c.stop.push(&rest) {
                Released::Text(t) => {
                    new_text.push_str(&t);
                    new_text.push_str(&c.stop.finish());
                }
                Released::Stopped(t) => {
                    new_text.push_str(&t);
                    finished = Some(FinishReason::Stop);
                }
            }
        }
        c.text.push_str(&new_text);
        let chunk = (self.stream && (!new_text.is_empty() || finished.is_some())).then(|| Chunk {
            index: c.index,
            output: Output::Delta(vec![TextDelta {
                text: new_text,
                token_ids: std::mem::take(&mut c.unsent),
                finish_reason: finished,
            }]),
            tokens: std::mem::take(&mut c.uncounted),
        });
        if let Some(reason) = finished {
            self.tokens += c.generated;
            let prompt = &self.prompts[c.index];
            let text = std::mem::take(&mut c.text);
            let generated_text = match (&prompt.source, self.settings.return_full_text) {
                (Ok(p), true) => GeneratedText::Text(format!("{p}{text}")),
                (Err(m), true) => {
                    let mut m = m.clone();
                    m.push(Message {
                        role: "assistant".to_owned(),
                        content: text,
                    });
                    GeneratedText::Chat(m)
                }
                (_, false) => GeneratedText::Text(text),
            };
            self.results.push(vec![Generated {
                generated_text,
                finish_reason: reason,
                generated_tokens: c.generated,
            }]);
            self.current = None;
        }
        Ok(chunk)
    }

    fn response(&mut self) -> Response {
        Response {
            output: Output::Generated(std::mem::take(&mut self.results)),
            single: self.single,
            tokens: self.tokens,
        }
    }
}

impl Pipeline {
    /// Generates text for `prompts` on a host whose readbacks finish at once (every native
    /// host): the whole response, `[{"generated_text": …}]` per prompt.
    pub fn generate(&self, prompts: Prompts, options: &GenerationOptions) -> Result<Response> {
        let mut session = self.generation_session(prompts, options, false)?;
        match session.step()? {
            SessionStep::Done(Some(response)) => Ok(response),
            _ => Err(Error::Backend {
                message: "this host reads GPU buffers asynchronously: step a Session".to_owned(),
            }),
        }
    }

    /// Opens a text-generation session (`stream`: a [`Chunk`] of [`TextDelta`] whenever new
    /// text is complete).
    pub fn generation_session(
        &self,
        prompts: Prompts,
        options: &GenerationOptions,
        stream: bool,
    ) -> Result<Session> {
        let request = GenerationRequest {
            inputs: prompts,
            parameters: options.clone(),
            stream,
        };
        let generation = Generation::new(self.generator()?, request, self.limits.max_batch)?;
        Ok(Session::generating(self.clone(), generation))
    }
}
