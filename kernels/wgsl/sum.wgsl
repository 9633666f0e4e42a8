// Sum of an f32 array in two passes:
//   `partial`: each of G workgroups (G <= 1024) reduces a grid-strided share of
//              the input into partials[group];
//   `finish`:  one workgroup reduces the G partials into out[0].
struct Params { n: u32, groups: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> input: array<f32>;
@group(0) @binding(2) var<storage, read_write> partials: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> scratch: array<f32, 256>;

fn reduce_scratch(lid: u32) {
    for (var stride = 128u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            scratch[lid] += scratch[lid + stride];
        }
        workgroupBarrier();
    }
}

@compute @workgroup_size(256)
fn partial(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    var i = wg.x * 256u + lid.x;
    let stride = params.groups * 256u;
    loop {
        if (i >= params.n) { break; }
        acc += input[i];
        i += stride;
    }
    scratch[lid.x] = acc;
    workgroupBarrier();
    reduce_scratch(lid.x);
    if (lid.x == 0u) {
        partials[wg.x] = scratch[0];
    }
}

@compute @workgroup_size(256)
fn finish(@builtin(local_invocation_id) lid: vec3<u32>) {
    var acc = 0.0;
    var i = lid.x;
    loop {
        if (i >= params.groups) { break; }
        acc += partials[i];
        i += 256u;
    }
    scratch[lid.x] = acc;
    workgroupBarrier();
    reduce_scratch(lid.x);
    if (lid.x == 0u) {
        out[0] = scratch[0];
    }
}
