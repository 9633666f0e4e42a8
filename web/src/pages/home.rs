//! The home page: what Agora is, live market figures, the going rate per
//! device class, an example to run.

use super::*;
use agora_wire::api::{ClassPrice, MarketStats};

#[component]
pub fn Home() -> impl IntoView {
    let base = market();
    let stats = Resource::new(
        || (),
        move |_| api::get::<MarketStats>(base.clone(), "/api/v1/stats".into()),
    );
    view! {
        <Title text="Agora · GPU compute, paid per verified result"/>
        <section class="hero">
            <h1>"Run GPU work on other people's machines. Pay only for verified results."</h1>
            <p>
                "A job is a signed WebAssembly component. Providers run its work units in a sandbox on "
                "their GPUs; the market holds your credits in escrow, checks the results and pays per unit."
            </p>
        </section>
        <Suspense fallback=|| view! { <p>"Reading the market…"</p> }>
            {move || Suspend::new(async move {
                match stats.await {
                    Ok(s) => view! {
                        <section class="figures" aria-label="Market now">
                            <Figure label="providers online" value=s.providers_online.to_string()/>
                            <Figure label="GPUs online" value=s.gpus_online.to_string()/>
                            <Figure label="units queued" value=s.queued_units.to_string()/>
                            <Figure label="units running" value=s.running_units.to_string()/>
                            <Figure
                                label="suggested ask (credits per billion fuel)"
                                value=s.suggested_ask.per_billion_fuel.to_string()
                            />
                        </section>
                        <Prices prices=s.prices/>
                    }
                    .into_any(),
                    Err(e) => error_view(e),
                }
            })}
        </Suspense>
        <section class="example">
            <h2>"Try it"</h2>
            <p>"Render a Mandelbrot view on a provider's GPU and get the PNG back:"</p>
            <pre><code>"agora submit mandelbrot --input view.txt --max-price 500 --wait -o out/"</code></pre>
            <p><a href="/packages/mandelbrot">"The mandelbrot package"</a></p>
        </section>
    }
}

/// The going rate per device class: what recent accepted runs were paid
/// (reputation-weighted medians; fresh keys' trades not counted).
#[component]
fn Prices(prices: Vec<ClassPrice>) -> impl IntoView {
    if prices.is_empty() {
        return view! {
            <section class="prices" aria-label="Prices per device class">
                <h2>"Prices per device class"</h2>
                <p>"No accepted trades this week yet: the suggested ask is the providers' own."</p>
            </section>
        }
        .into_any();
    }
    view! {
        <section class="prices" aria-label="Prices per device class">
            <h2>"Prices per device class"</h2>
            <table>
                <thead>
                    <tr>
                        <th>"device class"</th>
                        <th>"per billion fuel"</th>
                        <th>"per GPU second"</th>
                        <th>"per wall second"</th>
                        <th>"trades"</th>
                        <th>"trusted online"</th>
                    </tr>
                </thead>
                <tbody>
                    {prices
                        .into_iter()
                        .map(|p| {
                            view! {
                                <tr>
                                    <td>{p.class}</td>
                                    <td>{p.rate.per_billion_fuel}</td>
                                    <td>{p.rate.per_gpu_second}</td>
                                    <td>{p.rate.per_wall_second}</td>
                                    <td>{p.trades}</td>
                                    <td>{p.trusted_online}</td>
                                </tr>
                            }
                        })
                        .collect_view()}
                </tbody>
            </table>
        </section>
    }
    .into_any()
}
