//! The one place the guest's bindings are generated from `wit/`.
//!
//! `job` holds the imports and the `run` export; `verified_job` reuses the
//! same import types and adds `verify`.

#[allow(missing_docs, clippy::all)]
pub mod job {
    wit_bindgen::generate!({
        path: "../wit",
        world: "job",
        pub_export_macro: true,
        export_macro_name: "export_job_world",
        default_bindings_module: "agora_guest::bindings::job",
    });
}

#[allow(missing_docs, clippy::all)]
pub mod verified_job {
    wit_bindgen::generate!({
        path: "../wit",
        world: "verified-job",
        pub_export_macro: true,
        export_macro_name: "export_verified_job_world",
        default_bindings_module: "agora_guest::bindings::verified_job",
        with: {
            "agora:compute/data@0.1.2": crate::bindings::job::agora::compute::data,
            "agora:compute/gpu@0.1.2": crate::bindings::job::agora::compute::gpu,
            "agora:compute/kernels@0.1.2": crate::bindings::job::agora::compute::kernels,
            "agora:compute/progress@0.1.2": crate::bindings::job::agora::compute::progress,
        },
    });
}
