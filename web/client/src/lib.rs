//! Hydrates the server-rendered page: `hydrate()` is what Leptos'
//! hydration script calls once the wasm is loaded.

use wasm_bindgen::prelude::wasm_bindgen;

#[wasm_bindgen]
pub fn hydrate() {
    console_error_panic_hook::set_once();
    leptos::mount::hydrate_body(agora_web::app::App);
}
