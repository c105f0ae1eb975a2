//! `amphi run --runtime wasm`: the request through amphi.wasm under wasmtime, the serverless
//! host's path.

use amphi_core::{Device, Task};

use crate::{
    Failure, RunArgs, cache_root, default_artifact, guest_failure, host_failure, native_gpu,
};

/// Runs the request through amphi.wasm; returns the JSON bytes and the device that ran.
pub(crate) fn run_wasm(
    args: &RunArgs,
    request: &[u8],
    attachments: &[&[u8]],
) -> Result<(Vec<u8>, String), Failure> {
    let (mut guest, model, device) = open(args)?;
    let task: Task = args.task.into();
    let (json, _) = guest
        .run_with(model, task.as_str(), request, attachments)
        .map_err(guest_failure)?;
    Ok((json, device))
}

/// An instance of amphi.wasm with the model of `args` loaded: the guest, the model's handle
/// and the device it runs on.
pub(crate) fn open(args: &RunArgs) -> Result<(amphi_serve::Guest, i32, String), Failure> {
    let artifact = args.artifact.clone().unwrap_or_else(default_artifact);
    let artifact = amphi_serve::Artifact::read(&artifact).map_err(|e| Failure {
        code: "missing_file".into(),
        client: true,
        message: format!("{e} (build it with `cargo xtask artifact`)"),
    })?;
    let runtime = amphi_serve::Runtime::new(
        artifact,
        cache_root().map(|d| d.join("wasm")).as_deref(),
        amphi_serve::GuestLimits::default(),
    )
    .map_err(host_failure)?
    .with_gpu(native_gpu(args.device.into())?);
    let mut options =
        serde_json::json!({"device": Device::from(args.device), "precision": args.precision});
    if let Some(m) = args.max_length {
        options["max_length"] = m.into();
    }
    let spec =
        amphi_serve::load_model_dir("model", args.model.as_ref(), options).map_err(host_failure)?;
    let mut guest = runtime.instantiate().map_err(host_failure)?;
    let model = guest
        .load_model(&spec.files, &spec.options)
        .map_err(guest_failure)?;
    let device = guest
        .model_info(model)
        .map_err(guest_failure)?
        .get("device")
        .and_then(|d| d.as_str())
        .unwrap_or("?")
        .to_owned();
    Ok((guest, model, device))
}
