//! A job that misbehaves on purpose. The input is a command (UTF-8, first
//! word) and the host's tests check that each misbehaviour ends in a clean,
//! named failure while the host lives on. Also the no-op job of the
//! benchmarks (`noop`).

use agora_guest::prelude::*;
use std::hint::black_box;

struct Hostile;

const STORE_INDEX_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> a: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    // Writes far past the end of `a`: the host's bounds checks must keep
    // them inside `a` (and out of any other buffer).
    a[gid.x * 977u + 16u] = 1.0;
}
"#;

const NEVER_ENDS_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    // Nested, because software drivers (llvmpipe) cap a single loop at
    // 65535 iterations; three levels are ~2^48 per invocation.
    var i = 0u;
    loop {
        loop {
            loop {
                i = i + d[1] + 1u;
                d[0] = i;
                if (i == 0u && d[2] == 12345u) { break; }
            }
            if (d[3] == 12345u) { break; }
        }
        if (d[3] == 54321u) { break; }
    }
}
"#;

const BUSY_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> d: array<f32>;
@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
    var x = f32(gid.x);
    for (var i = 0u; i < 20000u; i++) { x = sin(x) + 1.0; }
    d[gid.x % 1024u] = x;
}
"#;

const TRIVIAL_WGSL: &str = r#"
@group(0) @binding(0) var<storage, read_write> d: array<u32>;
@compute @workgroup_size(1)
fn main() { d[0] = d[0] + 1u; }
"#;

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    black_box(recurse(black_box(depth + 1)) + 1)
}

impl Job for Hostile {
    fn run(input: Input) -> Result<Output> {
        let text = String::from_utf8(input.bytes()?).map_err(|_| Error::msg("not UTF-8"))?;
        let mut words = text.split_whitespace();
        let command = words.next().unwrap_or("noop");
        let word = words.next().unwrap_or_default();
        let arg: u64 = word.parse().unwrap_or(0);
        match command {
            "noop" => Ok(Vec::new().into()),
            "echo" => Ok(text.into_bytes().into()),
            "fuel" => {
                let mut i = 0u64;
                loop {
                    i = black_box(i.wrapping_add(1));
                }
            }
            "memory" => {
                let mut hog: Vec<Vec<u8>> = Vec::new();
                loop {
                    hog.push(vec![1u8; 1 << 20]);
                    black_box(&hog);
                }
            }
            "recurse" => Ok(recurse(0).to_le_bytes().to_vec().into()),
            "crash" => std::process::abort(),
            "huge-output" => Ok(vec![7u8; (arg as usize) << 20].into()),
            "huge-error" => Err(Error::msg("x".repeat((arg as usize) << 20))),
            "big-hostcall" => {
                let bytes = vec![1u8; (arg as usize) << 20];
                Ok(Output::from(bytes))
            }
            "log-spam" => {
                for i in 0..arg {
                    info!("line {i}");
                }
                Ok(Vec::new().into())
            }
            "log-flood" => {
                // `arg` lines at the longest length, each all control
                // characters (six bytes each once escaped in JSON).
                let line = "\u{1}".repeat(4096);
                for _ in 0..arg {
                    info!("{line}");
                }
                Ok(Vec::new().into())
            }
            "paced-log" => {
                // A step every 100 ms, each logged and reported.
                for i in 0..arg {
                    info!("step {i}");
                    report_progress(i + 1, arg);
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Ok(Vec::new().into())
            }
            "adapter" => Ok(adapter().map(|a| format!("{} ({})", a.name, a.backend)).unwrap_or_default().into()),
            "bad-wgsl" => {
                Shader::wgsl("fn main( { this is not WGSL")?;
                Ok(Vec::new().into())
            }
            "out-of-bounds" => {
                let a = Buffer::from_slice(&[0.0f32; 16])?;
                let b = Buffer::from_slice(&[7.0f32; 16])?;
                let shader = Shader::wgsl(STORE_INDEX_WGSL)?;
                shader.dispatch("main", &[&a], [64, 1, 1])?;
                let mut out = a.read::<f32>()?;
                out.extend(b.read::<f32>()?);
                Ok(Output::from_slice(&out))
            }
            "gpu-hang" => {
                let d = Buffer::from_slice(&[0u32; 4])?;
                let shader = Shader::wgsl(NEVER_ENDS_WGSL)?;
                // Enough invocations that even a driver that caps loop
                // iterations (llvmpipe: 65535 per loop nest) runs for hours.
                shader.dispatch("main", &[&d], [65535, 1, 1])?;
                Ok(Output::from_slice(&d.read::<u32>()?))
            }
            "slow-host" => {
                // Each call is a long GPU wait inside the host, but the
                // guest itself does almost nothing between them.
                let d = Buffer::from_slice(&[0.0f32; 1024])?;
                let shader = Shader::wgsl(BUSY_WGSL)?;
                loop {
                    shader.dispatch("main", &[&d], [256, 1, 1])?;
                    black_box(d.read::<f32>()?);
                }
            }
            "gpu-bomb" => {
                let mut held = Vec::new();
                loop {
                    held.push(Buffer::zeroed(64 << 20, Usage::STORAGE)?);
                }
            }
            "dispatch-bomb" => {
                let d = Buffer::from_slice(&[0u32; 1])?;
                let shader = Shader::wgsl(TRIVIAL_WGSL)?;
                loop {
                    shader.dispatch("main", &[&d], [1, 1, 1])?;
                }
            }
            "dispatches" => {
                // `arg` small dispatches through the WIT path, then one read.
                let d = Buffer::from_slice(&[0u32; 1])?;
                let shader = Shader::wgsl(TRIVIAL_WGSL)?;
                for _ in 0..arg {
                    shader.dispatch("main", &[&d], [1, 1, 1])?;
                }
                Ok(Output::from_slice(&d.read::<u32>()?))
            }
            "clock" => {
                // What the guest's clocks say, in nanoseconds: the wall
                // clock's sub-second part and a monotonic interval.
                let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                let start = std::time::Instant::now();
                let mut spins = 0u64;
                while start.elapsed().as_nanos() == 0 && spins < 1 << 40 {
                    spins = black_box(spins + 1);
                }
                Ok(format!("{} {}", wall.subsec_nanos(), start.elapsed().as_nanos()).into_bytes().into())
            }
            "host-blobs" => {
                // `arg` MiB of host-side blobs, all held at once: the
                // worker's memory wall must stop what the blob quota allows.
                use agora_guest::bindings::job::agora::compute::data::Blob;
                let chunk = vec![1u8; 16 << 20];
                let blobs = (0..arg.div_ceil(16)).map(|_| Blob::from_bytes(&chunk)).collect::<core::result::Result<Vec<_>, _>>()?;
                Ok(format!("held {} blobs", blobs.len()).into_bytes().into())
            }
            "shared" => {
                // The job's shared input `word`, read through a GPU buffer
                // (host-side all the way) and back.
                let shared = Input::shared(word).ok_or_else(|| Error::msg(format!("no shared input `{word}`")))?;
                let whole = shared.len() as u64 & !3;
                let mut bytes: Vec<u8> = match whole {
                    0 => Vec::new(),
                    _ => Buffer::from_input(&shared, 0, whole, Usage::STORAGE)?.read::<u32>()?.iter().flat_map(|w| w.to_le_bytes()).collect(),
                };
                bytes.extend(shared.read(whole, shared.len() as u64 - whole)?);
                Ok(bytes.into())
            }
            "shared-size" => {
                // The size of the shared input `word` (it stays host-side).
                let shared = Input::shared(word).ok_or_else(|| Error::msg(format!("no shared input `{word}`")))?;
                Ok(shared.len().to_string().into_bytes().into())
            }
            "binding-mismatch" => {
                let shader = Shader::wgsl(TRIVIAL_WGSL)?;
                shader.dispatch("main", &[], [1, 1, 1])?;
                Ok(Vec::new().into())
            }
            other => Err(Error::msg(format!("unknown command `{other}`"))),
        }
    }
}

agora_guest::export_job!(Hostile);
