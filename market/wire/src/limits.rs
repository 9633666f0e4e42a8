//! The limits of one work unit that the market and its providers must agree
//! on, named once: the market refuses a job past them, and a provider runs a
//! unit under them, so an honest provider's result is never refused for a
//! size the market let the job ask for.

use crate::api::{Capabilities, UnitLimits};

/// Largest input of one unit, and most bytes of one unit's outputs
/// together (the one `run` returns and its named outputs): a provider's
/// worker holds them in memory and an inline submit carries an input as
/// base64 in one JSON request.
pub const MAX_UNIT_BYTES: usize = 64 << 20;
/// Most named outputs one unit may add beside the one `run` returns
/// (`data.output`): each is a blob its provider uploads and its buyer
/// downloads by name, and a result's manifest names them all.
pub const MAX_NAMED_OUTPUTS: usize = 16;
/// Longest name of a named output: it becomes part of a file name.
pub const MAX_OUTPUT_NAME_CHARS: usize = 64;
/// The names the output `run` returns goes by where outputs are files
/// (`unit-N.out`, or `unit-N.png` for an image): no named output may take
/// them.
pub const MAIN_OUTPUT_NAMES: &[&str] = &["out", "png"];

/// Whether `name` may name a named output: 1 to [`MAX_OUTPUT_NAME_CHARS`]
/// of `a-z 0-9 _ - .`, not beginning with `.`, and none of
/// [`MAIN_OUTPUT_NAMES`]; what every side (the guest's host, the market,
/// the CLI writing files) checks.
pub fn is_output_name(name: &str) -> bool {
    let fine =
        |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.');
    !name.is_empty()
        && name.chars().count() <= MAX_OUTPUT_NAME_CHARS
        && name.chars().all(fine)
        && !name.starts_with('.')
        && !MAIN_OUTPUT_NAMES.contains(&name)
}

/// What an output's name must be, for the refusal of one that is not.
pub const OUTPUT_NAME_RULE: &str =
    "1 to 64 of a-z, 0-9, '_', '-', '.', not beginning with '.', and neither `out` nor `png`";
/// Most fuel one unit may ask for: about an hour of guest instructions, and
/// small enough that fuel times the highest ask ([`MAX_ASK`]) stays inside
/// `i64` in the market's SQL.
pub const MAX_UNIT_FUEL: u64 = 1 << 42;
/// Longest wall-clock time of one unit.
pub const MAX_UNIT_TIMEOUT_MS: u64 = 3_600_000;
/// Most linear memory of one unit: the wasm32 address space (the host's
/// ceiling too).
pub const MAX_UNIT_MEMORY_BYTES: u64 = 4 << 30;
/// Most bytes of one job's shared inputs together: a provider's worker holds
/// them in memory while it runs the job's units (its memory wall counts
/// them), so they are far below a blob's own bound.
pub const MAX_SHARED_INPUT_BYTES: u64 = 4 << 30;
/// Most bytes of shared inputs a job may have for a browser tab to take its
/// units: a tab holds them in its memory and copies them into its worker
/// for each unit, far below what a native host's worker can hold.
pub const MAX_BROWSER_SHARED_BYTES: u64 = 256 << 20;
/// Highest price a provider may ask, per billion fuel, per GPU second or
/// per wall second.
pub const MAX_ASK: u64 = 1_000_000;
/// The lowest bid: a run is paid at least the provider's ask.
pub const MIN_BID_PERCENT: u32 = 100;
/// The highest bid, ten times the ask: high enough to jump any queue, low
/// enough that a unit's worst case at the highest ask times the bid stays
/// inside `i64` in the market's SQL.
pub const MAX_BID_PERCENT: u32 = 1_000;

/// Most failed runs a buyer may let one unit have before only the
/// operator's vouched hosts run it (`RetryPolicy::max_attempts`): a buyer
/// may ask for fewer, not more, since the escrow holds a unit's three
/// paid slots (two replicas and a tie-breaker) and every counted failed
/// run of a unit that fails for good must fit them to be billed.
pub const MAX_UNIT_ATTEMPTS: u32 = 3;
/// Longest wait a buyer may ask between a unit's failed run and its next
/// lease (`RetryPolicy::backoff_ms`, doubled per failure up to this): a
/// unit waiting longer holds its escrow for nothing.
pub const MAX_RETRY_BACKOFF_MS: u64 = 3_600_000;

/// Longest a buyer may let a job run before it expires: its escrow hold
/// must outlive it by the market's settling margin within the ledger's
/// longest hold, and a week bounds how long a buyer's credits sit held by
/// a job nobody runs.
pub const MAX_JOB_DEADLINE_MS: u64 = 7 * 24 * 3600 * 1000;
/// Most providers one job names in its allow list, or in its deny list.
pub const MAX_JOB_PROVIDER_LIST: usize = 64;
/// Most packages, or publishers, a provider names in each list of the work
/// it takes (`WorkFilter`): each is a row the lease query looks up.
pub const MAX_PROVIDER_FILTER_LIST: usize = 64;
/// Most CPU cores a provider may say it has, or has free (past it is no
/// machine anyone sells; a heartbeat's reading is kept and plotted).
pub const MAX_CPU_CORES: u32 = 4096;
/// Most GPU memory a provider may say one device has (a claim past it is
/// not a card anyone sells).
pub const MAX_GPU_MEMORY_BYTES: u64 = 4 << 40;
/// Most fp32 matmul GFLOPS a provider may say one device runs (its host's
/// benchmark, `agora_host::gpu::speed`): several times the fastest card of
/// 2026 without tensor cores, so a claim past it is no card at all.
pub const MAX_GPU_GFLOPS: u32 = 500_000;
/// Most GFLOPS a software adapter (device type `cpu`: llvmpipe, lavapipe,
/// WARP) may claim: it runs on the machine's cores, and no CPU sold
/// multiplies matrices faster than this.
pub const MAX_SOFTWARE_GFLOPS: u32 = 20_000;
/// The backends a job may require, as providers name them.
pub const GPU_BACKENDS: &[&str] = &["vulkan", "metal", "dx12", "gl", "cuda"];
/// The device types a job may require, as providers name them.
pub const GPU_DEVICE_TYPES: &[&str] = &["discrete-gpu", "integrated-gpu", "virtual-gpu", "cpu"];

/// A CUDA compute capability (`8.6`) as a number that orders like it
/// (`806`); none for text that is not `major.minor` with both below 100.
pub fn compute_capability_value(text: &str) -> Option<u64> {
    let (major, minor) = text.split_once('.')?;
    let (major, minor): (u64, u64) = (major.parse().ok()?, minor.parse().ok()?);
    (major < 100 && minor < 100).then_some(major * 100 + minor)
}

/// A value past one of the limits above.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what} is {value}, the limit ({name}) is {min} to {max}")]
pub struct LimitError {
    /// The limit's constant, as named here.
    pub name: &'static str,
    pub what: &'static str,
    pub value: u64,
    pub min: u64,
    pub max: u64,
}

fn within(
    name: &'static str,
    what: &'static str,
    value: u64,
    min: u64,
    max: u64,
) -> Result<(), LimitError> {
    if value < min || value > max {
        return Err(LimitError {
            name,
            what,
            value,
            min,
            max,
        });
    }
    Ok(())
}

/// Check a unit's limits against the shared bounds.
pub fn check_unit_limits(l: &UnitLimits) -> Result<(), LimitError> {
    within("MAX_UNIT_FUEL", "limits.fuel", l.fuel, 1, MAX_UNIT_FUEL)?;
    within(
        "MAX_UNIT_MEMORY_BYTES",
        "limits.memory_bytes",
        l.memory_bytes,
        1,
        MAX_UNIT_MEMORY_BYTES,
    )?;
    within(
        "MAX_UNIT_TIMEOUT_MS",
        "limits.timeout_ms",
        l.timeout_ms,
        1,
        MAX_UNIT_TIMEOUT_MS,
    )
}

/// Check `value` against the limit `name` whose value is `max`.
pub fn at_most(
    name: &'static str,
    what: &'static str,
    value: u64,
    max: u64,
) -> Result<(), LimitError> {
    within(name, what, value, 0, max)
}

/// Check a size in bytes against [`MAX_UNIT_BYTES`].
pub fn check_unit_bytes(what: &'static str, len: usize) -> Result<(), LimitError> {
    within("MAX_UNIT_BYTES", what, len as u64, 0, MAX_UNIT_BYTES as u64)
}

/// Check a job's shared inputs together against [`MAX_SHARED_INPUT_BYTES`].
pub fn check_shared_bytes(total: u64) -> Result<(), LimitError> {
    within(
        "MAX_SHARED_INPUT_BYTES",
        "shared inputs",
        total,
        0,
        MAX_SHARED_INPUT_BYTES,
    )
}

/// Check an ask against [`MAX_ASK`].
pub fn check_ask(what: &'static str, value: u64) -> Result<(), LimitError> {
    within("MAX_ASK", what, value, 0, MAX_ASK)
}

/// GPUs one provider may describe: more than any machine holds (eight-GPU
/// servers), few enough that provider listings stay small.
pub const MAX_PROVIDER_GPUS: usize = 16;
/// Bytes of each text a provider describes a GPU with (name, backend,
/// device type, compute capability): real adapter names are well under 100.
pub const MAX_GPU_TEXT_BYTES: usize = 128;

/// Refuse a provider's capabilities past [`MAX_PROVIDER_GPUS`] and
/// [`MAX_GPU_TEXT_BYTES`]: what a provider registers is stored and listed to
/// everyone.
pub fn check_capabilities(c: &Capabilities) -> Result<(), LimitError> {
    within(
        "MAX_CPU_CORES",
        "capabilities.cpu_cores",
        c.cpu_cores as u64,
        0,
        MAX_CPU_CORES as u64,
    )?;
    within(
        "MAX_PROVIDER_GPUS",
        "capabilities.gpus",
        c.gpus.len() as u64,
        0,
        MAX_PROVIDER_GPUS as u64,
    )?;
    for gpu in &c.gpus {
        within(
            "MAX_GPU_MEMORY_BYTES",
            "capabilities.gpus[].memory_bytes",
            gpu.memory_bytes.unwrap_or(0),
            0,
            MAX_GPU_MEMORY_BYTES,
        )?;
        let (limit, most) = if gpu.device_type == "cpu" {
            ("MAX_SOFTWARE_GFLOPS", MAX_SOFTWARE_GFLOPS)
        } else {
            ("MAX_GPU_GFLOPS", MAX_GPU_GFLOPS)
        };
        within(
            limit,
            "capabilities.gpus[].gflops",
            // (A speed of nothing is no speed: leave it out.)
            gpu.gflops.map_or(1, u64::from),
            1,
            u64::from(most),
        )?;
        let texts = [
            ("capabilities.gpus[].name", gpu.name.as_str()),
            ("capabilities.gpus[].backend", gpu.backend.as_str()),
            ("capabilities.gpus[].device_type", gpu.device_type.as_str()),
            (
                "capabilities.gpus[].compute_capability",
                gpu.compute_capability.as_deref().unwrap_or(""),
            ),
        ];
        for (what, text) in texts {
            check_gpu_text(what, text)?;
        }
    }
    Ok(())
}

/// Refuse a text describing a GPU (in a registration or a heartbeat) past
/// [`MAX_GPU_TEXT_BYTES`] or with a control character: control characters
/// (bidi overrides among them) would let a name pass as another in every
/// listing.
pub fn check_gpu_text(what: &'static str, text: &str) -> Result<(), LimitError> {
    within(
        "MAX_GPU_TEXT_BYTES",
        what,
        text.len() as u64,
        0,
        MAX_GPU_TEXT_BYTES as u64,
    )?;
    let controls = text.chars().filter(|&c| is_control(c)).count();
    within(
        "MAX_GPU_TEXT_BYTES (control characters)",
        what,
        controls as u64,
        0,
        0,
    )
}

/// The highest temperature (°C) and power (W) a heartbeat may say a GPU
/// reads: past what any card survives or draws, so a reading beyond is a
/// lie, and the listing shows readings to everyone.
pub const MAX_GPU_CELSIUS_READING: f64 = 200.0;
pub const MAX_GPU_WATTS_READING: f64 = 10_000.0;

/// `text` cut to [`MAX_GPU_TEXT_BYTES`] on a character boundary: what a
/// host sends for a driver's adapter name, however long.
/// Control characters become spaces.
pub fn gpu_text(text: &str) -> String {
    let printable: String = text
        .chars()
        .map(|c| if is_control(c) { ' ' } else { c })
        .collect();
    let mut end = printable.len().min(MAX_GPU_TEXT_BYTES);
    while !printable.is_char_boundary(end) {
        end -= 1;
    }
    printable[..end].to_string()
}

/// A control character, or a bidirectional override or isolate.
fn is_control(c: char) -> bool {
    c.is_control()
        || ('\u{202a}'..='\u{202e}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// The WebAssembly features a job may use, as wasmparser names its
/// `WasmFeatures` flags. A host's engine enables exactly these and checks a
/// component against them before compiling it; the market checks the same
/// set at publish, so a component the market accepts loads on every host.
/// Left out on purpose: GC types and function subtypes, exceptions and typed
/// function references (wasmtime is built without its GC), threads and
/// shared memory (built without `threads`: a job's parallelism is the GPU),
/// 64-bit memories (the memory limits are 32-bit), and the component model's
/// extensions still in flux (async, error contexts, ...).
pub const JOB_WASM_FEATURES: &[&str] = &[
    "MUTABLE_GLOBAL",
    "SATURATING_FLOAT_TO_INT",
    "SIGN_EXTENSION",
    "REFERENCE_TYPES",
    "MULTI_VALUE",
    "BULK_MEMORY",
    "SIMD",
    "RELAXED_SIMD",
    "TAIL_CALL",
    "FLOATS",
    "MULTI_MEMORY",
    "EXTENDED_CONST",
    "COMPONENT_MODEL",
];
