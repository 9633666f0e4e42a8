//! A job as it runs: unit counts, one page of units with their states and
//! progress, log lines, the cost breakdown, and the page's outputs (images
//! shown inline, everything downloadable), and a button to cancel it while
//! it runs. The job is the buyer's: the
//! browser reads it with signed requests, once a second until it ends, and
//! again when the reader turns a page of units.

use super::*;
use crate::keys;
use agora_wire::Keypair;
use agora_wire::api::{
    JobInfo, JobLogLine, JobLogs, JobState, UNITS_PER_PAGE, UnitState, UnitsQuery,
};
use base64::Engine as _;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// A unit's output as the page shows it: a `data:` URL and whether it is an
/// image.
#[derive(Clone, Debug, PartialEq)]
struct Shown {
    href: String,
    image: bool,
    bytes: usize,
}

#[component]
pub fn JobPage() -> impl IntoView {
    let params = use_params_map();
    let id = params.read_untracked().get("id").unwrap_or_default();
    let job = RwSignal::new(None::<Result<JobInfo, String>>);
    let logs = RwSignal::new(Vec::<JobLogLine>::new());
    let outputs = RwSignal::new(BTreeMap::<u32, Shown>::new());
    let units_from = RwSignal::new(0u32);
    let ready = RwSignal::new(false);
    let has_key = RwSignal::new(false);
    let alive = Arc::new(AtomicBool::new(true));
    on_cleanup({
        let alive = alive.clone();
        move || alive.store(false, Ordering::Relaxed)
    });
    Effect::new(move |_| {
        ready.set(true);
        let Some(key) = keys::load() else { return };
        has_key.set(true);
        let (id, alive) = (id.clone(), alive.clone());
        leptos::task::spawn_local(follow(
            key,
            id,
            alive,
            Shows {
                job,
                logs,
                outputs,
                units_from,
            },
        ));
    });
    view! {
        <Title text="Job · Agora"/>
        <Show when=move || ready.get() fallback=|| view! { <p class="note">"A job is read with your key, which lives in this browser: this page needs JavaScript."</p> }>
            <Show when=move || has_key.get() fallback=|| view! { <p>"This browser has no key. " <a href="/account">"Create or import yours"</a></p> }>
                {move || match job.get() {
                    None => view! { <p>"Reading the job…"</p> }.into_any(),
                    Some(Err(e)) => error_view(e),
                    Some(Ok(j)) => view! { <JobView job=j logs outputs units_from/> }.into_any(),
                }}
            </Show>
        </Show>
    }
}

/// What the page shows, as the follower fills it in.
#[derive(Clone, Copy)]
struct Shows {
    job: RwSignal<Option<Result<JobInfo, String>>>,
    logs: RwSignal<Vec<JobLogLine>>,
    outputs: RwSignal<BTreeMap<u32, Shown>>,
    /// The first unit of the page shown (the reader turns pages).
    units_from: RwSignal<u32>,
}

/// Poll the job, its new log lines and the shown page's new outputs until
/// it ends; after that, read the job again only when the reader turns a page.
async fn follow(key: Keypair, id: String, alive: Arc<AtomicBool>, shows: Shows) {
    let mut after = 0;
    let mut read = None::<(u32, bool)>;
    while alive.load(Ordering::Relaxed) {
        let from = shows.units_from.get_untracked();
        if read == Some((from, true)) {
            pause_a_second().await;
            continue;
        }
        if read.is_some_and(|(was, _)| was != from) {
            // Another page: only its own outputs are kept.
            shows.outputs.update(|o| {
                o.retain(|i, _| (from..from.saturating_add(UNITS_PER_PAGE)).contains(i))
            });
        }
        let info = api::get_signed::<JobInfo>(
            &key,
            format!(
                "/api/v1/jobs/{id}?{}",
                UnitsQuery {
                    units_from: from,
                    units_limit: None
                }
                .to_query()
            ),
        )
        .await;
        if let Ok(page) =
            api::get_signed::<JobLogs>(&key, format!("/api/v1/jobs/{id}/logs?after={after}")).await
        {
            after = page.next;
            if !page.lines.is_empty() {
                shows.logs.update(|l| l.extend(page.lines));
            }
        }
        if let Ok(j) = &info {
            fetch_outputs(&key, &id, j, shows.outputs).await;
        }
        let ended = matches!(&info, Ok(j) if j.state != JobState::Running);
        shows.job.set(Some(info));
        read = Some((from, ended));
        pause_a_second().await;
    }
}

/// The verified outputs of the page's units not fetched yet.
async fn fetch_outputs(
    key: &Keypair,
    id: &str,
    job: &JobInfo,
    outputs: RwSignal<BTreeMap<u32, Shown>>,
) {
    for u in job.units.iter().filter(|u| u.state == UnitState::Verified) {
        if outputs.with_untracked(|o| o.contains_key(&u.index)) {
            continue;
        }
        let fetched =
            api::get_signed_bytes(key, format!("/api/v1/jobs/{id}/units/{}/output", u.index)).await;
        // Shown only when it is the output the market verified.
        let verified = fetched
            .ok()
            .filter(|b| u.output_digest.as_deref() == Some(agora_wire::digest_hex(b).as_str()));
        if let Some(bytes) = verified {
            let image = bytes.starts_with(b"\x89PNG");
            let mime = if image {
                "image/png"
            } else {
                "application/octet-stream"
            };
            let href = format!(
                "data:{mime};base64,{}",
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            );
            outputs.update(|o| {
                o.insert(
                    u.index,
                    Shown {
                        href,
                        image,
                        bytes: bytes.len(),
                    },
                );
            });
        }
    }
}

#[cfg(feature = "hydrate")]
async fn pause_a_second() {
    gloo_timers::future::TimeoutFuture::new(1000).await;
}

#[cfg(not(feature = "hydrate"))]
async fn pause_a_second() {}

#[component]
fn JobView(
    job: JobInfo,
    logs: RwSignal<Vec<JobLogLine>>,
    outputs: RwSignal<BTreeMap<u32, Shown>>,
    units_from: RwSignal<u32>,
) -> impl IntoView {
    let state = format!("{:?}", job.state).to_lowercase();
    let c = job.cost.clone();
    let n = job.unit_counts;
    let counts = format!(
        "{} verified · {} failed · {} running · {} verifying · {} queued",
        n.verified, n.failed, n.running, n.verifying, n.queued
    );
    let shown = match (job.units.first(), job.units.last()) {
        (Some(first), Some(last)) => {
            format!("Units {} to {} of {}", first.index, last.index, n.total)
        }
        _ => format!("No units here ({} in all)", n.total),
    };
    let from = job.units.first().map_or(0, |u| u.index);
    let earlier = (from > 0).then(|| from.saturating_sub(UNITS_PER_PAGE));
    let later = job.units_next;
    let bid = if job.priority == 0 {
        format!(
            "Bid {}% of each provider's ask; its cap did not pay even the median trusted provider's ask, so its units wait behind every unit that can.",
            job.bid_percent
        )
    } else if job.priority < job.bid_percent {
        format!(
            "Bid {}% of each provider's ask; its cap pays {}% at the median trusted provider's ask, so that is the bid in force.",
            job.bid_percent, job.priority
        )
    } else {
        format!("Bid {}% of each provider's ask.", job.bid_percent)
    };
    view! {
        <h1>{format!("Job {}", job.id)}</h1>
        <p class="lead">
            {format!("{} {} · {} units · ", job.package, job.version, n.total)}
            <span id="job-state" class=format!("state {state}")>{state.clone()}</span>
        </p>
        <section class="figures" aria-label="Credits">
            <Figure label="held in escrow" value=c.held.to_string()/>
            <Figure label="paid to providers" value=c.paid_to_providers.to_string()/>
            <Figure label="market fee" value=c.fees.to_string()/>
            <Figure label="refunded" value=c.refunded.to_string()/>
        </section>
        <p id="job-bid" class="note">{bid}</p>
        {(job.state == JobState::Running).then(|| view! { <CancelJob id=job.id.clone()/> })}
        <JobData id=job.id.clone() kept_until=job.data_kept_until_ms deleted_at=job.data_deleted_at_ms/>
        <h2>"Units"</h2>
        <p id="unit-counts">{counts}</p>
        <nav class="pages" aria-label="Pages of units">
            <span>{shown}</span>
            {earlier.map(|to| view! { <button class="plain" on:click=move |_| units_from.set(to)>"Earlier units"</button> })}
            {later.map(|to| view! { <button class="plain" on:click=move |_| units_from.set(to)>"Later units"</button> })}
        </nav>
        <table>
            <thead><tr><th scope="col">"Unit"</th><th scope="col">"State"</th><th scope="col">"Progress"</th><th scope="col">"Attempts"</th><th scope="col">"Cost"</th><th scope="col">"Note"</th></tr></thead>
            <tbody>
                {job.units.into_iter().map(|u| {
                    let (done, total) = match (&u.progress, u.state) {
                        (_, UnitState::Verified) => (1, 1),
                        (Some(p), _) => (p.done, p.total.max(1)),
                        _ => (0, 1),
                    };
                    view! {
                        <tr>
                            <td>{u.index}</td>
                            <td>{u.state.as_str()}</td>
                            <td><progress max=total value=done aria-label=format!("unit {} progress", u.index)></progress></td>
                            <td>{u.attempts}</td>
                            <td>{u.cost.map(|c| c.to_string()).unwrap_or_default()}</td>
                            <td>{u.message.unwrap_or_default()}</td>
                        </tr>
                    }
                }).collect_view()}
            </tbody>
        </table>
        <h2>"Outputs"</h2>
        {move || {
            let shown = outputs.get();
            if shown.is_empty() {
                return view! { <p class="note">"The outputs of the units on this page appear here as they are verified."</p> }.into_any();
            }
            view! {
                <div class="outputs">
                    {shown.into_iter().map(|(index, s)| {
                        let name = format!("unit-{index}.{}", if s.image { "png" } else { "out" });
                        view! {
                            <figure>
                                {s.image.then(|| view! { <img src=s.href.clone() alt=format!("output of unit {index}")/> })}
                                <figcaption><a href=s.href download=name.clone()>{format!("{name} ({} bytes)", s.bytes)}</a></figcaption>
                            </figure>
                        }
                    }).collect_view()}
                </div>
            }
            .into_any()
        }}
        <h2>"Log"</h2>
        <pre class="log" aria-live="polite">
            {move || logs.get().into_iter().map(|l| format!("unit {} {} {:<5} {}\n", l.unit, short(&l.provider), l.level, l.message)).collect::<String>()}
        </pre>
    }
}

/// A running job's cancel button (after a confirmation): queued units are
/// withdrawn, running ones stopped and paid their time, the rest refunded;
/// the page shows the cancelled job at its next read.
#[component]
fn CancelJob(id: String) -> impl IntoView {
    let failed = RwSignal::new(None::<String>);
    let cancel = move |_| {
        let question = "Cancel this job? Its queued units are withdrawn and its running ones stopped (their providers are paid the time they ran); results already verified stay paid, and the rest of the escrow comes back to you now.";
        if !confirmed(question) {
            return;
        }
        let Some(key) = keys::load() else { return };
        let path = format!("/api/v1/jobs/{id}/cancel");
        leptos::task::spawn_local(async move {
            let answer: Result<JobInfo, String> =
                crate::api::post_signed(&key, path, &serde_json::json!({})).await;
            failed.set(answer.err());
        });
    };
    view! {
        <p>
            <button id="cancel-job" on:click=cancel>"Cancel job"</button>
            {move || failed.get().map(|e| view! { <span class="error">{format!(" Not cancelled: {e}")}</span> })}
        </p>
    }
}

/// Where the job's data stands: kept until the market deletes it (with a
/// button to delete it now, after a confirmation), or deleted.
#[component]
fn JobData(id: String, kept_until: Option<i64>, deleted_at: Option<i64>) -> impl IntoView {
    let deleted = RwSignal::new(deleted_at.map(|_| Ok(())));
    let delete = move |_| {
        let question = "Delete this job's inputs, outputs and logs from the market now? Nothing brings them back; what the job cost stays on record.";
        if !confirmed(question) {
            return;
        }
        let Some(key) = keys::load() else { return };
        let path = format!("/api/v1/jobs/{id}/data");
        leptos::task::spawn_local(async move {
            let answer: Result<agora_wire::api::DataDeleted, String> =
                crate::api::delete_signed(&key, path).await;
            deleted.set(Some(answer.map(|_| ())));
        });
    };
    move || {
        match (deleted.get(), kept_until) {
        (Some(Ok(())), _) => view! { <p id="job-data" class="note">"This job's inputs, outputs and logs were deleted."</p> }.into_any(),
        (failed, Some(until)) => {
            let day = 24 * 3600 * 1000;
            let days = ((until - now_ms()).max(0) + day - 1) / day;
            view! {
                <p id="job-data" class="note">
                    {format!("The market keeps this job's inputs, outputs and logs for {days} more day(s), then deletes them. ")}
                    <button class="plain" on:click=delete.clone()>"Delete them now"</button>
                    {failed.and_then(Result::err).map(|e| format!(" ({e})"))}
                </p>
            }
            .into_any()
        }
        (_, None) => ().into_any(),
    }
    }
}

/// Now, in milliseconds since the epoch.
fn now_ms() -> i64 {
    #[cfg(feature = "hydrate")]
    return js_sys::Date::now() as i64;
    #[cfg(not(feature = "hydrate"))]
    return std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
}
