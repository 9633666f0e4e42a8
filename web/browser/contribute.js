// The page half of browser contribution (/contribute): owns the Web Worker
// that runs work units (agora-worker.js) and enforces the wall-clock limit
// by terminating it. The market protocol (register, heartbeat, lease,
// signed results) is the Leptos page's, in Rust; it calls these functions.

let worker = null;
let nextId = 1;
const pending = new Map();

function ensureWorker() {
  if (worker) return worker;
  worker = new Worker('/assets/browser/agora-worker.js', { type: 'module' });
  worker.onmessage = ({ data }) => {
    const waiter = pending.get(data.id);
    if (!waiter) return;
    if (data.type === 'done' || data.type === 'info') {
      pending.delete(data.id);
      waiter.resolve(data);
    } else if (waiter.onEvent) {
      waiter.onEvent(data);
    }
  };
  worker.onerror = (e) => {
    for (const [, w] of pending) w.resolve({ type: 'done', ok: false, error: `the worker failed: ${e.message}`, report: { outcome: 'trap' } });
    pending.clear();
    worker = null;
  };
  return worker;
}

function ask(message, onEvent, timeoutMs) {
  const id = nextId++;
  return new Promise((resolve) => {
    let timer = null;
    if (timeoutMs) {
      timer = setTimeout(() => {
        // A unit past its wall-clock limit: the only way to stop running
        // wasm is to end its worker; the next unit gets a fresh one.
        pending.delete(id);
        worker.terminate();
        worker = null;
        // Whatever else was queued on that worker ends with it.
        for (const [, w] of pending) w.resolve({ type: 'done', ok: false, error: 'the worker was stopped', report: { outcome: 'worker-lost' } });
        pending.clear();
        resolve({ type: 'done', ok: false, error: `wall-clock limit of ${timeoutMs} ms exceeded`, report: { outcome: 'limit-exceeded', limit: 'timeout' } });
      }, timeoutMs);
    }
    pending.set(id, {
      onEvent,
      resolve: (v) => { if (timer) clearTimeout(timer); resolve(v); },
    });
    ensureWorker().postMessage({ ...message, id }, message.input ? [message.input] : []);
  });
}

/** {adapter: {name, backend, deviceType, driver} | null, jspi: bool} */
export async function adapterInfo() {
  if (!navigator.gpu) return { adapter: null, jspi: typeof WebAssembly.Suspending === 'function', reason: 'this browser has no WebGPU (navigator.gpu)' };
  const answer = await ask({ type: 'info' });
  return { adapter: answer.adapter, jspi: answer.jspi, reason: answer.adapter ? null : 'no WebGPU adapter' };
}

/**
 * Run one unit, with its job's shared inputs (an array of [name,
 * Uint8Array] pairs). `limits`: {timeoutMs, outputBytes, blobBytes, gpuBufferBytes,
 * gpuDispatches, gpuTimeMs}. `onEvent` gets progress and log messages.
 * Answers {ok, output: Uint8Array | null, error, report}.
 */
export async function runUnit(bundle, entry, input, shared, limits, onEvent) {
  const copy = input.slice().buffer;
  // The job's shared inputs ([name, Uint8Array] pairs) are copied into the
  // worker: the page keeps its own for the job's next unit.
  const answer = await ask({ type: 'run', bundle, entry, input: copy, shared, limits }, onEvent, limits.timeoutMs);
  return {
    ok: !!answer.ok,
    output: answer.output ? new Uint8Array(answer.output) : null,
    error: answer.error || null,
    report: answer.report || { outcome: 'trap' },
  };
}

/** One standard kernel in the worker: {ok, values, error}. */
export function runKernel(call, args) {
  const limits = { gpuBufferBytes: 1 << 30, gpuDispatches: 1000, gpuTimeMs: 120000, blobBytes: 1 << 30, outputBytes: 1 << 30 };
  return ask({ type: 'kernel', call, args, limits }, null, 120000);
}

/** A short benchmark: the standard matmul at 256^3, best of three; GFLOP/s. */
export async function benchmark() {
  const n = 256;
  const a = Array.from({ length: n * n }, (_, i) => ((i * 7919) % 1000) / 1000 - 0.5);
  let best = Infinity;
  for (let i = 0; i < 3; i++) {
    const started = performance.now();
    const answer = await runKernel('matmul', { m: n, n, k: n, a, b: a });
    if (!answer.ok) return { ok: false, error: answer.error };
    best = Math.min(best, performance.now() - started);
  }
  return { ok: true, ms: best, gflops: (2 * n ** 3) / (best * 1e6) };
}
