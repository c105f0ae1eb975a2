//! A session of `amphi.wasm` seen from JS (`Model.openStream`): `next()` runs the next step —
//! awaiting a WebGPU readback when the step waits for one — and resolves to the chunk
//! (`{index, output}`), then to the whole response (text-generation) or `null` once done.
//! `free()` (or dropping it) frees the session.

use std::cell::Cell;
use std::rc::Rc;

use wasm_bindgen::prelude::*;

use super::{Guest, error};

/// Status of a step: waiting for a readback.
const STATUS_PENDING: i32 = 1;

#[wasm_bindgen]
pub struct Stream {
    guest: Rc<Guest>,
    session: Cell<i32>,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("session", &self.session.get())
            .finish_non_exhaustive()
    }
}

impl Stream {
    pub(crate) fn new(guest: Rc<Guest>, session: i32) -> Self {
        Self {
            guest,
            session: Cell::new(session),
        }
    }
}

#[wasm_bindgen]
impl Stream {
    /// The next chunk, or `null` when the session is done. An error finishes the session.
    pub fn next(&self) -> js_sys::Promise {
        let guest = self.guest.clone();
        let session = self.session.get();
        let step = if session != 0 {
            guest.call(|x| x.amphi_session_step(session))
        } else {
            Err(error("disposed", "this stream is finished"))
        };
        wasm_bindgen_futures::future_to_promise(async move {
            let mut status = step?;
            while status == STATUS_PENDING {
                guest.finish_readback().await?;
                status = guest.call(|x| x.amphi_session_resume(session))?;
            }
            // A chunk, or at the end the whole response (`null` after an encoder's chunks).
            guest.check(status)?;
            guest.result_json()
        })
    }

    /// Tokens processed by the last chunk.
    #[wasm_bindgen(js_name = lastTokens)]
    pub fn last_tokens(&self) -> Result<i32, JsValue> {
        self.guest.call(|x| x.amphi_last_tokens())
    }

    /// Frees the session (cancelling it if it was not done). Idempotent.
    pub fn free(&self) {
        let s = self.session.replace(0);
        if s != 0 && self.guest.check_alive().is_ok() {
            let _ = self.guest.call(|x| x.amphi_session_free(s));
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.free();
    }
}
