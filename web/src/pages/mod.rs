//! The pages, one module each, and what they share.

mod account;
mod contribute;
mod home;
mod job;
mod packages;
mod provider;
mod providers;
mod submit;

pub use account::Account;
pub use contribute::Contribute;
pub use home::Home;
pub use job::JobPage;
pub use packages::{PackagePage, Packages};
pub use provider::ProviderPage;
pub use providers::Providers;
pub use submit::Submit;

pub(crate) use crate::api::{self, MarketUrl};
pub(crate) use leptos::prelude::*;
pub(crate) use leptos_meta::Title;
pub(crate) use leptos_router::hooks::{use_params_map, use_query_map};

pub(crate) fn market() -> MarketUrl {
    use_context::<MarketUrl>().unwrap_or_default()
}

/// An API error, shown where the data would have been.
pub(crate) fn error_view(message: String) -> AnyView {
    view! { <p class="error" role="alert">{message}</p> }.into_any()
}

/// Whether the reader says yes to `question` (the browser's confirm
/// dialog); no where there is no window.
pub(crate) fn confirmed(question: &str) -> bool {
    web_sys::window()
        .and_then(|w| w.confirm_with_message(question).ok())
        .unwrap_or(false)
}

pub(crate) fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

/// One big number with its label.
#[component]
pub(crate) fn Figure(label: &'static str, value: String) -> impl IntoView {
    view! {
        <div class="figure">
            <span class="value">{value}</span>
            <span class="label">{label}</span>
        </div>
    }
}

#[component]
pub fn NotFound() -> impl IntoView {
    view! {
        <Title text="Not found · Agora"/>
        <h1>"Not found"</h1>
        <p>"There is no page here. " <a href="/packages">"Browse packages"</a></p>
    }
}
