// C (m x n) = A (m x k) * B (k x n), row-major f32.
//
// 2-D tiled: a 16 x 16 workgroup computes a 128 x 128 tile of C; each
// invocation an 8 x 8 block: rows 4 ty .. 4 ty + 3 and 64 + 4 ty .. + 3,
// columns likewise with tx. The block lives in sixteen named vec4
// accumulators (no array indexed in a loop, so every compiler keeps them in
// registers), and each step reads two vec4 of the staged A tile and two of
// B from workgroup memory for 64 multiply-adds. Tiles of A (128 x 16, stored
// transposed) and B (16 x 128) are staged in workgroup memory. Sizes need not
// be multiples of the tile: loads outside A or B read zero and stores
// outside C are skipped (the host compiles this kernel without wgpu's
// bounds checks, so these guards are the only ones).
struct Params { m: u32, n: u32, k: u32, _pad: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TILE: u32 = 128u;
const TK: u32 = 16u;
const WG: u32 = 16u;

var<workgroup> tile_a: array<array<vec4<f32>, 32>, 16>; // [kk][row / 4]
var<workgroup> tile_b: array<array<vec4<f32>, 32>, 16>; // [kk][col / 4]

// Four consecutive elements of row `r` from column `col`, those inside C.
fn store_row(r: u32, col: u32, v: vec4<f32>) {
    let m = params.m;
    let n = params.n;
    if (r >= m) { return; }
    let base = r * n;
    if (col < n) { c[base + col] = v.x; }
    if (col + 1u < n) { c[base + col + 1u] = v.y; }
    if (col + 2u < n) { c[base + col + 2u] = v.z; }
    if (col + 3u < n) { c[base + col + 3u] = v.w; }
}

// Dispatch ceil(n / 128) x ceil(m / 128) x 1.
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let flat = lid.y * WG + lid.x; // 0..256

    var c00 = vec4<f32>(0.0);
    var c01 = vec4<f32>(0.0);
    var c10 = vec4<f32>(0.0);
    var c11 = vec4<f32>(0.0);
    var c20 = vec4<f32>(0.0);
    var c21 = vec4<f32>(0.0);
    var c30 = vec4<f32>(0.0);
    var c31 = vec4<f32>(0.0);
    var c40 = vec4<f32>(0.0);
    var c41 = vec4<f32>(0.0);
    var c50 = vec4<f32>(0.0);
    var c51 = vec4<f32>(0.0);
    var c60 = vec4<f32>(0.0);
    var c61 = vec4<f32>(0.0);
    var c70 = vec4<f32>(0.0);
    var c71 = vec4<f32>(0.0);

    var t = 0u;
    loop {
        if (t >= k) { break; }
        // Stage 128 x 16 of A and 16 x 128 of B: 2048 values each, 8 per invocation.
        for (var s = 0u; s < 8u; s++) {
            let idx = flat + s * 256u;
            // A: row r = idx / 16, kk = idx % 16 (coalesced along k).
            let ar = idx / TK;
            let ak = idx % TK;
            let grow = row0 + ar;
            let gk = t + ak;
            var va = 0.0;
            if (grow < m && gk < k) { va = a[grow * k + gk]; }
            tile_a[ak][ar / 4u][ar % 4u] = va;
            // B: kk = idx / 128, col = idx % 128 (coalesced along n).
            let bk = idx / TILE;
            let bc = idx % TILE;
            let gbk = t + bk;
            let gcol = col0 + bc;
            var vb = 0.0;
            if (gbk < k && gcol < n) { vb = b[gbk * n + gcol]; }
            tile_b[bk][bc / 4u][bc % 4u] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            let a0 = tile_a[kk][lid.y];
            let a1 = tile_a[kk][16u + lid.y];
            let b0 = tile_b[kk][lid.x];
            let b1 = tile_b[kk][16u + lid.x];
            c00 = fma(vec4<f32>(a0.x), b0, c00);
            c01 = fma(vec4<f32>(a0.x), b1, c01);
            c10 = fma(vec4<f32>(a0.y), b0, c10);
            c11 = fma(vec4<f32>(a0.y), b1, c11);
            c20 = fma(vec4<f32>(a0.z), b0, c20);
            c21 = fma(vec4<f32>(a0.z), b1, c21);
            c30 = fma(vec4<f32>(a0.w), b0, c30);
            c31 = fma(vec4<f32>(a0.w), b1, c31);
            c40 = fma(vec4<f32>(a1.x), b0, c40);
            c41 = fma(vec4<f32>(a1.x), b1, c41);
            c50 = fma(vec4<f32>(a1.y), b0, c50);
            c51 = fma(vec4<f32>(a1.y), b1, c51);
            c60 = fma(vec4<f32>(a1.z), b0, c60);
            c61 = fma(vec4<f32>(a1.z), b1, c61);
            c70 = fma(vec4<f32>(a1.w), b0, c70);
            c71 = fma(vec4<f32>(a1.w), b1, c71);
        }
        workgroupBarrier();
        t += TK;
    }

    store_row(row0 + 0u + lid.y * 4u + 0u, col0 + lid.x * 4u, c00);
    store_row(row0 + 0u + lid.y * 4u + 0u, col0 + 64u + lid.x * 4u, c01);
    store_row(row0 + 0u + lid.y * 4u + 1u, col0 + lid.x * 4u, c10);
    store_row(row0 + 0u + lid.y * 4u + 1u, col0 + 64u + lid.x * 4u, c11);
    store_row(row0 + 0u + lid.y * 4u + 2u, col0 + lid.x * 4u, c20);
    store_row(row0 + 0u + lid.y * 4u + 2u, col0 + 64u + lid.x * 4u, c21);
    store_row(row0 + 0u + lid.y * 4u + 3u, col0 + lid.x * 4u, c30);
    store_row(row0 + 0u + lid.y * 4u + 3u, col0 + 64u + lid.x * 4u, c31);
    store_row(row0 + 64u + lid.y * 4u + 0u, col0 + lid.x * 4u, c40);
    store_row(row0 + 64u + lid.y * 4u + 0u, col0 + 64u + lid.x * 4u, c41);
    store_row(row0 + 64u + lid.y * 4u + 1u, col0 + lid.x * 4u, c50);
    store_row(row0 + 64u + lid.y * 4u + 1u, col0 + 64u + lid.x * 4u, c51);
    store_row(row0 + 64u + lid.y * 4u + 2u, col0 + lid.x * 4u, c60);
    store_row(row0 + 64u + lid.y * 4u + 2u, col0 + 64u + lid.x * 4u, c61);
    store_row(row0 + 64u + lid.y * 4u + 3u, col0 + lid.x * 4u, c70);
    store_row(row0 + 64u + lid.y * 4u + 3u, col0 + 64u + lid.x * 4u, c71);
}
