//! Providers: machines online with hardware, reputation and price.

use super::*;
use agora_wire::api::ProviderInfo;

#[component]
pub fn Providers() -> impl IntoView {
    let base = market();
    let providers = Resource::new(
        || (),
        move |_| api::get::<Vec<ProviderInfo>>(base.clone(), "/api/v1/providers".into()),
    );
    view! {
        <Title text="Providers · Agora"/>
        <h1>"Providers"</h1>
        <Suspense fallback=|| view! { <p>"Reading the providers…"</p> }>
            {move || Suspend::new(async move {
                match providers.await {
                    Ok(list) if list.is_empty() => view! { <p>"No provider has registered yet. Start one with " <code>"agora host"</code>"."</p> }.into_any(),
                    Ok(list) => view! {
                        <table>
                            <thead>
                                <tr>
                                    <th scope="col">"Provider"</th>
                                    <th scope="col">"State"</th>
                                    <th scope="col">"Hardware"</th>
                                    <th scope="col">"Reputation"</th>
                                    <th scope="col">"Ask (fuel / GPU s)"</th>
                                    <th scope="col">"Units done"</th>
                                </tr>
                            </thead>
                            <tbody>
                                {list.into_iter().map(|p| view! { <ProviderRow p/> }).collect_view()}
                            </tbody>
                        </table>
                    }
                    .into_any(),
                    Err(e) => error_view(e),
                }
            })}
        </Suspense>
    }
}

#[component]
fn ProviderRow(p: ProviderInfo) -> impl IntoView {
    let gpus: Vec<String> = p
        .capabilities
        .gpus
        .iter()
        .map(|g| match g.gflops {
            Some(speed) => format!("{} ({}, {speed} GFLOPS)", g.name, g.backend),
            None => format!("{} ({})", g.name, g.backend),
        })
        .collect();
    let hardware = format!(
        "{} cores, {:.0} GiB{}",
        p.capabilities.cpu_cores,
        p.capabilities.memory_bytes as f64 / (1u64 << 30) as f64,
        if gpus.is_empty() {
            String::new()
        } else {
            format!(", {}", gpus.join(", "))
        }
    );
    view! {
        <tr>
            <td><a href=format!("/providers/{}", p.id)><code title=p.id.clone()>{short(&p.id)}</code></a></td>
            <td>{if p.online { "online" } else { "offline" }}</td>
            <td>{hardware}</td>
            <td>
                <meter min="0" max="1" value=p.reputation aria-label="reputation">{format!("{:.2}", p.reputation)}</meter>
                {format!(" {:.2}", p.reputation)}
            </td>
            <td>{format!("{} / {}", p.ask.per_billion_fuel, p.ask.per_gpu_second)}</td>
            <td>{p.units_done}</td>
        </tr>
    }
}
