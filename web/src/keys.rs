//! The buyer's identity in the browser: an ed25519 key like the CLI's,
//! kept in the browser's local storage as the CLI's key file JSON (so
//! export and import are that file). It never leaves the browser: requests
//! are signed here.

use agora_wire::Keypair;

/// The local-storage entry holding the key file.
pub const STORAGE_KEY: &str = "agora.key";

#[cfg(feature = "hydrate")]
fn storage() -> Option<web_sys::Storage> {
    leptos::prelude::window().local_storage().ok().flatten()
}

/// The key kept in this browser, if any (always `None` on the server).
pub fn load() -> Option<Keypair> {
    #[cfg(feature = "hydrate")]
    {
        let text = storage()?.get_item(STORAGE_KEY).ok().flatten()?;
        Keypair::from_file_json(&text).ok()
    }
    #[cfg(not(feature = "hydrate"))]
    None
}

/// Keep `key` in this browser.
pub fn store(key: &Keypair) -> Result<(), String> {
    #[cfg(feature = "hydrate")]
    {
        let storage = storage().ok_or("this browser has no local storage")?;
        storage
            .set_item(STORAGE_KEY, &key.to_file_json())
            .map_err(|_| "the browser refused to store the key".to_string())
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = key;
        Err("keys live in the browser".into())
    }
}

/// Forget the key kept in this browser.
pub fn forget() {
    #[cfg(feature = "hydrate")]
    if let Some(storage) = storage() {
        let _ = storage.remove_item(STORAGE_KEY);
    }
}

/// A `data:` URL that downloads `key` as the CLI's `key.json` (browser
/// only, where the key is).
pub fn export_href(key: &Keypair) -> String {
    #[cfg(feature = "hydrate")]
    {
        let json = js_sys::encode_uri_component(&key.to_file_json());
        format!("data:application/json;charset=utf-8,{}", String::from(json))
    }
    #[cfg(not(feature = "hydrate"))]
    {
        let _ = key;
        String::new()
    }
}
