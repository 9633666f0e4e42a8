//! The buyer's account: a key kept in this browser, its balance and
//! ledger history.

use super::*;
use crate::keys;
use agora_wire::Keypair;
use agora_wire::api::{Balance, Page, Transfer};
use leptos::task::spawn_local;

/// The buyer's key (kept in this browser), balance and ledger history.
#[component]
pub fn Account() -> impl IntoView {
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
            balance.set(Some(
                api::get_signed::<Balance>(&key, format!("/api/v1/accounts/{id}")).await,
            ));
            let path = format!(
                "/api/v1/accounts/{id}/transfers{}",
                api::query(&[("page", &page.to_string()), ("per_page", "20")])
            );
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
                // Nothing can bring a forgotten key back: ask first.
                let question = "Forget this key in this browser? Without an exported key.json, its credits and jobs are out of reach for good.";
                if confirmed(question) {
                    keys::forget();
                    key_file.set(None);
                }
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
