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
/// The browser runtime: the worker that runs work units over WebGPU, and
/// the page-side module that owns it.
const WORKER_JS: &str = include_str!("../browser/agora-worker.js");
const CONTRIBUTE_JS: &str = include_str!("../browser/contribute.js");

/// The pages, reading the market API at `market` (its loopback URL). With
/// `pkg` (the output of `cargo xtask web`), pages load it and hydrate;
/// without, they are server-rendered only.
pub fn router(market: MarketUrl, pkg: Option<PathBuf>) -> axum::Router {
    let options = LeptosOptions::builder()
        .output_name("agora-web")
        .site_pkg_dir("pkg")
        .build();
    let routes = generate_route_list(App);
    let hydrate = pkg.is_some();
    let router = axum::Router::new()
        .route("/assets/agora.css", get(stylesheet))
        .route(
            "/assets/browser/agora-worker.js",
            get(|| script(WORKER_JS.to_string())),
        )
        .route(
            "/assets/browser/contribute.js",
            get(|| script(CONTRIBUTE_JS.to_string())),
        )
        .route(
            "/assets/browser/kernels.js",
            get(|| script(kernels_module())),
        )
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
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        STYLESHEET,
    )
}

async fn script(source: String) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        source,
    )
}

/// The standard kernels for the browser runtime, from `agora-kernels` (the
/// same sources and shapes the native wgpu backend uses).
fn kernels_module() -> String {
    use agora_kernels as k;
    let text = |s: &str| serde_json::to_string(s).expect("a string encodes");
    format!(
        "// Generated from agora-kernels by the market: the standard kernels' WGSL.\n\
         export const SAXPY_WGSL = {};\nexport const SAXPY_WORKGROUP = {};\n\
         export const MATMUL_WGSL = {};\nexport const MATMUL_TILE = {};\n\
         export const SUM_WGSL = {};\nexport const SUM_WORKGROUP = {};\nexport const SUM_MAX_GROUPS = {};\n",
        text(k::SAXPY_WGSL),
        k::SAXPY_WORKGROUP,
        text(k::MATMUL_WGSL),
        k::MATMUL_TILE,
        text(k::SUM_WGSL),
        k::SUM_WORKGROUP,
        k::SUM_MAX_GROUPS
    )
}
