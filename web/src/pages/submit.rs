//! Submit a job: package and version, one input file per work unit, the
//! price cap (with the market's suggested price), the bid (percent of each
//! provider's ask: higher bids are served first), replication and limits;
//! the escrow to be held is shown before confirming. Signed in the browser.

use super::*;
use crate::keys;
use agora_wire::api::{JobInfo, MarketStats, SubmitJob, UnitLimits};
use base64::Engine as _;
use leptos::html::Input;

#[component]
pub fn Submit() -> impl IntoView {
    let base = market();
    let query = use_query_map();
    let stats = Resource::new(
        || (),
        move |_| api::get::<MarketStats>(base.clone(), "/api/v1/stats".into()),
    );
    let package = RwSignal::new(
        query
            .read_untracked()
            .get("package")
            .unwrap_or_else(|| "mandelbrot".into()),
    );
    let version = RwSignal::new(String::new());
    let max_price = RwSignal::new(500u64);
    let replicas = RwSignal::new(1u32);
    let bid = RwSignal::new(agora_wire::limits::MIN_BID_PERCENT);
    let timeout_s = RwSignal::new(60u64);
    let files: NodeRef<Input> = NodeRef::new();
    let folder: NodeRef<Input> = NodeRef::new();
    // A folder picker (Chromium, Firefox, Safari all read this attribute);
    // set in the browser, where picking happens.
    Effect::new(move |_| {
        if let Some(input) = folder.get() {
            let _ = input.set_attribute("webkitdirectory", "");
        }
    });
    let error = RwSignal::new(None::<String>);
    let busy = RwSignal::new(false);
    let navigate = leptos_router::hooks::use_navigate();
    let submit = move |ev: leptos::ev::SubmitEvent| {
        ev.prevent_default();
        let Some(key) = keys::load() else {
            error.set(Some(
                "create or import a key on your account page first".into(),
            ));
            return;
        };
        // The chosen files, or else every file of the chosen folder.
        let chosen = |input: NodeRef<Input>| {
            input
                .get()
                .and_then(|i| i.files())
                .filter(|l| l.length() > 0)
        };
        let inputs = chosen(files).or_else(|| chosen(folder));
        let navigate = navigate.clone();
        busy.set(true);
        error.set(None);
        leptos::task::spawn_local(async move {
            let result = async {
                let list = inputs.ok_or("choose at least one input file")?;
                let mut inputs_base64 = Vec::new();
                for i in 0..list.length() {
                    let file = list.get(i).expect("in range");
                    inputs_base64.push(
                        base64::engine::general_purpose::STANDARD.encode(read_file(file).await?),
                    );
                }
                if inputs_base64.is_empty() {
                    return Err("choose at least one input file".to_string());
                }
                let v = version.get_untracked();
                let request = SubmitJob {
                    package: package.get_untracked(),
                    version: (!v.is_empty()).then_some(v),
                    inputs_base64,
                    input_digests: Vec::new(),
                    shared: Default::default(),
                    limits: UnitLimits {
                        fuel: 5_000_000_000,
                        memory_bytes: 512 << 20,
                        timeout_ms: timeout_s.get_untracked() * 1000,
                        gpu: false,
                    },
                    max_price: max_price.get_untracked(),
                    replicas: replicas.get_untracked(),
                    requirements: Default::default(),
                    providers: Default::default(),
                    deadline_ms: None,
                    bid_percent: Some(bid.get_untracked()),
                    retry: Default::default(),
                };
                api::post_signed::<_, JobInfo>(&key, "/api/v1/jobs".into(), &request).await
            }
            .await;
            busy.set(false);
            match result {
                Ok(job) => navigate(&format!("/jobs/{}", job.id), Default::default()),
                Err(e) => error.set(Some(e)),
            }
        });
    };
    view! {
        <Title text="Submit a job · Agora"/>
        <h1>"Submit a job"</h1>
        <form class="submit" on:submit=submit>
            <label for="package">"Package"</label>
            <input id="package" name="package" required prop:value=move || package.get() on:input=move |ev| package.set(event_target_value(&ev))/>
            <label for="version">"Version (empty: the latest)"</label>
            <input id="version" name="version" prop:value=move || version.get() on:input=move |ev| version.set(event_target_value(&ev))/>
            <label for="inputs">"Inputs: one file per work unit"</label>
            <input id="inputs" name="inputs" type="file" multiple node_ref=files/>
            <label for="folder">"Or a folder: one work unit per file in it"</label>
            <input id="folder" name="folder" type="file" node_ref=folder/>
            <label for="max-price">"Price cap (credits, held in escrow until the job ends)"</label>
            <input id="max-price" name="max-price" type="number" min="1" prop:value=move || max_price.get().to_string()
                on:input=move |ev| max_price.set(event_target_value(&ev).parse().unwrap_or(0))/>
            <label for="bid">"Bid (percent of each provider's ask: runs are paid this, and higher bids are served first)"</label>
            <input id="bid" name="bid" type="number" min=agora_wire::limits::MIN_BID_PERCENT.to_string() max=agora_wire::limits::MAX_BID_PERCENT.to_string()
                prop:value=move || bid.get().to_string()
                on:input=move |ev| bid.set(event_target_value(&ev).parse().unwrap_or(agora_wire::limits::MIN_BID_PERCENT))/>
            <label for="replicas">"Providers that must agree on each output"</label>
            <input id="replicas" name="replicas" type="number" min="1" max="5" prop:value=move || replicas.get().to_string()
                on:input=move |ev| replicas.set(event_target_value(&ev).parse().unwrap_or(1))/>
            <label for="timeout">"Time limit per unit (seconds)"</label>
            <input id="timeout" name="timeout" type="number" min="1" max="3600" prop:value=move || timeout_s.get().to_string()
                on:input=move |ev| timeout_s.set(event_target_value(&ev).parse().unwrap_or(60))/>
            <Suspense fallback=|| ()>
                {move || Suspend::new(async move {
                    stats.await.ok().map(|s| view! {
                        <p class="note">
                            {format!("Market now: {} providers online, {} units queued; suggested ask {} credits per billion fuel.",
                                s.providers_online, s.queued_units, s.suggested_ask.per_billion_fuel)}
                        </p>
                    })
                })}
            </Suspense>
            <p id="who-sees" class="note">
                "Who sees your data: the provider that runs a unit reads its input and makes its output, "
                "and any registered provider may lease a queued unit, new ones included. "
                "Only you (and the market's operator) can read your inputs, outputs and logs through the market."
            </p>
            <p id="escrow" class="escrow">
                {move || format!("Submitting holds {} credits in escrow. Each verified result is paid from it; what is not spent comes back when the job ends.", max_price.get())}
            </p>
            <button type="submit" disabled=move || busy.get()>{move || if busy.get() { "Submitting…" } else { "Submit and hold credits" }}</button>
            {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
        </form>
    }
}

/// A chosen file's bytes.
#[cfg(feature = "hydrate")]
async fn read_file(file: web_sys::File) -> Result<Vec<u8>, String> {
    let name = file.name();
    gloo_file::futures::read_as_bytes(&gloo_file::Blob::from(file))
        .await
        .map_err(|e| format!("reading {name}: {e}"))
}

#[cfg(not(feature = "hydrate"))]
async fn read_file(_file: web_sys::File) -> Result<Vec<u8>, String> {
    Err("files are read in the browser".into())
}
