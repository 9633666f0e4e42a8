//! The page shell and the router (the pages are in [`crate::pages`]).
//!
//! Every route renders in `SsrMode::Async`: the server waits for the page's
//! data and sends whole HTML, so reading works without JavaScript.

use crate::pages::*;
use leptos::prelude::*;
use leptos_meta::{MetaTags, provide_meta_context};
use leptos_router::SsrMode;
use leptos_router::components::{A, Route, Router, Routes};
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
                    <A href="/submit">"Submit"</A>
                    <A href="/providers">"Providers"</A>
                    <A href="/contribute">"Contribute"</A>
                    <A href="/account">"Account"</A>
                </nav>
            </header>
            <main>
                <Routes fallback=|| view! { <NotFound/> }>
                    <Route path=path!("") view=Home ssr=SsrMode::Async/>
                    <Route path=path!("/packages") view=Packages ssr=SsrMode::Async/>
                    <Route path=path!("/packages/:name") view=PackagePage ssr=SsrMode::Async/>
                    <Route path=path!("/providers") view=Providers ssr=SsrMode::Async/>
                    <Route path=path!("/providers/:id") view=ProviderPage ssr=SsrMode::Async/>
                    <Route path=path!("/account") view=Account ssr=SsrMode::Async/>
                    <Route path=path!("/contribute") view=Contribute ssr=SsrMode::Async/>
                    <Route path=path!("/submit") view=Submit ssr=SsrMode::Async/>
                    <Route path=path!("/jobs/:id") view=JobPage ssr=SsrMode::Async/>
                </Routes>
            </main>
            <footer>"Agora: signed WebAssembly jobs on GPUs, paid per verified result."</footer>
        </Router>
    }
}
