// Strided row copy between sequences of rows: for each sequence s < n / (rows*width), rows
// r < rows of `width` values go from src row s*src_stride + src_offset + r to dst row
// s*dst_stride + dst_offset + r (appending to a key/value cache, growing one). One invocation
// per value, in rows of 65535 workgroups of 256.

struct Params {
    n: u32,
    rows: u32,
    width: u32,
    src_stride: u32,
    src_offset: u32,
    dst_stride: u32,
    dst_offset: u32,
    _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst: array<f32>;

@compute @workgroup_size(256)
fn copy_rows(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let i = gid.x + gid.y * nwg.x * 256u;
    if (i >= p.n) {
        return;
    }
    let c = i % p.width;
    let r = (i / p.width) % p.rows;
    let s = i / (p.width * p.rows);
    dst[(s * p.dst_stride + p.dst_offset + r) * p.width + c] =
        src[(s * p.src_stride + p.src_offset + r) * p.width + c];
}
