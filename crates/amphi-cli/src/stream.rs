//! `amphi run --stream`: each input's result printed as soon as it is computed, as JSON lines
//! (`{"index": i, "output": ...}`, in input order), natively or through amphi.wasm's sessions.

use std::io::Write;

use amphi_core::{Request, Task};

use crate::{Failure, RunArgs, RuntimeArg, guest_failure, request_json};

/// Writes one line; `Ok(false)` when the reader has gone (`| head`), which ends the stream.
fn print_line(line: &[u8]) -> Result<bool, Failure> {
    let mut out = std::io::stdout().lock();
    match out
        .write_all(line)
        .and_then(|()| out.write_all(b"\n"))
        .and_then(|()| out.flush())
    {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Failure {
            code: "internal_error".into(),
            client: false,
            message: format!("stdout: {e}"),
        }),
    }
}

/// Streams `request`, one line per input.
pub(crate) fn run(args: &RunArgs, request: &Request) -> Result<(), Failure> {
    match args.runtime {
        RuntimeArg::Native => {
            let pipeline = crate::native_pipeline(args)?;
            let inputs = match &request.inputs {
                amphi_core::Inputs::One(t) => std::slice::from_ref(t),
                amphi_core::Inputs::Many(v) => v.as_slice(),
            };
            for chunk in pipeline.stream(inputs, &request.parameters)? {
                let line = serde_json::to_vec(&chunk?).map_err(|e| Failure {
                    code: "internal_error".into(),
                    client: false,
                    message: e.to_string(),
                })?;
                if !print_line(&line)? {
                    break;
                }
            }
            Ok(())
        }
        RuntimeArg::Wasm => {
            let mut body: serde_json::Value = serde_json::from_slice(&request_json(request, None)?)
                .map_err(|e| Failure {
                    code: "internal_error".into(),
                    client: false,
                    message: e.to_string(),
                })?;
            body["stream"] = true.into();
            let (mut guest, model, _) = crate::wasm::open(args)?;
            let task: Task = args.task.into();
            let mut printed = Ok(true);
            guest
                .stream(
                    model,
                    task.as_str(),
                    body.to_string().as_bytes(),
                    |line, _| {
                        printed = print_line(&line);
                        matches!(printed, Ok(true))
                    },
                )
                .map_err(guest_failure)?;
            printed.map(|_| ())
        }
    }
}
