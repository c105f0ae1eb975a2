//! `"stream": true` on `/v1/pipelines/{task}`: the request runs as an ABI v5 session on one
//! instance, and each chunk goes out as a Server-Sent Event as soon as the guest has computed
//! it: `data: {"index": i, "output": ...}` per input, in input order, then `data: [DONE]`. An
//! error before the first chunk is an ordinary JSON error response; after it, an
//! `event: error` with the same body ends the stream. A client that goes away cancels the
//! session at its next chunk: the guest frees it and the instance serves the next request.

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use tokio::sync::mpsc;

use crate::http::{ApiError, AppState};
use crate::pool::Admission;

enum Message {
    Chunk(Vec<u8>),
    End(Result<crate::StreamEnd, ApiError>),
}

/// Reshapes a chunk's JSON into an event's data (`None` leaves the chunk out).
pub(crate) type ChunkMap = Box<dyn FnMut(&[u8]) -> Option<Vec<u8>> + Send>;

/// Starts the session and answers with its event stream (or the error that stopped it before
/// its first chunk).
pub(crate) async fn events(
    state: &AppState,
    admission: Admission,
    index: usize,
    task: &'static str,
    request: Vec<u8>,
) -> Result<Response, ApiError> {
    events_mapped(
        state,
        admission,
        index,
        task,
        request,
        Box::new(|c| Some(c.to_vec())),
    )
    .await
}

/// [`events`], each chunk's JSON reshaped by `map` (the OpenAI endpoints' chunk objects).
pub(crate) async fn events_mapped(
    state: &AppState,
    admission: Admission,
    index: usize,
    task: &'static str,
    request: Vec<u8>,
    map: ChunkMap,
) -> Result<Response, ApiError> {
    // Unbounded: an instance never waits on a slow client (the socket's write-stall timeout
    // deals with those); what queues is at most the request's own output.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (pool, metrics, wait) = (
        state.pool.clone(),
        state.metrics.clone(),
        state.limits.queue_timeout,
    );
    tokio::spawn(async move {
        let chunks = tx.clone();
        let result = pool
            .run(admission, wait, move |w| {
                w.stream(index, task, &request, |json, tokens| {
                    metrics.tokens(tokens);
                    chunks.send(Message::Chunk(json)).is_ok()
                })
            })
            .await;
        if let Ok(crate::StreamEnd::Cancelled) = result {
            tracing::debug!("stream cancelled by its client; session freed");
        }
        let _ = tx.send(Message::End(result.map_err(ApiError::from)));
    });
    let first = match rx.recv().await {
        Some(Message::End(Err(e))) => return Err(e),
        Some(m) => m,
        None => {
            return Err(ApiError::new(
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the stream ended without a result",
            ));
        }
    };
    let body = futures_util::stream::unfold(
        (Some(first), rx, false, map),
        |(next, mut rx, ended, mut map)| async move {
            if ended {
                return None;
            }
            let message = match next {
                Some(m) => m,
                None => rx.recv().await?,
            };
            let (bytes, ended) = match message {
                Message::Chunk(json) => match map(&json) {
                    Some(data) => {
                        let mut event = b"data: ".to_vec();
                        event.extend_from_slice(&data);
                        event.extend_from_slice(b"\n\n");
                        (event, false)
                    }
                    None => (Vec::new(), false),
                },
                Message::End(Ok(_)) => (b"data: [DONE]\n\n".to_vec(), true),
                Message::End(Err(e)) => (
                    format!("event: error\ndata: {}\n\n", e.body()).into_bytes(),
                    true,
                ),
            };
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(bytes)),
                (None, rx, ended, map),
            ))
        },
    );
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(body),
    )
        .into_response())
}
