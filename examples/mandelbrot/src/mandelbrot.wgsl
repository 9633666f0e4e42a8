// Escape-time iterations of the Mandelbrot set, one invocation per pixel.
struct Params {
    width: u32,
    height: u32,
    max_iter: u32,
    _pad: u32,
    center: vec2<f32>,
    // Complex-plane units per pixel.
    step: f32,
    _pad2: f32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read_write> iterations: array<u32>;

@compute @workgroup_size(16, 16)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    if (gid.x >= params.width || gid.y >= params.height) {
        return;
    }
    let half = vec2<f32>(f32(params.width), f32(params.height)) * 0.5;
    let c = params.center + (vec2<f32>(f32(gid.x), f32(gid.y)) - half) * vec2<f32>(params.step, -params.step);
    var z = vec2<f32>(0.0, 0.0);
    var i = 0u;
    loop {
        if (i >= params.max_iter || dot(z, z) > 4.0) {
            break;
        }
        z = vec2<f32>(z.x * z.x - z.y * z.y, 2.0 * z.x * z.y) + c;
        i += 1u;
    }
    iterations[gid.y * params.width + gid.x] = i;
}
