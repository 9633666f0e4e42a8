// C (m x n) = A (m x k) * B (k x n), row-major f32.
//
// 2-D tiled: a 16 x 16 workgroup computes a 64 x 64 tile of C, each
// invocation a 4 x 4 block held in registers. Tiles of A (64 x 16) and
// B (16 x 64) are staged in workgroup memory. Sizes need not be multiples of
// the tile: loads outside A or B read zero and stores outside C are skipped.
struct Params { m: u32, n: u32, k: u32, _pad: u32 }

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 16u;
const WG: u32 = 16u;

var<workgroup> tile_a: array<array<f32, 64>, 16>; // [kk][row]
var<workgroup> tile_b: array<array<f32, 64>, 16>; // [kk][col]

// Dispatch ceil(n / 64) x ceil(m / 64) x 1.
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let m = params.m;
    let n = params.n;
    let k = params.k;
    let row0 = wg.y * TILE;
    let col0 = wg.x * TILE;
    let flat = lid.y * WG + lid.x; // 0..256

    var acc: array<array<f32, 4>, 4>;
    for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
            acc[i][j] = 0.0;
        }
    }

    var t = 0u;
    loop {
        if (t >= k) { break; }
        // Stage 64 x 16 of A and 16 x 64 of B: 1024 values each, 4 per invocation.
        for (var s = 0u; s < 4u; s++) {
            let idx = flat + s * 256u;
            // A: row r = idx / 16, kk = idx % 16 (coalesced along k).
            let ar = idx / TK;
            let ak = idx % TK;
            let grow = row0 + ar;
            let gk = t + ak;
            var va = 0.0;
            if (grow < m && gk < k) { va = a[grow * k + gk]; }
            tile_a[ak][ar] = va;
            // B: kk = idx / 64, col = idx % 64 (coalesced along n).
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
            var ra: array<f32, 4>;
            var rb: array<f32, 4>;
            for (var i = 0u; i < 4u; i++) {
                ra[i] = tile_a[kk][lid.y + i * WG];
                rb[i] = tile_b[kk][lid.x + i * WG];
            }
            for (var i = 0u; i < 4u; i++) {
                for (var j = 0u; j < 4u; j++) {
                    acc[i][j] = fma(ra[i], rb[j], acc[i][j]);
                }
            }
        }
        workgroupBarrier();
        t += TK;
    }

    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y + i * WG;
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x + j * WG;
            if (r < m && col < n) {
                c[r * n + col] = acc[i][j];
            }
        }
    }
}
