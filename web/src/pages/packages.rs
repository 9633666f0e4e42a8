//! Packages: search and sort, and one package's versions, digests,
//! publisher key, WIT world and how to run it.

use super::*;
use agora_wire::api::{Category, PackageInfo, PackageSummary, Page};

#[component]
pub fn Packages() -> impl IntoView {
    let base = market();
    let query = use_query_map();
    // (text, sort, category): sorted by downloads unless asked otherwise.
    let search = move || {
        let q = query.read();
        let sort = q
            .get("sort")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "downloads".into());
        (
            q.get("q").unwrap_or_default(),
            sort,
            q.get("category").unwrap_or_default(),
        )
    };
    let categories = Resource::new(|| (), {
        let base = base.clone();
        move |_| api::get::<Vec<Category>>(base.clone(), "/api/v1/categories".into())
    });
    let packages = Resource::new(search, move |(q, sort, category)| {
        let base = base.clone();
        let path = format!(
            "/api/v1/packages{}",
            api::query(&[("q", &q), ("sort", &sort), ("category", &category)])
        );
        async move { api::get::<Page<PackageSummary>>(base, path).await }
    });
    let category_link = move |name: &str| {
        format!(
            "/packages{}",
            api::query(&[
                ("q", &search().0),
                ("sort", &search().1),
                ("category", name)
            ])
        )
    };
    view! {
        <Title text="Packages · Agora"/>
        <h1>"Packages"</h1>
        <form class="search" method="get" action="/packages" role="search">
            <label for="q">"Search by name, description or tag"</label>
            <input id="q" name="q" type="search" value=move || search().0/>
            <label for="sort">"Sort by"</label>
            <select id="sort" name="sort">
                <option value="downloads" selected=move || search().1 == "downloads">"downloads"</option>
                <option value="recent" selected=move || search().1 == "recent">"recently updated"</option>
                <option value="name" selected=move || search().1 == "name">"name"</option>
            </select>
            <input type="hidden" name="category" value=move || search().2/>
            <button type="submit">"Search"</button>
        </form>
        <Suspense fallback=|| ()>
            {move || Suspend::new(async move {
                categories.await.ok().map(|list| view! {
                    <nav class="categories" aria-label="Categories">
                        <a href=category_link("") aria-current=move || search().2.is_empty().then_some("page")>"all"</a>
                        {list.into_iter().map(|c| {
                            let current = c.name.clone();
                            view! {
                                <a href=category_link(&c.name) aria-current=move || (search().2 == current).then_some("page")>
                                    {format!("{} ({})", c.name, c.packages)}
                                </a>
                            }
                        }).collect_view()}
                    </nav>
                })
            })}
        </Suspense>
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
pub fn PackagePage() -> impl IntoView {
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
    let latest = info
        .versions
        .iter()
        .find(|v| Some(&v.version) == s.latest.as_ref())
        .cloned();
    let run = format!(
        "agora submit {} --input unit.bin --max-price 500 --wait -o out/",
        s.name
    );
    let fetch = format!(
        "agora fetch {}@{} -o {}.wasm",
        s.name,
        s.latest.clone().unwrap_or_default(),
        s.name
    );
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
        <p><a class="button" href=format!("/submit?package={}", s.name)>"Submit a job with this package"</a></p>
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
