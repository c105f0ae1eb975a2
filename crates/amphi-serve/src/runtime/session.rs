//! ABI v5 sessions on a [`Guest`]: a streamed request stepped to its end, each chunk handed to
//! the host as it is computed.

use std::time::Instant;

use wasmtime::{Store, TypedFunc};

use super::{Guest, HostState};
use crate::error::GuestError;

/// The artifact's session exports (`docs/abi.md`, ABI v5).
#[derive(Clone)]
pub(super) struct SessionFns {
    open: TypedFunc<(i32, u32, u32, u32, u32), i32>,
    step: TypedFunc<i32, i32>,
    free: TypedFunc<i32, i32>,
}

impl SessionFns {
    pub(super) fn find(
        instance: &wasmtime::Instance,
        store: &mut Store<HostState>,
    ) -> Option<Self> {
        Some(Self {
            open: instance
                .get_typed_func(&mut *store, "amphi_session_open")
                .ok()?,
            step: instance
                .get_typed_func(&mut *store, "amphi_session_step")
                .ok()?,
            free: instance
                .get_typed_func(&mut *store, "amphi_session_free")
                .ok()?,
        })
    }
}

/// How a streamed request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// Every chunk was handed over.
    Done,
    /// The receiver stopped taking chunks (the client went away); the session was freed.
    Cancelled,
}

const STATUS_PENDING: i32 = 1;
const STATUS_CHUNK: i32 = 2;

impl Guest {
    /// Runs `request` as a session (`"stream": true` streams a text request per input): each
    /// chunk's JSON goes to `chunk` with the tokens it processed as soon as the guest has
    /// computed it; `chunk` returning `false` cancels the session. Each step (a token, an
    /// input) runs within the request deadline and the whole session within the stream
    /// deadline ([`crate::GuestLimits`]). The session is freed however it ends.
    pub fn stream(
        &mut self,
        model: i32,
        task: &str,
        request: &[u8],
        mut chunk: impl FnMut(Vec<u8>, usize) -> bool,
    ) -> Result<StreamEnd, GuestError> {
        let fns = self.sessions.clone().ok_or_else(|| GuestError::Engine {
            code: "unsupported_task".to_owned(),
            message: "this amphi.wasm has no sessions (ABI 5): streaming needs a newer artifact"
                .to_owned(),
        })?;
        let end = Instant::now() + self.limits.stream_deadline;
        self.begin(self.limits.deadline.min(self.limits.stream_deadline));
        let (task_ptr, task_len) = self.put(task.as_bytes())?;
        let (req_ptr, req_len) = self.put(request)?;
        let open = fns.open.clone();
        let status = open
            .call(
                &mut self.store,
                (model, task_ptr, task_len, req_ptr, req_len),
            )
            .map_err(|e| self.trap(e))?;
        let session = self.check(status)?;
        let result = self.drive(&fns, session, end, &mut chunk);
        // A trapped instance is dropped whole; otherwise the session's memory returns now.
        if result.as_ref().map_or_else(|e| !e.is_fatal(), |_| true) {
            self.begin(self.limits.deadline);
            let free = fns.free.clone();
            free.call(&mut self.store, session)
                .map_err(|e| self.trap(e))?;
        }
        result
    }

    /// The guest's linear memory, in bytes (it grows, never shrinks: a leak shows as growth).
    pub fn memory_bytes(&self) -> usize {
        self.memory.data_size(&self.store)
    }

    fn drive(
        &mut self,
        fns: &SessionFns,
        session: i32,
        end: Instant,
        chunk: &mut impl FnMut(Vec<u8>, usize) -> bool,
    ) -> Result<StreamEnd, GuestError> {
        let mut delivered = false;
        loop {
            // This step's budget: the request deadline, within what is left of the stream's.
            let left = end.saturating_duration_since(Instant::now());
            self.begin(self.limits.deadline.min(left));
            let step = fns.step.clone();
            let status = step
                .call(&mut self.store, session)
                .map_err(|e| self.trap(e))?;
            match self.check(status)? {
                STATUS_CHUNK => {
                    let tokens = self.call(|g| &g.last_tokens, ())? as usize;
                    delivered = true;
                    if !chunk(self.result()?, tokens) {
                        return Ok(StreamEnd::Cancelled);
                    }
                }
                STATUS_PENDING => {
                    return Err(GuestError::Trap {
                        message: "amphi.wasm left a step pending on a synchronous host".to_owned(),
                    });
                }
                _ => {
                    // Done: a one-step session's whole response is its only chunk; after
                    // chunks (a streamed text-generation's), the whole response they made up
                    // is not handed over again.
                    let body = self.result()?;
                    if !delivered && body != b"null" {
                        let tokens = self.call(|g| &g.last_tokens, ())? as usize;
                        chunk(body, tokens);
                    }
                    return Ok(StreamEnd::Done);
                }
            }
        }
    }
}
