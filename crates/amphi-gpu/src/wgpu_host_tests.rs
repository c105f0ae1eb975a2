//! Contexts, the buffer pool and readback deadlines on a real adapter (in CI: Mesa lavapipe).
//! These fail, never skip, without one.

#![allow(clippy::unwrap_used)]

use super::*;

fn host(config: WgpuConfig) -> WgpuHost {
    WgpuHost::with_config(config).unwrap_or_else(|e| {
        panic!(
            "wgpu host tests need a GPU adapter (in CI: Mesa lavapipe, apt-get install \
             mesa-vulkan-drivers): {e}"
        )
    })
}

const SCALE: &str = crate::testing::SCALE_WGSL;

/// Spins `p.x` iterations per invocation.
const SPIN: &str = "
@group(0) @binding(0) var<uniform> p: vec4<u32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(64)
fn spin(@builtin(global_invocation_id) id: vec3<u32>) {
    var x = f32(id.x);
    for (var i = 0u; i < p.x; i++) { x = x * 1.0000001 + 0.5; }
    out[id.x] = x;
}
";

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn params(k: f32, n: u32) -> Vec<u8> {
    let mut p = f32s(&[k]);
    p.extend(n.to_le_bytes());
    p.extend([0; 8]);
    p
}

fn read(gpu: &dyn GpuHost, id: BufferId, size: u64) -> Result<Vec<u8>, GpuError> {
    gpu.read_buffer(id, 0, size)
        .map(|r| r.ready().expect("native readbacks finish at once"))
}

#[test]
fn a_bad_command_fails_only_its_own_context() {
    let host = host(WgpuConfig::default());
    let a = host.open_context().expect("wgpu isolates contexts");
    let b = host.open_context().expect("wgpu isolates contexts");
    let n = 256u32;
    let input: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let pa = a.create_pipeline(SCALE, "scale").expect("kernel compiles");
    let pb = b.create_pipeline(SCALE, "scale").expect("kernel compiles");
    let (src_a, dst_a) = (
        a.create_buffer(u64::from(n) * 4).unwrap(),
        a.create_buffer(u64::from(n) * 4).unwrap(),
    );
    let (src_b, dst_b, tiny_b) = (
        b.create_buffer(u64::from(n) * 4).unwrap(),
        b.create_buffer(u64::from(n) * 4).unwrap(),
        b.create_buffer(4).unwrap(),
    );
    a.write_buffer(src_a, 0, &f32s(&input)).unwrap();
    b.write_buffer(src_b, 0, &f32s(&input)).unwrap();

    a.dispatch(pa, &params(2.0, n), &[src_a, dst_a], [4, 1, 1])
        .unwrap();
    // Too many workgroups, a missing binding, a garbage kernel, a pipeline that does not exist,
    // another context's buffer: each fails its own call.
    assert!(
        b.dispatch(pb, &params(3.0, n), &[src_b, dst_b], [1 << 20, 1, 1])
            .is_err()
    );
    assert!(
        b.dispatch(pb, &params(3.0, n), &[src_b], [4, 1, 1])
            .is_err()
    );
    assert!(
        b.dispatch(pb, &params(3.0, n), &[src_b, dst_b, tiny_b], [4, 1, 1])
            .is_err()
    );
    assert!(b.create_pipeline("fn main( {", "main").is_err());
    assert!(b.create_pipeline(SCALE, "nope").is_err());
    assert!(
        b.dispatch(PipelineId(u32::MAX), &[], &[src_b], [1, 1, 1])
            .is_err()
    );
    assert!(matches!(
        b.dispatch(pb, &params(3.0, n), &[src_a, dst_b], [4, 1, 1]),
        Err(GpuError::UnknownHandle { .. })
    ));
    assert!(matches!(
        read(&*b, dst_a, 16),
        Err(GpuError::UnknownHandle { .. })
    ));
    assert!(b.read_buffer(dst_b, 2, 4).is_err(), "unaligned offset");
    assert!(b.read_buffer(dst_b, 0, u64::from(n) * 4 + 4).is_err());
    assert!(b.write_buffer(dst_b, 0, &[1, 2, 3]).is_err());

    a.dispatch(pa, &params(2.0, n), &[dst_a, src_a], [4, 1, 1])
        .unwrap();
    let want: Vec<f32> = input.iter().map(|x| x * 4.0).collect();
    assert_eq!(read(&*a, src_a, u64::from(n) * 4).unwrap(), f32s(&want));

    // `b` keeps working.
    b.dispatch(pb, &params(3.0, n), &[src_b, dst_b], [4, 1, 1])
        .unwrap();
    let want: Vec<f32> = input.iter().map(|x| x * 3.0).collect();
    assert_eq!(read(&*b, dst_b, u64::from(n) * 4).unwrap(), f32s(&want));
    assert_eq!(host.take_uncaptured_error(), None);
}

#[test]
fn the_pool_stays_under_its_cap_and_hands_out_zeroed_buffers() {
    let config = WgpuConfig {
        pool_bytes: 1 << 20,
        pool_buffers: 64,
        ..WgpuConfig::default()
    };
    let host = host(config);
    let ctx = host.context();
    for i in 0..600u64 {
        // Many distinct sizes, from a few bytes to 320 KiB.
        let size = 4 + (i * 7919 % 81_920) * 4;
        let id = ctx.create_buffer(size).unwrap();
        ctx.destroy_buffer(id);
        let (count, bytes) = host.pooled();
        assert!(
            bytes <= config.pool_bytes && count <= config.pool_buffers,
            "{count} buffers, {bytes} bytes pooled"
        );
    }
    // A reused buffer is zeroed, and shows only the bytes asked for.
    let dirty = ctx.create_buffer(4096).unwrap();
    ctx.write_buffer(dirty, 0, &[0xff; 4096]).unwrap();
    ctx.destroy_buffer(dirty);
    let before = host.pooled().0;
    let other = host.context();
    let reused = other.create_buffer(4000).unwrap();
    assert_eq!(
        host.pooled().0,
        before - 1,
        "the 4,096-byte buffer was reused"
    );
    assert_eq!(read(&other, reused, 4000).unwrap(), vec![0; 4000]);
    assert!(other.read_buffer(reused, 0, 4096).is_err());
    // Dropping a context returns its buffers.
    drop(other);
    assert_eq!(host.pooled().0, before);
    // A buffer larger than the whole pool is not kept.
    let big = ctx.create_buffer(2 << 20).unwrap();
    ctx.destroy_buffer(big);
    assert!(host.pooled().1 <= config.pool_bytes);
}

#[test]
fn a_readback_gives_up_at_the_deadline_and_the_context_recovers() {
    let host = host(WgpuConfig {
        poll_timeout: Duration::from_millis(1),
        ..WgpuConfig::default()
    });
    let ctx = host.context();
    let spin = ctx.create_pipeline(SPIN, "spin").expect("kernel compiles");
    let out = ctx.create_buffer(4 * 256).unwrap();
    let iterations = 20_000_000u32;
    let mut p = iterations.to_le_bytes().to_vec();
    p.extend([0; 12]);
    ctx.dispatch(spin, &p, &[out], [4, 1, 1]).unwrap();
    match ctx.read_buffer(out, 0, 16) {
        Err(GpuError::Timeout(waited)) => assert_eq!(waited, Duration::from_millis(1)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    // Once the device is done, the same context reads back again.
    let mut outcome = Err(GpuError::Device("not tried".into()));
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(100));
        outcome = read(&ctx, out, 16);
        if outcome.is_ok() {
            break;
        }
    }
    assert_eq!(outcome.expect("the context recovers").len(), 16);
}

#[test]
fn size_classes_are_few_and_close() {
    assert_eq!(size_class(4), 16);
    assert_eq!(size_class(1000), 1024);
    assert_eq!(size_class(513), 640);
    for size in [17u64, 1000, 65_537, 3 << 20, 1 << 31] {
        let class = size_class(size);
        assert!(
            class >= size && class - size <= size / 4 + 16,
            "{size} → {class}"
        );
    }
}
