//! Sessions: a request that a host steps until it is done. Each step ends with a chunk of
//! output ready, waiting for a GPU readback, or done. A session owns its request's state,
//! checks the deadline at every step, and frees everything when the host drops it.
//!
//! A plain request is a one-step session (its whole [`Response`] at the first step). A
//! streamed text request (`"stream": true`) runs one input per step and yields each input's
//! result as a [`Chunk`] as soon as it is computed, in input order.

use serde::Serialize;
use serde::ser::SerializeStruct;

use super::text_generation::{Generation, GenerationRequest, Progress};
use super::{Inputs, Output, Pending, Pipeline, Request, RunOptions, Started, Step, Task};
use crate::backend::f32s;
use crate::error::{Error, Result};
use crate::tokenizer::TextInput;

/// The result for one input of a streamed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// The input's position in the request.
    pub index: usize,
    /// Its result (an output covering one input).
    pub output: Output,
    /// Tokens processed for it (special tokens included).
    pub tokens: usize,
}

/// `{"index": i, "output": <the item the non-streamed list would hold at i>}`.
impl Serialize for Chunk {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Chunk", 2)?;
        m.serialize_field("index", &self.index)?;
        match &self.output {
            Output::Pooled(v) => m.serialize_field("output", &v[0])?,
            Output::Tokens(v) => m.serialize_field("output", &v[0])?,
            Output::Best(v) => m.serialize_field("output", &v[0])?,
            Output::Ranked(v) => m.serialize_field("output", &v[0])?,
            Output::Entities(v) => m.serialize_field("output", &v[0])?,
            Output::Generated(v) => m.serialize_field("output", &v[0])?,
            Output::Delta(v) => m.serialize_field("output", &v[0])?,
        }
        m.end()
    }
}

/// Where a [`Session`] stands after a step.
#[derive(Debug)]
#[non_exhaustive]
pub enum SessionStep {
    /// A chunk of output is ready; step again for the next.
    Chunk(Chunk),
    /// Waiting for the host's GPU readback with this id: hand its bytes to
    /// [`Session::resume`].
    Pending(u32),
    /// Finished: the whole response of a one-step session or of a text generation (streamed
    /// or not), `None` after the last chunk of a streamed encoder request.
    Done(Option<super::Response>),
}

enum State {
    /// A one-step request, run at the first step.
    Whole {
        request: Vec<u8>,
        attachments: Vec<Vec<u8>>,
    },
    /// Waiting for the readback of a one-step request.
    WholePending(Pending),
    /// A streamed text request, one input per step.
    Stream {
        inputs: Vec<TextInput>,
        options: RunOptions,
        next: usize,
        pending: Option<Pending>,
    },
    /// A text-generation request.
    Generate(Box<Generation>),
    Finished,
}

/// A request being stepped (see the module docs). Dropping it frees its state.
pub struct Session {
    pipeline: Pipeline,
    state: State,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("task", &self.pipeline.task())
            .finish_non_exhaustive()
    }
}

/// The one field a session reads before the request's own parser: `"stream"`.
#[derive(serde::Deserialize)]
struct StreamFlag {
    #[serde(default)]
    stream: Option<bool>,
}

/// A streamed text request: [`Request`] and its `stream` flag.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamRequest {
    inputs: Inputs,
    #[serde(default)]
    parameters: RunOptions,
    #[allow(dead_code)] // checked by `StreamFlag`
    stream: bool,
}

impl Pipeline {
    /// Opens a session for a request given as JSON, as [`Pipeline::start_json`] takes it, plus
    /// an optional top-level `"stream": true` that streams a text request's results one input
    /// at a time.
    pub fn open(&self, request: &[u8], attachments: Vec<Vec<u8>>) -> Result<Session> {
        let parse_error = |e: serde_json::Error| Error::invalid_input(format!("request: {e}"));
        if self.task() == Task::TextGeneration {
            let request: GenerationRequest =
                serde_json::from_slice(request).map_err(parse_error)?;
            let generation = Generation::new(self.generator()?, request, self.limits.max_batch)?;
            return Ok(Session::generating(self.clone(), generation));
        }
        let flag: StreamFlag = serde_json::from_slice(request).map_err(parse_error)?;
        let request = match flag.stream {
            // The request's own parser refuses a field it does not know.
            Some(false) => {
                let mut value: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(request).map_err(parse_error)?;
                value.remove("stream");
                serde_json::to_vec(&value).map_err(parse_error)?
            }
            None => request.to_vec(),
            Some(true) => {
                if self.task() == Task::ImageClassification {
                    return Err(Error::invalid_input(
                        "streaming is for text tasks (one result per input)",
                    ));
                }
                let r: StreamRequest = serde_json::from_slice(request).map_err(parse_error)?;
                return self.stream_session(Request {
                    inputs: r.inputs,
                    parameters: r.parameters,
                });
            }
        };
        Ok(Session {
            pipeline: self.clone(),
            state: State::Whole {
                request,
                attachments,
            },
        })
    }

    /// Opens a streamed session over text inputs: one [`Chunk`] per input, in input order.
    pub fn stream_session(&self, request: Request) -> Result<Session> {
        let Request { inputs, parameters } = request;
        let inputs = match inputs {
            Inputs::One(t) => vec![t],
            Inputs::Many(v) => v,
        };
        parameters.check_task(self.task)?;
        self.text()?;
        self.check_batch(inputs.len())?;
        Ok(Session {
            pipeline: self.clone(),
            state: State::Stream {
                inputs,
                options: parameters,
                next: 0,
                pending: None,
            },
        })
    }

    /// Runs a streamed request to its end on a host whose readbacks finish at once (every
    /// native host): an iterator of each input's [`Chunk`], in input order, each computed when
    /// the iterator is advanced.
    pub fn stream(
        &self,
        inputs: &[TextInput],
        options: &RunOptions,
    ) -> Result<impl Iterator<Item = Result<Chunk>> + use<>> {
        let mut session = self.stream_session(Request {
            inputs: Inputs::Many(inputs.to_vec()),
            parameters: options.clone(),
        })?;
        Ok(std::iter::from_fn(move || match session.step() {
            Ok(SessionStep::Chunk(c)) => Some(Ok(c)),
            Ok(SessionStep::Done(_)) => None,
            Ok(SessionStep::Pending(_)) => {
                session.state = State::Finished;
                Some(Err(Error::Backend {
                    message: "this host reads GPU buffers asynchronously: step a Session"
                        .to_owned(),
                }))
            }
            Err(e) => Some(Err(e)),
        }))
    }
}

impl Session {
    pub(crate) fn generating(pipeline: Pipeline, generation: Generation) -> Self {
        Self {
            pipeline,
            state: State::Generate(Box::new(generation)),
        }
    }

    /// The task the session runs.
    pub fn task(&self) -> Task {
        self.pipeline.task()
    }

    /// Runs the next step. After an error the session is finished.
    pub fn step(&mut self) -> Result<SessionStep> {
        let out = self.step_inner();
        if out.is_err() {
            self.state = State::Finished;
        }
        out
    }

    fn step_inner(&mut self) -> Result<SessionStep> {
        crate::interrupt::check()?;
        match std::mem::replace(&mut self.state, State::Finished) {
            State::Whole {
                request,
                attachments,
            } => match self.pipeline.start_json(&request, attachments)? {
                Started::Done(response) => Ok(SessionStep::Done(Some(response))),
                Started::Pending(pending) => {
                    let id = pending.readback();
                    self.state = State::WholePending(pending);
                    Ok(SessionStep::Pending(id))
                }
            },
            State::Stream {
                inputs,
                options,
                next,
                pending: None,
            } => {
                let Some(input) = inputs.get(next) else {
                    return Ok(SessionStep::Done(None));
                };
                let step = self
                    .pipeline
                    .start_inner(std::slice::from_ref(input), &options)?;
                let (out, pending) = match step {
                    Step::Done(output, tokens) => (
                        SessionStep::Chunk(Chunk {
                            index: next,
                            output,
                            tokens,
                        }),
                        None,
                    ),
                    Step::Pending(p) => (SessionStep::Pending(p.readback()), Some(p)),
                };
                self.state = State::Stream {
                    inputs,
                    options,
                    next: next + 1,
                    pending,
                };
                Ok(out)
            }
            State::Generate(mut g) => {
                let out = g.step(self.pipeline.generator()?)?;
                self.state = State::Generate(g);
                Ok(match out {
                    Progress::Chunk(c) => SessionStep::Chunk(c),
                    Progress::Pending(id) => SessionStep::Pending(id),
                    Progress::Done(response) => {
                        self.state = State::Finished;
                        SessionStep::Done(response)
                    }
                })
            }
            State::Stream { .. } | State::WholePending(_) => Err(Error::invalid_input(
                "the session is waiting for a readback: resume it",
            )),
            State::Finished => Ok(SessionStep::Done(None)),
        }
    }

    /// Finishes the step that is waiting for a GPU readback, with the readback's bytes.
    pub fn resume(&mut self, readback: &[u8]) -> Result<SessionStep> {
        let out = match std::mem::replace(&mut self.state, State::Finished) {
            State::WholePending(pending) => self
                .pipeline
                .resume(pending, readback)
                .map(|r| SessionStep::Done(Some(r))),
            State::Stream {
                inputs,
                options,
                next,
                pending: Some(pending),
            } => {
                let tokens = pending.tokens;
                let output = self.pipeline.finish_pending(&pending, f32s(readback));
                self.state = State::Stream {
                    inputs,
                    options,
                    next,
                    pending: None,
                };
                output.map(|output| {
                    SessionStep::Chunk(Chunk {
                        index: next - 1,
                        output,
                        tokens,
                    })
                })
            }
            State::Generate(mut g) => {
                let chunk = g.resume(self.pipeline.generator()?, readback);
                self.state = State::Generate(g);
                match chunk {
                    Ok(Some(c)) => Ok(SessionStep::Chunk(c)),
                    // Nothing to show yet (or not streamed): on to the next step.
                    Ok(None) => self.step_inner(),
                    Err(e) => Err(e),
                }
            }
            other => {
                self.state = other;
                return Err(Error::invalid_input(
                    "the session is not waiting for a readback",
                ));
            }
        };
        if out.is_err() {
            self.state = State::Finished;
        }
        out
    }
}
