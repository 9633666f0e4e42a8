// C (m x n) = A (m x k) * B (k x n), row-major f32.
//
// 2-D tiled: a 16 x 16 workgroup computes a 128 x 128 tile of C, each
// invocation an 8 x 8 block held in registers (rows lid.y + 16 i, columns
// lid.x + 16 j, so neighbouring invocations read neighbouring words of
// workgroup memory). Tiles of A (128 x 8) and B (8 x 128) are staged in
// workgroup memory: 64 multiply-adds per 16 workgroup-memory reads. Sizes
// need not be multiples of the tile: loads outside A or B read zero and
// stores outside C are skipped (the host compiles this kernel without
// wgpu's bounds checks, so these guards are the only ones).
struct Params { m: u32, n: u32, k: u32, _pad: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TILE: u32 = 128u;
const TK: u32 = 8u;
const WG: u32 = 16u;
const PER: u32 = 8u;

var<workgroup> tile_a: array<array<f32, 128>, 8>; // [kk][row]
var<workgroup> tile_b: array<array<f32, 128>, 8>; // [kk][col]

// Dispatch ceil(n / 128) x ceil(m / 128) x 1.
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let flat = lid.y * WG + lid.x; // 0..256

    var acc: array<array<f32, 8>, 8>;
    for (var i = 0u; i < PER; i++) {
        for (var j = 0u; j < PER; j++) {
            acc[i][j] = 0.0;
        }
    }

    var t = 0u;
    loop {
        if (t >= k) { break; }
        // Stage 128 x 8 of A and 8 x 128 of B: 1024 values each, 4 per invocation.
        for (var s = 0u; s < 4u; s++) {
            let idx = flat + s * 256u;
            // A: row r = idx / 8, kk = idx % 8 (coalesced along k).
            let ar = idx / TK;
            let ak = idx % TK;
            let grow = row0 + ar;
            let gk = t + ak;
            var va = 0.0;
            if (grow < m && gk < k) { va = a[grow * k + gk]; }
            tile_a[ak][ar] = va;
            // B: kk = idx / 128, col = idx % 128 (coalesced along n).
            let bk = idx / TILE;
            let bc = idx % TILE;
            let gbk = t + bk;
            let gcol = col0 + bc;
            var vb = 0.0;
            if (gbk < k && gcol < n) { vb = b[gbk * n + gcol]; }
            tile_b[bk][bc] = vb;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < TK; kk++) {
            var ra: array<f32, 8>;
            var rb: array<f32, 8>;
            for (var i = 0u; i < PER; i++) {
                ra[i] = tile_a[kk][lid.y + i * WG];
                rb[i] = tile_b[kk][lid.x + i * WG];
            }
            for (var i = 0u; i < PER; i++) {
                for (var j = 0u; j < PER; j++) {
                    acc[i][j] = fma(ra[i], rb[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
        t += TK;
    }

    for (var i = 0u; i < PER; i++) {
        let r = row0 + lid.y + i * WG;
        for (var j = 0u; j < PER; j++) {
            let col = col0 + lid.x + j * WG;
            if (r < m && col < n) {
                c[r * n + col] = acc[i][j];
            }
        }
    }
}
