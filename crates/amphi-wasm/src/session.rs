//! ABI v5 sessions: a request the host steps until it is done (`docs/abi.md`). Several
//! sessions may be open in one instance; each owns its request's state until
//! [`amphi_session_free`].

use amphi_core::{Error, Pipeline, SessionStep, Task};

use super::{STATE, STATUS_ERROR, STATUS_OK, STATUS_PENDING, fail, insert, set_result, slot};

/// Status of [`amphi_session_step`] and [`amphi_session_resume`]: a chunk of output is ready
/// in the result buffer (`{"index": i, "output": ...}`); step again for the next.
pub const STATUS_CHUNK: i32 = 2;

/// Opens a session for `task` on a request in the Hugging Face shape, plus an optional
/// `"stream": true` (text tasks: one chunk per input, in input order). Takes both buffers and
/// the pending attachments. Returns the session handle (≥ 1) or [`STATUS_ERROR`]. Nothing runs
/// until the first [`amphi_session_step`].
///
/// # Safety
/// Both buffers must come from `amphi_alloc`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn amphi_session_open(
    model: i32,
    task_ptr: *mut u8,
    task_len: usize,
    request_ptr: *mut u8,
    request_len: usize,
) -> i32 {
    // SAFETY: the caller passes buffers from `amphi_alloc`.
    let (task, request) = unsafe {
        (
            super::take_str(task_ptr, task_len),
            super::take(request_ptr, request_len),
        )
    };
    let attachments = STATE.with(|s| std::mem::take(&mut s.borrow_mut().attachments));
    let open =
        || -> Result<amphi_core::Session, Error> {
            let task: Task = task?.parse()?;
            let pipeline = super::with_model(model, |m| Pipeline::new(task, m.clone()))
                .ok_or_else(|| Error::InvalidInput {
                    message: format!("unknown model handle {model}"),
                })??;
            pipeline.open(&request, attachments)
        };
    match open() {
        Ok(session) => STATE.with(|s| {
            let open = Open {
                session: Some(session),
                readback: None,
            };
            insert(&mut s.borrow_mut().sessions, open)
        }),
        Err(e) => fail(&e),
    }
}

/// An open session, and the readback its last step waits for.
pub(crate) struct Open {
    /// `None` while a step runs: the session leaves the table, so that a host call made
    /// meanwhile cannot reach it.
    session: Option<amphi_core::Session>,
    readback: Option<u32>,
}

fn with_session(
    session: i32,
    f: impl FnOnce(&mut amphi_core::Session, Option<u32>) -> Result<SessionStep, Error>,
) -> i32 {
    let taken = STATE.with(|s| {
        slot(&mut s.borrow_mut().sessions, session)
            .and_then(|slot| slot.as_mut())
            .and_then(|open| Some((open.session.take()?, open.readback.take())))
    });
    let Some((mut running, readback)) = taken else {
        return fail(&Error::InvalidInput {
            message: format!("unknown or busy session handle {session}"),
        });
    };
    let step = f(&mut running, readback);
    let waiting = match &step {
        Ok(SessionStep::Pending(id)) => Some(*id),
        _ => None,
    };
    STATE.with(|s| {
        if let Some(Some(open)) = slot(&mut s.borrow_mut().sessions, session) {
            open.session = Some(running);
            open.readback = waiting;
        }
    });
    report(step)
}

fn report(step: Result<SessionStep, Error>) -> i32 {
    let json = match step {
        Err(e) => return fail(&e),
        Ok(SessionStep::Pending(id)) => {
            set_result(
                serde_json::json!({ "readback": id })
                    .to_string()
                    .into_bytes(),
            );
            return STATUS_PENDING;
        }
        Ok(SessionStep::Chunk(chunk)) => {
            STATE.with(|s| s.borrow_mut().tokens = chunk.tokens);
            serde_json::to_vec(&chunk).map(|j| (j, STATUS_CHUNK))
        }
        Ok(SessionStep::Done(Some(response))) => {
            STATE.with(|s| s.borrow_mut().tokens = response.tokens);
            serde_json::to_vec(&response).map(|j| (j, STATUS_OK))
        }
        Ok(SessionStep::Done(None)) => Ok((b"null".to_vec(), STATUS_OK)),
        Ok(_) => Ok((b"null".to_vec(), STATUS_OK)),
    };
    match json {
        Ok((bytes, status)) => {
            set_result(bytes);
            status
        }
        Err(e) => fail(&Error::Backend {
            message: e.to_string(),
        }),
    }
}

/// Runs the session's next step. Returns [`STATUS_CHUNK`] (a chunk in the result buffer),
/// [`STATUS_PENDING`] (`{"readback": id}`: write the bytes, then [`amphi_session_resume`]),
/// [`STATUS_OK`] (done: the whole response of a one-step session, or `null` after the last
/// chunk) or [`STATUS_ERROR`] (the session is finished). The host frees every session it opens.
#[unsafe(no_mangle)]
pub extern "C" fn amphi_session_step(session: i32) -> i32 {
    with_session(session, |s, _| s.step())
}

/// Finishes the step that is waiting for its readback. Returns like [`amphi_session_step`].
#[unsafe(no_mangle)]
pub extern "C" fn amphi_session_resume(session: i32) -> i32 {
    with_session(session, |s, readback| {
        let id = readback.ok_or_else(|| Error::InvalidInput {
            message: "the session is not waiting for a readback".to_owned(),
        })?;
        let bytes = super::gpu::take_readback(id).ok_or_else(|| Error::Backend {
            message: format!("readback {id} is unknown"),
        })?;
        s.resume(&bytes)
    })
}

/// Frees a session and everything it holds (cancelling it, if it was not done).
#[unsafe(no_mangle)]
pub extern "C" fn amphi_session_free(session: i32) -> i32 {
    STATE.with(|s| match slot(&mut s.borrow_mut().sessions, session) {
        Some(slot @ Some(_)) => {
            *slot = None;
            STATUS_OK
        }
        _ => STATUS_ERROR,
    })
}
