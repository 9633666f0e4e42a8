//! # agora-web: the web market
//!
//! Leptos pages that the market's axum router renders on the server
//! ([`server::router`], feature `ssr`). They read the market through its
//! public HTTP API and the shared wire types ([`api`]), exactly as the CLI
//! does. Pages: home (live market figures), packages (search, sort),
//! package (versions, digests, publisher, WIT world, how to run it),
//! providers (machines online, reputation, price).
//!
//! State of the work (issue 5): server-rendered read pages. The hydrated
//! build (`hydrate`), browser keys, submit, job, wallet and provider
//! dashboard pages come next.

pub mod api;
pub mod app;
pub mod keys;
pub mod pages;
#[cfg(feature = "ssr")]
pub mod server;
