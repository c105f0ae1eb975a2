//! Text generation's host-neutral parts: choosing tokens ([`sample`]), turning them into
//! text as they come ([`detok`]), stop strings ([`stop`]) and chat prompts ([`chat`]). The
//! model is `crate::generator`, the session that drives it `crate::pipelines`.

pub(crate) mod chat;
pub(crate) mod detok;
pub(crate) mod sample;
pub(crate) mod stop;
