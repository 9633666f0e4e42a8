//! One provider's dashboard: its machine, price and reputation, and the
//! last 24 hours as charts (results returned, credits earned, slots busy,
//! and its machine's readings where it sent them: free cores, GPU busy,
//! temperature, power), drawn as SVG on the server: no script, no chart
//! library.

use super::*;
use agora_wire::api::{ProviderActivity, ProviderInfo, ProviderTelemetry, TelemetrySample};

#[component]
pub fn ProviderPage() -> impl IntoView {
    let base = market();
    let params = use_params_map();
    let id = move || params.read().get("id").unwrap_or_default();
    let data = Resource::new(id, move |id| {
        let base = base.clone();
        async move {
            let all =
                api::get::<Vec<ProviderInfo>>(base.clone(), "/api/v1/providers".into()).await?;
            let info = all
                .into_iter()
                .find(|p| p.id == id)
                .ok_or_else(|| format!("no provider `{id}` is registered"))?;
            let activity = api::get::<ProviderActivity>(
                base.clone(),
                format!("/api/v1/providers/{id}/activity?bucket_s=3600&buckets=24"),
            )
            .await?;
            // Its machine's charts are extra: without them (an older market,
            // a failed read) the dashboard still shows its work.
            let telemetry =
                api::get::<ProviderTelemetry>(base, format!("/api/v1/providers/{id}/telemetry"))
                    .await
                    .ok();
            Ok::<_, String>((info, activity, telemetry))
        }
    });
    view! {
        <Suspense fallback=|| view! { <p>"Reading the provider…"</p> }>
            {move || Suspend::new(async move {
                match data.await {
                    Ok((info, activity, telemetry)) => {
                        view! { <Dashboard info activity telemetry/> }.into_any()
                    }
                    Err(e) => error_view(e),
                }
            })}
        </Suspense>
    }
}

#[component]
fn Dashboard(
    info: ProviderInfo,
    activity: ProviderActivity,
    telemetry: Option<ProviderTelemetry>,
) -> impl IntoView {
    let samples = telemetry.map(|t| t.samples).unwrap_or_default();
    let units: Vec<f64> = activity.buckets.iter().map(|b| b.units as f64).collect();
    let earned: Vec<f64> = activity.buckets.iter().map(|b| b.earned as f64).collect();
    let busy: Vec<f64> = activity
        .buckets
        .iter()
        .map(|b| b.utilization * 100.0)
        .collect();
    let start = activity.buckets.first().map(|b| b.start_ms).unwrap_or(0);
    let end = activity
        .buckets
        .last()
        .map(|b| b.start_ms + activity.bucket_ms)
        .unwrap_or(0);
    let hourly = |reading: fn(&TelemetrySample) -> Option<f64>| {
        hourly_means(&samples, start, activity.bucket_ms, units.len(), reading)
    };
    let cores = hourly(|s| Some(s.free_cpu_cores));
    let gpu_busy = hourly(|s| s.gpu_utilization_percent);
    let celsius = hourly(|s| s.gpu_celsius);
    let watts = hourly(|s| s.gpu_watts);
    let total_units: f64 = units.iter().sum();
    let total_earned: f64 = earned.iter().sum();
    view! {
        <Title text=format!("Provider {} · Agora", short(&info.id))/>
        <h1>"Provider " <code>{short(&info.id)}</code></h1>
        <section class="figures" aria-label="Provider">
            <Figure label="state" value=(if info.online { "online" } else { "offline" }).to_string()/>
            <Figure label="reputation" value=format!("{:.2}", info.reputation)/>
            <Figure label="units done" value=info.units_done.to_string()/>
            <Figure label="slots" value=info.max_concurrent.to_string()/>
            <Figure label="ask per billion fuel" value=info.ask.per_billion_fuel.to_string()/>
        </section>
        <p class="note">{format!("Full key: {}", info.id)}</p>
        <h2>"Last 24 hours"</h2>
        <BarChart title="Results returned per hour" values=units start end unit="" max=None/>
        <p class="note">{format!("In all: {total_units} results")}</p>
        <BarChart title="Credits earned per hour" values=earned start end unit=" credits" max=None/>
        <p class="note">{format!("In all: {total_earned} credits")}</p>
        <BarChart title="Slots busy (%)" values=busy start end unit="%" max=Some(100.0)/>
        {cores.map(|cores| view! {
            <h2>"Its machine, last 24 hours"</h2>
            <p class="note">"Hourly means of what its heartbeats read (a sample a minute at most)."</p>
            <BarChart title="Free CPU cores" values=cores start end unit=" cores" max=None/>
        })}
        {gpu_busy.map(|v| view! { <BarChart title="GPU busy (%)" values=v start end unit="%" max=Some(100.0)/> })}
        {celsius.map(|v| view! { <BarChart title="GPU temperature (°C)" values=v start end unit=" °C" max=None/> })}
        {watts.map(|v| view! { <BarChart title="GPU power (W)" values=v start end unit=" W" max=None/> })}
    }
}

/// The mean of `reading` over the samples in each of `buckets` buckets of
/// `bucket_ms` from `start` (0 where a bucket has none), or None when no
/// sample has the reading at all.
fn hourly_means(
    samples: &[TelemetrySample],
    start: i64,
    bucket_ms: i64,
    buckets: usize,
    reading: fn(&TelemetrySample) -> Option<f64>,
) -> Option<Vec<f64>> {
    let mut sums = vec![(0.0, 0u32); buckets];
    for s in samples {
        let (Some(v), Ok(b)) = (
            reading(s),
            usize::try_from((s.at_ms - start) / bucket_ms.max(1)),
        ) else {
            continue;
        };
        if let Some(slot) = sums.get_mut(b) {
            slot.0 += v;
            slot.1 += 1;
        }
    }
    sums.iter().any(|(_, n)| *n > 0).then(|| {
        sums.iter()
            .map(|(sum, n)| if *n > 0 { sum / *n as f64 } else { 0.0 })
            .collect()
    })
}

/// A bar per value, scaled to `max` (or the largest value), with the
/// scale, the time span and each bar's value in its tooltip.
#[component]
fn BarChart(
    title: &'static str,
    values: Vec<f64>,
    start: i64,
    end: i64,
    unit: &'static str,
    max: Option<f64>,
) -> impl IntoView {
    const W: f64 = 600.0;
    const H: f64 = 150.0;
    const LEFT: f64 = 40.0;
    const BOTTOM: f64 = 20.0;
    let top = max
        .unwrap_or_else(|| values.iter().cloned().fold(0.0, f64::max))
        .max(1.0);
    let n = values.len().max(1) as f64;
    let slot = (W - LEFT) / n;
    let summary = format!(
        "{title}: {} bars, highest {:.0}{unit}",
        values.len(),
        values.iter().cloned().fold(0.0, f64::max)
    );
    let bars = values
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let h = (v / top * (H - BOTTOM - 10.0)).max(if v > 0.0 { 1.0 } else { 0.0 });
            let x = LEFT + i as f64 * slot + slot * 0.1;
            view! {
                <rect class="bar" x=format!("{x:.1}") y=format!("{:.1}", H - BOTTOM - h) width=format!("{:.1}", slot * 0.8) height=format!("{h:.1}")>
                    <title>{format!("{v:.0}{unit}")}</title>
                </rect>
            }
        })
        .collect_view();
    view! {
        <figure class="chart">
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {W} {H}") role="img" aria-label=summary>
                <line class="axis" x1=LEFT y1=H - BOTTOM x2=W y2=H - BOTTOM/>
                <line class="axis" x1=LEFT y1="10" x2=LEFT y2=H - BOTTOM/>
                <text class="tick" x=LEFT - 4.0 y="16" text-anchor="end">{format!("{top:.0}")}</text>
                <text class="tick" x=LEFT - 4.0 y=H - BOTTOM text-anchor="end">"0"</text>
                <text class="tick" x=LEFT y=H - 4.0>{format!("{} h ago", (end - start) / 3_600_000)}</text>
                <text class="tick" x=W y=H - 4.0 text-anchor="end">"now"</text>
                {bars}
            </svg>
        </figure>
    }
}
