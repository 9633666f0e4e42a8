//! /contribute: a visitor lends this tab's GPU. The page detects WebGPU and
//! shows the adapter, runs a short benchmark, and on "Start" registers this
//! browser's key as a provider of kind `browser`, then heartbeats, leases
//! units of browser-capable packages, runs each in a Web Worker over WebGPU
//! (`web/browser/`), and returns signed results like `agora host` does.
//! "Pause" stops leasing and lets the running unit finish. A hidden tab
//! leases nothing unless the contributor opts in; a tab closed mid-unit just
//! lets the lease expire.

use super::*;

/// What the page shows; written by the contribution loop (in the browser).
#[derive(Clone, Copy)]
struct Board {
    adapter: RwSignal<Option<String>>,
    problem: RwSignal<Option<String>>,
    bench: RwSignal<Option<String>>,
    /// Wants to lease (Start pressed, Pause not).
    active: RwSignal<bool>,
    /// The loop is alive (it may be finishing a unit after Pause).
    #[cfg_attr(not(feature = "hydrate"), allow(dead_code))]
    looping: RwSignal<bool>,
    run_hidden: RwSignal<bool>,
    status: RwSignal<String>,
    units: RwSignal<u64>,
    earned: RwSignal<u64>,
    current: RwSignal<Option<(String, u64, u64)>>,
    log: RwSignal<Vec<String>>,
    provider: RwSignal<Option<String>>,
}

#[component]
pub fn Contribute() -> impl IntoView {
    let board = Board {
        adapter: RwSignal::new(None),
        problem: RwSignal::new(None),
        bench: RwSignal::new(None),
        active: RwSignal::new(false),
        looping: RwSignal::new(false),
        run_hidden: RwSignal::new(false),
        status: RwSignal::new("Paused".into()),
        units: RwSignal::new(0),
        earned: RwSignal::new(0),
        current: RwSignal::new(None),
        log: RwSignal::new(Vec::new()),
        provider: RwSignal::new(None),
    };
    Effect::new(move |_| {
        #[cfg(feature = "hydrate")]
        leptos::task::spawn_local(browser::detect(board));
    });
    let start = move |_| {
        board.active.set(true);
        #[cfg(feature = "hydrate")]
        if !board.looping.get_untracked() {
            leptos::task::spawn_local(browser::contribute(board));
        }
    };
    let pause = move |_| {
        board.active.set(false);
        board
            .status
            .set(if board.current.get_untracked().is_some() {
                "Pausing after this unit".into()
            } else {
                "Paused".into()
            });
    };
    view! {
        <Title text="Contribute your GPU · Agora"/>
        <h1>"Contribute your GPU"</h1>
        <p>
            "This tab can run work units for Agora's buyers on your GPU, through WebGPU, and earn credits. "
            "It runs the very component native providers run (compiled for the browser when it was published), "
            "in a sandboxed worker with a time limit. New contributors are checked: their results are replicated "
            "and verified like any new provider's."
        </p>
        <section class="panel" id="gpu">
            <h2>"Your GPU"</h2>
            {move || match (board.adapter.get(), board.problem.get()) {
                (Some(name), _) => view! { <p id="adapter">"WebGPU adapter: " <strong>{name}</strong></p> }.into_any(),
                (None, Some(problem)) => view! { <p class="error" id="adapter" role="alert">{problem}</p> }.into_any(),
                (None, None) => view! { <p id="adapter" class="note">"Looking for WebGPU… (this page needs JavaScript)"</p> }.into_any(),
            }}
            <p id="bench">{move || board.bench.get().unwrap_or_default()}</p>
        </section>
        <section class="panel" id="controls">
            <button id="start" on:click=start disabled=move || board.active.get() || board.adapter.get().is_none() || board.bench.get().is_none()>"Start"</button>
            " "
            <button id="pause" on:click=pause disabled=move || !board.active.get()>"Pause"</button>
            <label>
                <input type="checkbox" id="run-hidden" prop:checked=move || board.run_hidden.get()
                    on:change=move |ev| board.run_hidden.set(event_target_checked(&ev))/>
                " Keep working while this tab is hidden"
            </label>
            <p id="status" role="status">{move || board.status.get()}</p>
            {move || board.current.get().map(|(unit, done, total)| {
                let pct = if total > 0 { done * 100 / total } else { 0 };
                view! { <p id="current">{format!("Running {unit}: {done}/{total}")}<progress max="100" value=pct.to_string()></progress></p> }
            })}
        </section>
        <section class="figures">
            <div class="figure"><span class="value" id="units">{move || board.units.get().to_string()}</span><span class="label">"units done"</span></div>
            <div class="figure"><span class="value" id="earned">{move || board.earned.get().to_string()}</span><span class="label">"credits earned"</span></div>
        </section>
        {move || board.provider.get().map(|id| view! {
            <p>"Provider " <a href=format!("/providers/{id}") id="provider-link">{short(&id)}</a> " · " <a href="/account">"your wallet"</a></p>
        })}
        <h2>"Log"</h2>
        <pre id="log" class="log">{move || board.log.get().join("\n")}</pre>
    }
}

/// The contribution loop and the calls into `web/browser/contribute.js`.
#[cfg(feature = "hydrate")]
mod browser {
    use super::Board;
    use crate::{api, keys};
    use agora_wire::api::{
        Ask, Balance, Capabilities, GpuDevice, Heartbeat, HeartbeatReply, LeaseGrant,
        LeaseProgress, LimitKind, LogLine, Progress, RegisterProvider, ResultReport, RunOutcome,
    };
    use base64::Engine as _;
    use leptos::prelude::*;
    use wasm_bindgen::JsCast;
    use wasm_bindgen::prelude::*;
    use wasm_bindgen_futures::JsFuture;

    #[wasm_bindgen(raw_module = "/assets/browser/contribute.js")]
    extern "C" {
        #[wasm_bindgen(js_name = adapterInfo)]
        fn adapter_info() -> js_sys::Promise;
        #[wasm_bindgen(js_name = runUnit)]
        fn run_unit(
            bundle: &str,
            entry: &str,
            input: &[u8],
            shared: &JsValue,
            limits: &JsValue,
            on_event: &js_sys::Function,
        ) -> js_sys::Promise;
        fn benchmark() -> js_sys::Promise;
    }

    fn field(value: &JsValue, name: &str) -> JsValue {
        js_sys::Reflect::get(value, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
    }

    fn text(value: &JsValue, name: &str) -> Option<String> {
        field(value, name).as_string()
    }

    fn number(value: &JsValue, name: &str) -> f64 {
        field(value, name).as_f64().unwrap_or(0.0)
    }

    fn note(board: Board, line: String) {
        board.log.update(|log| {
            log.push(line);
            let excess = log.len().saturating_sub(200);
            log.drain(..excess);
        });
    }

    async fn sleep_ms(ms: u32) {
        gloo_timers::future::TimeoutFuture::new(ms).await;
    }

    fn hidden() -> bool {
        let document = leptos::prelude::document();
        js_sys::Reflect::get(&document, &"visibilityState".into())
            .ok()
            .and_then(|v| v.as_string())
            .as_deref()
            == Some("hidden")
    }

    /// Find the adapter and run the short benchmark.
    pub async fn detect(board: Board) {
        let info = match JsFuture::from(adapter_info()).await {
            Ok(info) => info,
            Err(e) => {
                board
                    .problem
                    .set(Some(format!("WebGPU check failed: {e:?}")));
                return;
            }
        };
        let adapter = field(&info, "adapter");
        if adapter.is_null() || adapter.is_undefined() {
            board.problem.set(Some(
                text(&info, "reason").unwrap_or_else(|| "no WebGPU adapter".into()),
            ));
            return;
        }
        if field(&info, "jspi").as_bool() != Some(true) {
            board.problem.set(Some("this browser lacks WebAssembly JSPI (JavaScript Promise Integration), which jobs need".into()));
            return;
        }
        board.adapter.set(Some(format!(
            "{} ({})",
            text(&adapter, "name").unwrap_or_default(),
            text(&adapter, "driver").unwrap_or_default()
        )));
        match JsFuture::from(benchmark()).await {
            Ok(b) if field(&b, "ok").as_bool() == Some(true) => board.bench.set(Some(format!(
                "Benchmark: matmul 256³ in {:.1} ms, {:.1} GFLOP/s",
                number(&b, "ms"),
                number(&b, "gflops")
            ))),
            Ok(b) => board.bench.set(Some(format!(
                "Benchmark failed: {}",
                text(&b, "error").unwrap_or_default()
            ))),
            Err(e) => board.bench.set(Some(format!("Benchmark failed: {e:?}"))),
        }
    }

    fn capabilities(board: Board) -> Capabilities {
        let cores = web_sys::window()
            .map(|w| w.navigator().hardware_concurrency() as u32)
            .unwrap_or(1);
        let name = board.adapter.get_untracked().unwrap_or_default();
        Capabilities {
            cpu_cores: cores,
            memory_bytes: 0,
            gpus: vec![GpuDevice {
                name: agora_wire::limits::gpu_text(&name),
                backend: "webgpu".into(),
                device_type: "other".into(),
                memory_bytes: None,
                compute_capability: None,
                gflops: None,
            }],
            cuda: false,
            kind: "browser".into(),
        }
    }

    /// Register, then lease and run units until paused.
    pub async fn contribute(board: Board) {
        board.looping.set(true);
        let key = match keys::load() {
            Some(key) => key,
            None => {
                let key = agora_wire::Keypair::generate();
                if let Err(e) = keys::store(&key) {
                    board
                        .status
                        .set(format!("Cannot keep a key in this browser: {e}"));
                    board.looping.set(false);
                    board.active.set(false);
                    return;
                }
                note(
                    board,
                    "Made a new key for this browser (export it from your account page)".into(),
                );
                key
            }
        };
        let key = std::rc::Rc::new(key);
        let id = key.id().to_string();
        board.provider.set(Some(id.clone()));
        let register = RegisterProvider {
            capabilities: capabilities(board),
            ask: Ask {
                per_billion_fuel: 0,
                per_gpu_second: 1,
                per_wall_second: 0,
            },
            class_asks: Default::default(),
            max_concurrent: 1,
            accepts: Default::default(),
        };
        if let Err(e) =
            api::post_signed::<_, serde_json::Value>(&key, "/api/v1/providers".into(), &register)
                .await
        {
            board.status.set(format!("Could not register: {e}"));
            board.looping.set(false);
            board.active.set(false);
            return;
        }
        note(
            board,
            format!("Registered as browser provider {}", &id[..12.min(id.len())]),
        );
        let start_balance = balance(&key).await.unwrap_or(0);
        while board.active.get_untracked() {
            if hidden() && !board.run_hidden.get_untracked() {
                board.status.set("Waiting: this tab is hidden".into());
                sleep_ms(1000).await;
                continue;
            }
            let beat = Heartbeat {
                running_units: 0,
                free_cpu_cores: 1.0,
                gpu_memory_used_bytes: None,
                devices: Vec::new(),
                leases: Vec::new(),
                keeps: None,
            };
            if let Err(e) = api::post_signed::<_, HeartbeatReply>(
                &key,
                "/api/v1/providers/heartbeat".into(),
                &beat,
            )
            .await
            {
                board
                    .status
                    .set(format!("Market unreachable, retrying: {e}"));
                sleep_ms(2000).await;
                continue;
            }
            let grant = match api::post_signed::<_, Option<LeaseGrant>>(
                &key,
                "/api/v1/leases".into(),
                &serde_json::json!({}),
            )
            .await
            {
                Ok(Some(grant)) => grant,
                Ok(None) => {
                    board.status.set("Waiting for work".into());
                    // Results are paid once the market has verified them,
                    // after they were returned: keep the figure current.
                    if let Some(now) = balance(&key).await {
                        board.earned.set(now.saturating_sub(start_balance));
                    }
                    sleep_ms(1000).await;
                    continue;
                }
                Err(e) => {
                    board.status.set(format!("Leasing failed, retrying: {e}"));
                    sleep_ms(2000).await;
                    continue;
                }
            };
            let name = format!("{} {} unit {}", grant.package, grant.version, grant.unit);
            board.status.set(format!("Running {name}"));
            board.current.set(Some((name.clone(), 0, 0)));
            match run(board, &key, &grant).await {
                Ok(outcome) => {
                    board.units.update(|n| *n += 1);
                    note(board, format!("{name}: {outcome}, result returned"));
                }
                Err(e) => note(board, format!("{name}: {e}")),
            }
            board.current.set(None);
            if let Some(now) = balance(&key).await {
                board.earned.set(now.saturating_sub(start_balance));
            }
        }
        board.status.set("Paused".into());
        board.looping.set(false);
        // Results returned before the pause are paid once the market has
        // verified them: keep the figure current for a while.
        for _ in 0..EARNED_REFRESHES_AFTER_PAUSE {
            if board.active.get_untracked() {
                break;
            }
            if let Some(now) = balance(&key).await {
                board.earned.set(now.saturating_sub(start_balance));
            }
            sleep_ms(2000).await;
        }
    }

    /// Balance reads after a pause, two seconds apart: a minute, longer
    /// than the market takes to verify a result in the usual case.
    const EARNED_REFRESHES_AFTER_PAUSE: u32 = 30;

    async fn balance(key: &agora_wire::Keypair) -> Option<u64> {
        api::get_signed::<Balance>(key, format!("/api/v1/accounts/{}", key.id()))
            .await
            .ok()
            .map(|b| b.credits_posted)
    }

    /// Run one leased unit in the worker and return its signed result.
    async fn run(
        board: Board,
        key: &std::rc::Rc<agora_wire::Keypair>,
        grant: &LeaseGrant,
    ) -> Result<RunOutcome, String> {
        // Progress and logs from the worker, sent with heartbeats.
        let logs = std::rc::Rc::new(std::cell::RefCell::new(Vec::<LogLine>::new()));
        let progress = std::rc::Rc::new(std::cell::Cell::new(None::<(u64, u64)>));
        // Heartbeats from the lease on (its inputs may take a while to
        // fetch) keep it and carry the unit's progress.
        // Lines a heartbeat delivered are not sent again with the result;
        // one in flight when the unit ends is waited for.
        let beating = std::rc::Rc::new(std::cell::Cell::new(true));
        let sent = std::rc::Rc::new(std::cell::Cell::new(0usize));
        let in_flight = std::rc::Rc::new(std::cell::Cell::new(false));
        {
            let (key, beating, lease, logs, progress, sent, in_flight) = (
                key.clone(),
                beating.clone(),
                grant.lease_id.clone(),
                logs.clone(),
                progress.clone(),
                sent.clone(),
                in_flight.clone(),
            );
            leptos::task::spawn_local(async move {
                loop {
                    sleep_ms(3000).await;
                    if !beating.get() {
                        break;
                    }
                    in_flight.set(true);
                    let lines: Vec<LogLine> = logs.borrow()[sent.get()..].to_vec();
                    let beat = Heartbeat {
                        running_units: 1,
                        free_cpu_cores: 0.0,
                        gpu_memory_used_bytes: None,
                        devices: Vec::new(),
                        leases: vec![LeaseProgress {
                            lease_id: lease.clone(),
                            progress: progress.get().map(|(done, total)| Progress { done, total }),
                            logs: lines.clone(),
                        }],
                        keeps: None,
                    };
                    if api::post_signed::<_, HeartbeatReply>(
                        &key,
                        "/api/v1/providers/heartbeat".into(),
                        &beat,
                    )
                    .await
                    .is_ok()
                    {
                        sent.set(sent.get() + lines.len());
                    }
                    in_flight.set(false);
                }
            });
        }
        let fetched = async {
            let input =
                api::get_signed_bytes(key, format!("/api/v1/blobs/{}", grant.input_digest)).await?;
            Ok::<_, String>((input, shared_inputs(key, grant).await?))
        };
        let (input, shared) = match fetched.await {
            Ok(both) => both,
            Err(e) => {
                beating.set(false);
                return Err(e);
            }
        };
        let limits = js_sys::Object::new();
        let set = |k: &str, v: f64| {
            let _ = js_sys::Reflect::set(&limits, &k.into(), &v.into());
        };
        set("timeoutMs", grant.limits.timeout_ms as f64);
        set("outputBytes", (256u64 << 20) as f64);
        set("blobBytes", (1u64 << 30) as f64);
        set("gpuBufferBytes", (2u64 << 30) as f64);
        set("gpuDispatches", 1_000_000.0);
        set("gpuTimeMs", grant.limits.timeout_ms as f64);
        let on_event = {
            let (logs, progress) = (logs.clone(), progress.clone());
            let name = board
                .current
                .get_untracked()
                .map(|c| c.0)
                .unwrap_or_default();
            Closure::<dyn FnMut(JsValue)>::new(move |event: JsValue| {
                match text(&event, "type").as_deref() {
                    Some("progress") => {
                        let (done, total) = (
                            number(&event, "done") as u64,
                            number(&event, "total") as u64,
                        );
                        progress.set(Some((done, total)));
                        board.current.set(Some((name.clone(), done, total)));
                    }
                    Some("log") => logs.borrow_mut().push(LogLine {
                        level: text(&event, "level").unwrap_or_else(|| "info".into()),
                        message: text(&event, "message").unwrap_or_default(),
                    }),
                    _ => {}
                }
            })
        };
        let bundle = format!("{}/api/v1/browser/{}/", origin(), grant.digest);
        let running = JsFuture::from(run_unit(
            &bundle,
            "job.js",
            &input,
            &shared,
            &limits,
            on_event.as_ref().unchecked_ref(),
        ));
        let answer = running
            .await
            .map_err(|e| format!("the worker failed: {e:?}"));
        beating.set(false);
        drop(on_event);
        let answer = answer?;
        let report = field(&answer, "report");
        // The worker's words, read as the typed values they stand for.
        let word = |name: &str| text(&report, name).map(serde_json::Value::String);
        let outcome: RunOutcome = word("outcome")
            .and_then(|w| serde_json::from_value(w).ok())
            .unwrap_or(RunOutcome::Trap);
        let limit: Option<LimitKind> = word("limit").and_then(|w| serde_json::from_value(w).ok());
        let output: Option<Vec<u8>> = (outcome == RunOutcome::Ok)
            .then(|| js_sys::Uint8Array::new(&field(&answer, "output")).to_vec());
        let output_digest = output.as_deref().map(agora_wire::digest_hex);
        let gpu_time_us = number(&report, "gpuTimeUs") as u64;
        // A browser cannot meter wasm fuel: it reports none and is paid for GPU time.
        let fuel_used = 0;
        let signature = key.sign(&ResultReport::signed_bytes(
            &grant.lease_id,
            outcome,
            output_digest.as_deref(),
            &[],
            fuel_used,
            gpu_time_us,
        ));
        while in_flight.get() {
            sleep_ms(20).await;
        }
        let mut lines = logs.borrow()[sent.get()..].to_vec();
        lines.truncate(agora_wire::api::MAX_LEASE_LOG_LINES as usize);
        let result = ResultReport {
            outcome,
            limit,
            message: text(&answer, "error"),
            output_base64: output
                .as_deref()
                .map(|b| base64::engine::general_purpose::STANDARD.encode(b)),
            output_digest,
            fuel_used,
            gpu_time_us,
            peak_memory_bytes: 0,
            signature,
            logs: lines,
            outputs: vec![],
        };
        api::post_signed::<_, serde_json::Value>(
            key,
            format!("/api/v1/leases/{}/result", grant.lease_id),
            &result,
        )
        .await?;
        Ok(outcome)
    }

    thread_local! {
        /// The shared inputs of the job this tab ran a unit of last, with
        /// their digests: one job's worth, fetched once for all its units.
        static SHARED: std::cell::RefCell<Vec<(String, js_sys::Uint8Array)>> = Default::default();
    }

    /// The grant's shared inputs as an array of `[name, bytes]` pairs (no
    /// name can reach an object's prototype), each fetched once for all
    /// the units of its job and checked against its size and digest (the
    /// market leases a tab no more than it can hold). Another job's inputs
    /// are let go before this one's are fetched.
    async fn shared_inputs(
        key: &agora_wire::Keypair,
        grant: &LeaseGrant,
    ) -> Result<JsValue, String> {
        let total: u64 = grant.shared.iter().map(|s| s.size).sum();
        if total > agora_wire::limits::MAX_BROWSER_SHARED_BYTES {
            return Err(format!(
                "the job's shared inputs ({total} bytes) are more than a tab holds"
            ));
        }
        // Only what this grant names stays held while the rest is fetched.
        let mut held: Vec<(String, js_sys::Uint8Array)> =
            SHARED.with(|c| std::mem::take(&mut *c.borrow_mut()));
        held.retain(|(digest, _)| grant.shared.iter().any(|s| s.digest == *digest));
        let mut kept = Vec::new();
        let pairs = js_sys::Array::new();
        for s in &grant.shared {
            let bytes = match held
                .iter()
                .chain(&kept)
                .find(|(digest, _)| *digest == s.digest)
            {
                Some((_, bytes)) => bytes.clone(),
                None => {
                    let bytes =
                        api::get_signed_bytes(key, format!("/api/v1/blobs/{}", s.digest)).await?;
                    if bytes.len() as u64 != s.size || agora_wire::digest_hex(&bytes) != s.digest {
                        return Err(format!(
                            "the shared input `{}` is not the blob its lease names",
                            s.name
                        ));
                    }
                    js_sys::Uint8Array::from(bytes.as_slice())
                }
            };
            pairs.push(&js_sys::Array::of2(&JsValue::from_str(&s.name), &bytes));
            kept.push((s.digest.clone(), bytes));
        }
        drop(held);
        SHARED.with(|c| *c.borrow_mut() = kept);
        Ok(pairs.into())
    }

    fn origin() -> String {
        web_sys::window()
            .and_then(|w| w.location().origin().ok())
            .unwrap_or_default()
    }
}
