//! The web market as an axum router, merged into the market's by
//! `agora market serve`.

use crate::api::MarketUrl;
use crate::app::{App, shell};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list};

const STYLESHEET: &str = include_str!("../style/agora.css");

/// The pages, reading the market API at `market` (its loopback URL).
pub fn router(market: MarketUrl) -> axum::Router {
    let options = LeptosOptions::builder().output_name("agora-web").build();
    let routes = generate_route_list(App);
    axum::Router::new()
        .route("/assets/agora.css", get(stylesheet))
        .leptos_routes_with_context(&options, routes, move || provide_context(market.clone()), {
            let options = options.clone();
            move || shell(options.clone())
        })
        .with_state(options)
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], STYLESHEET)
}
