//! The one place the host's bindings are generated from `wit/`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "job",
    with: {
        "agora:compute/data.blob": crate::state::BlobData,
        "agora:compute/gpu.buffer": crate::state::BufferHandle,
        "agora:compute/gpu.shader": crate::state::ShaderHandle,
    },
});
