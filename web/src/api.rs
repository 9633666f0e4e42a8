//! Reading the market's HTTP API with the shared wire types.
//!
//! On the server (`ssr`) a page's data comes from the market's own API over
//! loopback, through the same blocking client the CLI uses (run on a
//! blocking thread). The browser build will fetch the same paths.

use serde::de::DeserializeOwned;

/// The market's base URL as the server reaches it (`http://127.0.0.1:PORT`);
/// provided to every page as context.
#[derive(Clone, Debug, Default)]
pub struct MarketUrl(pub String);

/// GET `path` (with its query) from the market as JSON; the error is the
/// market's message, ready to show.
pub async fn get<T: DeserializeOwned + Send + 'static>(base: MarketUrl, path: String) -> Result<T, String> {
    #[cfg(feature = "ssr")]
    {
        let client = agora_wire::client::Client::new(&base.0, None);
        tokio::task::spawn_blocking(move || client.get::<T>(&path).map_err(|e| e.to_string()))
            .await
            .map_err(|e| format!("the request did not finish: {e}"))?
    }
    #[cfg(not(feature = "ssr"))]
    {
        let _ = (base, path);
        Err("this page needs the server-rendered build".into())
    }
}

/// `?k=v&...` with the values percent-encoded (empty values left out).
pub fn query(pairs: &[(&str, &str)]) -> String {
    let kept: Vec<(&str, &str)> = pairs.iter().copied().filter(|(_, v)| !v.is_empty()).collect();
    if kept.is_empty() {
        return String::new();
    }
    format!("?{}", serde_urlencoded::to_string(kept).expect("strings encode"))
}
