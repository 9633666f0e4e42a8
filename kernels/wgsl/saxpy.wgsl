// y[i] = a * x[i] + y[i]; one invocation per element.
struct Params { a: f32, n: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;

// Dispatch ceil(n / 256) x 1 x 1 (split over y when above the per-dimension limit).
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) groups: vec3<u32>) {
    let i = gid.x + gid.y * groups.x * 256u;
    if (i < params.n) {
        y[i] = params.a * x[i] + y[i];
    }
}
