//! The web market as an axum router, merged into the market's by
//! `agora market serve`.

use crate::api::MarketUrl;
use crate::app::{App, shell};
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use leptos::prelude::*;
use leptos_axum::{LeptosRoutes, generate_route_list};
use std::path::PathBuf;
use tower_http::services::ServeDir;

const STYLESHEET: &str = include_str!("../style/agora.css");

/// The pages, reading the market API at `market` (its loopback URL). With
/// `pkg` (the output of `cargo xtask web`), pages load it and hydrate;
/// without, they are server-rendered only.
pub fn router(market: MarketUrl, pkg: Option<PathBuf>) -> axum::Router {
    let options = LeptosOptions::builder().output_name("agora-web").site_pkg_dir("pkg").build();
    let routes = generate_route_list(App);
    let hydrate = pkg.is_some();
    let router = axum::Router::new()
        .route("/assets/agora.css", get(stylesheet))
        .leptos_routes_with_context(&options, routes, move || provide_context(market.clone()), {
            let options = options.clone();
            move || shell(options.clone(), hydrate)
        })
        .with_state(options);
    match pkg {
        Some(dir) => router.nest_service("/pkg", ServeDir::new(dir)),
        None => router,
    }
}

async fn stylesheet() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=300")], STYLESHEET)
}
