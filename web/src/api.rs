//! Reading the market's HTTP API with the shared wire types.
//!
//! On the server (`ssr`) a page's data comes from the market's own API over
//! loopback, through the same blocking client the CLI uses (run on a
//! blocking thread); in the browser (`hydrate`), from the same paths with
//! `fetch`.

use serde::de::DeserializeOwned;

/// The market's base URL as the server reaches it (`http://127.0.0.1:PORT`);
/// provided to every page as context.
#[derive(Clone, Debug, Default)]
pub struct MarketUrl(pub String);

/// GET `path` (with its query) from the market as JSON; the error is the
/// market's message, ready to show.
pub async fn get<T: DeserializeOwned + Send + 'static>(
    base: MarketUrl,
    path: String,
) -> Result<T, String> {
    #[cfg(feature = "ssr")]
    {
        let client = agora_wire::client::Client::new(&base.0, None);
        tokio::task::spawn_blocking(move || client.get::<T>(&path).map_err(|e| e.to_string()))
            .await
            .map_err(|e| format!("the request did not finish: {e}"))?
    }
    #[cfg(all(feature = "hydrate", not(feature = "ssr")))]
    {
        // Same origin: the market serves the pages.
        let (request, _) = browser_get(&format!("{}{path}", base.0));
        fetch_json(request.build()).await
    }
    #[cfg(not(any(feature = "ssr", feature = "hydrate")))]
    {
        let _ = (base, path);
        Err("built without `ssr` or `hydrate`: no way to reach the market".into())
    }
}

/// `?k=v&...` with the values percent-encoded (empty values left out).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs
        .iter()
        .copied()
        .filter(|(_, v)| !v.is_empty())
        .collect();
    if kept.is_empty() {
        return String::new();
    }
    format!(
        "?{}",
        serde_urlencoded::to_string(kept).expect("strings encode")
    )
}

/// GET `path` signed with `key`, as the CLI signs (browser only: a key
/// never leaves the browser, so the server never signs for anyone).
pub async fn get_signed<T: DeserializeOwned + Send + 'static>(
    key: &agora_wire::Keypair,
    path: String,
) -> Result<T, String> {
    #[cfg(feature = "hydrate")]
    {
        fetch_json(signed_get(key, &path)?.build()).await
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (key, path);
        Err("signed requests are made by the browser".into())
    }
}

/// A browser GET of `path`, and the path and query exactly as the browser
/// will send them (what a signature must cover): gloo-net rebuilds the
/// query with `URLSearchParams`, so the query goes through it here too.
#[cfg(feature = "hydrate")]
fn browser_get(path: &str) -> (gloo_net::http::RequestBuilder, String) {
    let Some((base, query)) = path.split_once('?') else {
        return (gloo_net::http::Request::get(path), path.to_string());
    };
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query).unwrap_or_default();
    let search = web_sys::UrlSearchParams::new().expect("URLSearchParams exists");
    for (k, v) in &pairs {
        search.append(k, v);
    }
    let sent = format!("{base}?{}", String::from(search.to_string()));
    (
        gloo_net::http::Request::get(base)
            .query(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
        sent,
    )
}

/// `request` with the signature headers over this page's origin (the
/// market it came from), `method`, `path` (as sent) and `body`.
#[cfg(feature = "hydrate")]
fn signed(
    key: &agora_wire::Keypair,
    method: &str,
    path: &str,
    body: &[u8],
    mut request: gloo_net::http::RequestBuilder,
) -> Result<gloo_net::http::RequestBuilder, String> {
    let origin = web_sys::window()
        .ok_or("no window")?
        .location()
        .origin()
        .map_err(|_| "no origin".to_string())?;
    for (name, value) in &agora_wire::auth::sign_request(
        key,
        &origin,
        method,
        path,
        body,
        js_sys::Date::now() as i64,
    ) {
        request = request.header(name, value);
    }
    Ok(request)
}

/// A signed browser GET of `path`.
#[cfg(feature = "hydrate")]
fn signed_get(
    key: &agora_wire::Keypair,
    path: &str,
) -> Result<gloo_net::http::RequestBuilder, String> {
    let (request, sent_path) = browser_get(path);
    signed(key, "GET", &sent_path, &[], request)
}

/// Send `request`; an answer other than 2xx becomes the market's error
/// message.
#[cfg(feature = "hydrate")]
async fn fetch(
    request: Result<gloo_net::http::Request, gloo_net::Error>,
) -> Result<gloo_net::http::Response, String> {
    let response = request
        .map_err(|e| e.to_string())?
        .send()
        .await
        .map_err(|e| format!("cannot reach the market: {e}"))?;
    if !response.ok() {
        let body: Result<agora_wire::api::ErrorBody, _> = response.json().await;
        return Err(body
            .map(|b| b.error.message)
            .unwrap_or_else(|_| format!("HTTP {}", response.status())));
    }
    Ok(response)
}

/// [`fetch`], then the answer as JSON (`Send` for Leptos resources: the
/// browser has one thread).
#[cfg(feature = "hydrate")]
async fn fetch_json<T: DeserializeOwned>(
    request: Result<gloo_net::http::Request, gloo_net::Error>,
) -> Result<T, String> {
    send_wrapper::SendWrapper::new(async move {
        fetch(request)
            .await?
            .json::<T>()
            .await
            .map_err(|e| format!("unexpected response: {e}"))
    })
    .await
}

/// POST `body` as JSON to `path`, signed with `key` (browser only).
pub async fn post_signed<B: serde::Serialize, T: DeserializeOwned + Send + 'static>(
    key: &agora_wire::Keypair,
    path: String,
    body: &B,
) -> Result<T, String> {
    #[cfg(feature = "hydrate")]
    {
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let post = gloo_net::http::Request::post(&path).header("content-type", "application/json");
        let request =
            signed(key, "POST", &path, &bytes, post)?.body(js_sys::Uint8Array::from(&bytes[..]));
        fetch_json(request).await
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (key, path, body);
        Err("signed requests are made by the browser".into())
    }
}

/// DELETE `path`, signed with `key` (browser only).
pub async fn delete_signed<T: DeserializeOwned + Send + 'static>(
    key: &agora_wire::Keypair,
    path: String,
) -> Result<T, String> {
    #[cfg(feature = "hydrate")]
    {
        let request = signed(
            key,
            "DELETE",
            &path,
            &[],
            gloo_net::http::Request::delete(&path),
        )?
        .build();
        fetch_json(request).await
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (key, path);
        Err("signed requests are made by the browser".into())
    }
}

/// GET the raw bytes at `path`, signed with `key` (browser only).
pub async fn get_signed_bytes(key: &agora_wire::Keypair, path: String) -> Result<Vec<u8>, String> {
    #[cfg(feature = "hydrate")]
    {
        let request = signed_get(key, &path)?.build();
        send_wrapper::SendWrapper::new(async move {
            fetch(request)
                .await?
                .binary()
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = (key, path);
        Err("signed requests are made by the browser".into())
    }
}
