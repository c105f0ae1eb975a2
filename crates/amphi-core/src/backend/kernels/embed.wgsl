// out[t, f] = word[ids[t], f] + position[positions[t], f] + token_type[type_ids[t], f]; the
// tables are stored as `WElem` (f32, or f16 from the precision prelude), the sum is f32, in
// the CPU's order ((word + type) + position).

struct Params {
    tokens: u32,
    hidden: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> ids: array<u32>;
@group(0) @binding(2) var<storage, read> positions: array<u32>;
@group(0) @binding(3) var<storage, read> type_ids: array<u32>;
@group(0) @binding(4) var<storage, read> word: array<WElem>;
@group(0) @binding(5) var<storage, read> position: array<WElem>;
@group(0) @binding(6) var<storage, read> token_type: array<WElem>;
@group(0) @binding(7) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn embed(@builtin(global_invocation_id) gid: vec3<u32>) {
    let f = gid.x;
    let t = gid.y;
    if (f >= p.hidden || t >= p.tokens) {
        return;
    }
    let v = (f32(word[ids[t] * p.hidden + f]) + f32(token_type[type_ids[t] * p.hidden + f]))
        + f32(position[positions[t] * p.hidden + f]);
    out[t * p.hidden + f] = v;
}
