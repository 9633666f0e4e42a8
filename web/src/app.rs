//! The page shell, the router and the pages.
//!
//! Every route renders in `SsrMode::Async`: the server waits for the page's
//! data and sends whole HTML, so reading works without JavaScript.

use crate::api::{self, MarketUrl};
use crate::keys;
use agora_wire::Keypair;
use agora_wire::api::{Balance, MarketStats, PackageInfo, PackageSummary, Page, ProviderInfo, Transfer};
use leptos::task::spawn_local;
use leptos::prelude::*;
use leptos_meta::{MetaTags, Title, provide_meta_context};
use leptos_router::SsrMode;
use leptos_router::components::{A, Route, Router, Routes};
use leptos_router::hooks::{use_params_map, use_query_map};
use leptos_router::path;

/// The HTML document around the app; with `hydrate`, it loads the browser
/// bundle.
pub fn shell(options: LeptosOptions, hydrate: bool) -> impl IntoView {
    view! {
        <!DOCTYPE html>
        <html lang="en">
            <head>
                <meta charset="utf-8"/>
                <meta name="viewport" content="width=device-width, initial-scale=1"/>
                <link rel="stylesheet" href="/assets/agora.css"/>
                {hydrate.then(|| view! { <HydrationScripts options/> })}
                <MetaTags/>
            </head>
            <body>
                <App/>
            </body>
        </html>
    }
}

#[component]
pub fn App() -> impl IntoView {
    provide_meta_context();
    // Effects run only in the browser: this marks the page once the browser
    // half has taken over (the browser test waits for it).
    Effect::new(move |_| {
        if let Some(root) = document().document_element() {
            let _ = root.set_attribute("data-hydrated", "true");
        }
    });
    view! {
        <Router>
            <header class="top">
                <a class="brand" href="/">"Agora"</a>
                <nav aria-label="Main">
                    <A href="/packages">"Packages"</A>
                    <A href="/providers">"Providers"</A>
                    <A href="/account">"Account"</A>
                </nav>
            </header>
            <main>
                <Routes fallback=|| view! { <NotFound/> }>
                    <Route path=path!("") view=Home ssr=SsrMode::Async/>
                    <Route path=path!("/packages") view=Packages ssr=SsrMode::Async/>
                    <Route path=path!("/packages/:name") view=PackagePage ssr=SsrMode::Async/>
                    <Route path=path!("/providers") view=Providers ssr=SsrMode::Async/>
                    <Route path=path!("/account") view=Account ssr=SsrMode::Async/>
                </Routes>
            </main>
            <footer>"Agora: signed WebAssembly jobs on GPUs, paid per verified result."</footer>
        </Router>
    }
}

fn market() -> MarketUrl {
    use_context::<MarketUrl>().unwrap_or_default()
}

/// An API error, shown where the data would have been.
fn error_view(message: String) -> AnyView {
    view! { <p class="error" role="alert">{message}</p> }.into_any()
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

#[component]
fn NotFound() -> impl IntoView {
    view! {
        <Title text="Not found · Agora"/>
        <h1>"Not found"</h1>
        <p>"There is no page here. " <a href="/packages">"Browse packages"</a></p>
    }
}

#[component]
fn Home() -> impl IntoView {
    let base = market();
    let stats = Resource::new(|| (), move |_| api::get::<MarketStats>(base.clone(), "/api/v1/stats".into()));
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

#[component]
fn Figure(label: &'static str, value: String) -> impl IntoView {
    view! {
        <div class="figure">
            <span class="value">{value}</span>
            <span class="label">{label}</span>
        </div>
    }
}

#[component]
fn Packages() -> impl IntoView {
    let base = market();
    let query = use_query_map();
    let search = move || {
        let q = query.read();
        (q.get("q").unwrap_or_default(), q.get("sort").unwrap_or_default())
    };
    let packages = Resource::new(search, move |(q, sort)| {
        let base = base.clone();
        async move { api::get::<Page<PackageSummary>>(base, format!("/api/v1/packages{}", api::query(&[("q", &q), ("sort", &sort)]))).await }
    });
    view! {
        <Title text="Packages · Agora"/>
        <h1>"Packages"</h1>
        <form class="search" method="get" action="/packages" role="search">
            <label for="q">"Search by name, description or tag"</label>
            <input id="q" name="q" type="search" value=move || search().0/>
            <label for="sort">"Sort by"</label>
            <select id="sort" name="sort">
                <option value="downloads" selected=move || search().1 != "recent">"downloads"</option>
                <option value="recent" selected=move || search().1 == "recent">"recently updated"</option>
            </select>
            <button type="submit">"Search"</button>
        </form>
        <Suspense fallback=|| view! { <p>"Searching…"</p> }>
            {move || Suspend::new(async move {
                match packages.await {
                    Ok(page) if page.items.is_empty() => view! { <p>"No package matches."</p> }.into_any(),
                    Ok(page) => view! {
                        <p class="count">{format!("{} packages", page.total)}</p>
                        <ul class="cards">
                            {page.items.into_iter().map(|p| view! { <PackageCard p/> }).collect_view()}
                        </ul>
                    }
                    .into_any(),
                    Err(e) => error_view(e),
                }
            })}
        </Suspense>
    }
}

#[component]
fn PackageCard(p: PackageSummary) -> impl IntoView {
    let href = format!("/packages/{}", p.name);
    view! {
        <li class="card">
            <h2><a href=href>{p.name.clone()}</a></h2>
            <p>{p.description}</p>
            <p class="meta">
                {p.latest.map(|v| format!("v{v}")).unwrap_or_else(|| "no release".into())}
                " · " {p.category} " · " {format!("{} downloads", p.downloads)}
            </p>
            <p class="tags">{p.tags.into_iter().map(|t| view! { <span class="tag">{t}</span> }).collect_view()}</p>
        </li>
    }
}

#[component]
fn PackagePage() -> impl IntoView {
    let base = market();
    let params = use_params_map();
    let name = move || params.read().get("name").unwrap_or_default();
    let info = Resource::new(name, move |name| {
        let base = base.clone();
        async move { api::get::<PackageInfo>(base, format!("/api/v1/packages/{name}")).await }
    });
    view! {
        <Suspense fallback=|| view! { <p>"Reading the package…"</p> }>
            {move || Suspend::new(async move {
                match info.await {
                    Ok(info) => view! { <PackageDetails info/> }.into_any(),
                    Err(e) => error_view(e),
                }
            })}
        </Suspense>
    }
}

#[component]
fn PackageDetails(info: PackageInfo) -> impl IntoView {
    let s = info.summary;
    let latest = info.versions.iter().find(|v| Some(&v.version) == s.latest.as_ref()).cloned();
    let run = format!("agora submit {} --input unit.bin --max-price 500 --wait -o out/", s.name);
    let fetch = format!("agora fetch {}@{} -o {}.wasm", s.name, s.latest.clone().unwrap_or_default(), s.name);
    view! {
        <Title text=format!("{} · Agora", s.name)/>
        <h1>{s.name.clone()}</h1>
        <p class="lead">{s.description}</p>
        <dl class="facts">
            <dt>"Publisher key"</dt>
            <dd><code>{s.owner.to_string()}</code></dd>
            <dt>"Category"</dt>
            <dd>{s.category}</dd>
            <dt>"Downloads"</dt>
            <dd>{s.downloads}</dd>
        </dl>
        {latest.map(|v| {
            let (agora, wasi): (Vec<String>, Vec<String>) = v.imports.into_iter().partition(|i| i.starts_with("agora:"));
            view! {
                <h2>"WIT world"</h2>
                <p>
                    "Uses: "
                    {agora.into_iter().map(|i| view! { <span class="tag">{i}</span> }).collect_view()}
                    {(!wasi.is_empty()).then(|| view! { <span class="tag" title=wasi.join(", ")>{format!("WASI ({} interfaces)", wasi.len())}</span> })}
                </p>
                <p>"Exports: " {v.exports.into_iter().map(|e| view! { <span class="tag">{e}</span> }).collect_view()}</p>
            }
        })}
        <h2>"Run it"</h2>
        <pre><code>{run}</code></pre>
        <pre><code>{fetch}</code></pre>
        <h2>"Versions"</h2>
        <table>
            <thead>
                <tr><th scope="col">"Version"</th><th scope="col">"Digest (blake3)"</th><th scope="col">"Size"</th><th scope="col">"State"</th></tr>
            </thead>
            <tbody>
                {info.versions.into_iter().map(|v| view! {
                    <tr>
                        <td>{v.version}</td>
                        <td><code title=v.digest.clone()>{short(&v.digest)}"…"</code></td>
                        <td>{format!("{:.1} KiB", v.size as f64 / 1024.0)}</td>
                        <td>{if v.yanked { "yanked" } else { "available" }}</td>
                    </tr>
                }).collect_view()}
            </tbody>
        </table>
    }
}

#[component]
fn Providers() -> impl IntoView {
    let base = market();
    let providers = Resource::new(|| (), move |_| api::get::<Vec<ProviderInfo>>(base.clone(), "/api/v1/providers".into()));
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
    let gpus: Vec<String> = p.capabilities.gpus.iter().map(|g| format!("{} ({})", g.name, g.backend)).collect();
    let hardware = format!(
        "{} cores, {:.0} GiB{}",
        p.capabilities.cpu_cores,
        p.capabilities.memory_bytes as f64 / (1u64 << 30) as f64,
        if gpus.is_empty() { String::new() } else { format!(", {}", gpus.join(", ")) }
    );
    view! {
        <tr>
            <td><code title=p.id.clone()>{short(&p.id)}</code></td>
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

/// The buyer's key (kept in this browser), balance and ledger history.
#[component]
fn Account() -> impl IntoView {
    // Whether the browser half has looked for a key yet, and the key file.
    let ready = RwSignal::new(false);
    let key_file = RwSignal::new(None::<String>);
    Effect::new(move |_| {
        key_file.set(keys::load().map(|k| k.to_file_json()));
        ready.set(true);
    });
    view! {
        <Title text="Your account · Agora"/>
        <h1>"Your account"</h1>
        <Show
            when=move || ready.get()
            fallback=|| view! { <p class="note">"Your key lives in this browser: this page needs JavaScript to read it."</p> }
        >
            {move || match key_file.get().and_then(|f| Keypair::from_file_json(&f).ok()) {
                None => view! { <NoKey key_file/> }.into_any(),
                Some(key) => view! { <Wallet key key_file/> }.into_any(),
            }}
        </Show>
    }
}

#[component]
fn NoKey(key_file: RwSignal<Option<String>>) -> impl IntoView {
    let error = RwSignal::new(None::<String>);
    let import_text = RwSignal::new(String::new());
    let keep = move |key: Keypair| match keys::store(&key) {
        Ok(()) => key_file.set(Some(key.to_file_json())),
        Err(e) => error.set(Some(e)),
    };
    view! {
        <p>
            "Agora has no passwords: you are an ed25519 key, the same kind the "
            <code>"agora"</code>" command line uses. It stays in this browser and signs your requests."
        </p>
        <button id="create-key" on:click=move |_| keep(Keypair::generate())>"Create a key"</button>
        <h2>"Or import one"</h2>
        <label for="import">"Paste a key file (" <code>"~/.agora/key.json"</code> ")"</label>
        <textarea id="import" rows="4" prop:value=move || import_text.get() on:input=move |ev| import_text.set(event_target_value(&ev))></textarea>
        <button
            id="import-key"
            on:click=move |_| match Keypair::from_file_json(&import_text.get_untracked()) {
                Ok(key) => keep(key),
                Err(e) => error.set(Some(format!("not a key file: {e}"))),
            }
        >
            "Import"
        </button>
        {move || error.get().map(|e| view! { <p class="error" role="alert">{e}</p> })}
    }
}

#[component]
fn Wallet(key: Keypair, key_file: RwSignal<Option<String>>) -> impl IntoView {
    let id = key.id().to_string();
    let export = keys::export_href(&key);
    let balance = RwSignal::new(None::<Result<Balance, String>>);
    let history = RwSignal::new(None::<Result<Page<Transfer>, String>>);
    let page = RwSignal::new(0u32);
    let key_json = key.to_file_json();
    let refresh = move || {
        let key = Keypair::from_file_json(&key_json).expect("a stored key");
        let id = key.id().to_string();
        let page = page.get_untracked();
        spawn_local(async move {
            balance.set(Some(api::get_signed::<Balance>(&key, format!("/api/v1/accounts/{id}")).await));
            let path = format!("/api/v1/accounts/{id}/transfers{}", api::query(&[("page", &page.to_string()), ("per_page", "20")]));
            history.set(Some(api::get_signed::<Page<Transfer>>(&key, path).await));
        });
    };
    let refresh_now = refresh.clone();
    Effect::new(move |_| {
        page.track();
        refresh_now();
    });
    let me = id.clone();
    view! {
        <dl class="facts">
            <dt>"Your key"</dt>
            <dd><code id="key-id">{id.clone()}</code></dd>
        </dl>
        <p>
            <a href=export download="key.json">"Export for the CLI (key.json)"</a>
            " · "
            <button class="plain" on:click=move |_| {
                keys::forget();
                key_file.set(None);
            }>"Forget this key here"</button>
        </p>
        <h2>"Balance"</h2>
        {move || match balance.get() {
            None => view! { <p>"Reading your balance…"</p> }.into_any(),
            Some(Err(e)) => error_view(e),
            Some(Ok(b)) => view! {
                <section class="figures" aria-label="Balance">
                    <Figure label="credits available" value=b.available.to_string()/>
                    <Figure label="held in escrow" value=b.debits_pending.to_string()/>
                    <Figure label="spent" value=b.debits_posted.to_string()/>
                    <Figure label="received" value=b.credits_posted.to_string()/>
                </section>
            }
            .into_any(),
        }}
        <button on:click=move |_| refresh()>"Refresh"</button>
        <h2>"History"</h2>
        {move || match history.get() {
            None => view! { <p>"Reading your history…"</p> }.into_any(),
            Some(Err(e)) => error_view(e),
            Some(Ok(p)) if p.items.is_empty() => view! { <p>"No transfers yet. The operator mints credits: " <code>{format!("agora mint {me} 1000")}</code></p> }.into_any(),
            Some(Ok(p)) => {
                let me = me.clone();
                let pages = p.total.div_ceil(p.per_page.max(1) as u64).max(1);
                let at_end = move || page.get() as u64 + 1 >= pages;
                view! {
                    <table>
                        <thead><tr><th scope="col">"Transfer"</th><th scope="col">"Kind"</th><th scope="col">"Amount"</th><th scope="col">"State"</th></tr></thead>
                        <tbody>
                            {p.items.into_iter().map(|t| {
                                let sign = if t.debit == me { "−" } else { "+" };
                                view! {
                                    <tr>
                                        <td><code>{t.id}</code></td>
                                        <td>{t.kind}</td>
                                        <td>{format!("{sign}{}", t.amount)}</td>
                                        <td>{format!("{:?}", t.state).to_lowercase()}</td>
                                    </tr>
                                }
                            }).collect_view()}
                        </tbody>
                    </table>
                    <p class="pager">
                        <button disabled=move || page.get() == 0 on:click=move |_| page.update(|n| *n = n.saturating_sub(1))>"Newer"</button>
                        {format!(" page {} of {pages} ", p.page + 1)}
                        <button disabled=at_end on:click=move |_| page.update(|n| *n += 1)>"Older"</button>
                    </p>
                }
                .into_any()
            }
        }}
    }
}
