//! Browser bundles: which components browser contributors can run, and the
//! bundle the market makes for them at publish time.
//!
//! Design choices:
//! - A component is browser-capable when every import is the Agora contract
//!   (`agora:compute/*`) or a WASI interface a browser tab can honestly
//!   provide (environment, exit, stdio, clocks, random, and the filesystem
//!   types with no preopened directories). Sockets, HTTP or anything else
//!   keep a package native-only.
//! - The bundle is made by js-component-bindgen (the Rust crate behind
//!   `jco transpile`), so the market needs no Node: the signed component is
//!   split into its core wasm modules plus an ES module that instantiates
//!   them with the imports the browser runtime passes in
//!   (`web/browser/agora-worker.js`). The manifest names the component's
//!   digest and the generator; each file is stored content-addressed in
//!   `blobs`, so a bundle is traceable to the component it came from.
//! - GPU reads, shader compilation and dispatches (and the standard kernels,
//!   which dispatch) are asynchronous in WebGPU: those imports are generated
//!   as JSPI suspending functions, everything else stays synchronous.

use agora_wire::api::{BrowserBundle, BundleFile};

/// The tool that makes bundles, recorded in each manifest.
pub const GENERATOR: &str = "js-component-bindgen 2.11.0 (async instantiation, JSPI)";

/// The ES module every bundle exports `instantiate` from.
pub const ENTRY: &str = "job.js";

/// WASI interfaces (without version) a browser tab provides.
const BROWSER_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/wall-clock",
    "wasi:clocks/monotonic-clock",
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
    "wasi:filesystem/types",
    "wasi:filesystem/preopens",
];

/// Functions of the contract a browser tab does not provide: a tab keeps
/// no named outputs (its result carries the main output alone).
pub const NOT_IN_TABS: &[&str] = &[ADDS_OUTPUTS, "agora:compute/data#named-output"];
/// The import through which a component adds named outputs: only its
/// results may carry them.
pub const ADDS_OUTPUTS: &str = "agora:compute/data#output";

/// Imports that are asynchronous in the browser runtime.
const SUSPENDING: &[&str] = &[
    "agora:compute/gpu#[method]buffer.read",
    "agora:compute/gpu#[method]buffer.to-blob",
    "agora:compute/gpu#[static]shader.wgsl",
    "agora:compute/gpu#dispatch",
    "agora:compute/kernels#saxpy",
    "agora:compute/kernels#matmul",
    "agora:compute/kernels#sum",
];

/// Why a component with these imports cannot run in a browser, if it cannot.
pub fn not_browser_capable(imports: &[String]) -> Option<String> {
    let refused: Vec<&str> = imports
        .iter()
        .map(String::as_str)
        .filter(|import| {
            let unversioned = import.split('@').next().unwrap_or(import);
            !(unversioned.starts_with("agora:compute/") || BROWSER_WASI.contains(&unversioned))
        })
        .collect();
    (!refused.is_empty())
        .then(|| format!("imports a browser cannot provide: {}", refused.join(", ")))
}

/// A bundle and its files' bytes.
pub struct Built {
    pub manifest: BrowserBundle,
    pub files: Vec<Vec<u8>>,
}

/// Make the browser bundle of a component whose imports allow it.
pub fn build(
    component: &[u8],
    component_digest: &str,
    inspection: &crate::registry::Inspection,
) -> Result<Built, String> {
    let imports = &inspection.imports;
    if let Some(why) = not_browser_capable(imports) {
        return Err(why);
    }
    if !inspection.not_in_tabs.is_empty() {
        return Err(format!(
            "imports what a browser tab does not provide: {}",
            inspection.not_in_tabs.join(", ")
        ));
    }
    // The versioned spellings too: the generator matches either.
    let suspending: Vec<String> = imports
        .iter()
        .flat_map(|import| {
            let unversioned = import.split('@').next().unwrap_or(import).to_string();
            SUSPENDING
                .iter()
                .filter(move |s| s.split('#').next() == Some(unversioned.as_str()))
                .flat_map(move |s| {
                    let (_, function) = s.split_once('#').expect("interface#function");
                    [s.to_string(), format!("{import}#{function}")]
                })
        })
        .collect();
    let opts = js_component_bindgen::TranspileOpts {
        name: "job".into(),
        no_typescript: true,
        instantiation_mode: Some(js_component_bindgen::InstantiationMode::Async),
        nodejs_compat_disabled: true,
        base64_cutoff: 0,
        async_mode: Some(
            js_component_bindgen::AsyncMode::JavaScriptPromiseIntegration {
                imports: suspending.clone(),
                exports: vec!["run".into(), "verify".into()],
            },
        ),
        ..Default::default()
    };
    let transpiled = js_component_bindgen::transpile(component, opts)
        .map_err(|e| format!("transpiling: {e:#}"))?;
    let mut files = Vec::new();
    let mut manifest_files = Vec::new();
    for (name, bytes) in transpiled.files {
        manifest_files.push(BundleFile {
            name,
            digest: agora_wire::digest_hex(&bytes),
            size: bytes.len() as u64,
        });
        files.push(bytes);
    }
    if !manifest_files.iter().any(|f| f.name == ENTRY) {
        return Err(format!("the generator made no {ENTRY}"));
    }
    let manifest = BrowserBundle {
        component_digest: component_digest.to_string(),
        entry: ENTRY.into(),
        files: manifest_files,
        generator: GENERATOR.into(),
        suspending_imports: suspending,
    };
    Ok(Built { manifest, files })
}

/// The content type a bundle file is served with.
pub fn content_type(file: &str) -> &'static str {
    if file.ends_with(".js") {
        "text/javascript; charset=utf-8"
    } else if file.ends_with(".wasm") {
        "application/wasm"
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_contract_and_browser_wasi_are_browser_capable() {
        let ok = [
            "agora:compute/gpu@0.1.0",
            "wasi:cli/environment@0.2.6",
            "wasi:io/streams@0.2.6",
        ]
        .map(String::from);
        assert_eq!(not_browser_capable(&ok), None);
        let sockets = ["agora:compute/gpu@0.1.0", "wasi:sockets/tcp@0.2.6"].map(String::from);
        assert!(
            not_browser_capable(&sockets)
                .unwrap()
                .contains("wasi:sockets/tcp")
        );
    }
}
