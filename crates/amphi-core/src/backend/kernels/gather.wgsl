// out[t, c] = table[ids[t], c] as f32; the table is stored as `WElem` (f32, or f16 from the
// precision prelude). One invocation per value, in rows of 65535 workgroups of 256; the ids are
// checked against the table on the host.

struct Params {
    n: u32,
    cols: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> table: array<WElem>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(256)
fn gather(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    out[i] = f32(table[ids[i / p.cols] * p.cols + i % p.cols]);
}
