//! # agora-guest: write Agora jobs in Rust
//!
//! A job is a WebAssembly component that takes one work unit's input and
//! returns its output. Its GPU work goes through the host (wgpu or CUDA) via
//! the `agora:compute` WIT contract; this crate wraps that contract in safe,
//! typed Rust. A complete job:
//!
//! ```ignore
//! use agora_guest::prelude::*;
//!
//! /// Input: a (f32), then x and y (n f32 each). Output: a * x + y.
//! struct Saxpy;
//!
//! impl Job for Saxpy {
//!     fn run(input: Input) -> Result<Output> {
//!         let n = (input.len().saturating_sub(4) / 8) as u64;
//!         let a = f32::from_le_bytes(input.read(0, 4)?.try_into().unwrap());
//!         let x = Buffer::from_input(&input, 4, n * 4, Usage::STORAGE)?;
//!         let y = Buffer::from_input(&input, 4 + n * 4, n * 4, Usage::STORAGE)?;
//!         kernels::saxpy(a, &x, &y)?;
//!         info!("saxpy over {n} elements done");
//!         Output::from_buffer(&y)
//!     }
//! }
//!
//! agora_guest::export_job!(Saxpy);
//! ```
//!
//! Build it with `cargo component build --release` or
//! `cargo build --release --target wasm32-wasip2`; run it with
//! `agora run target/wasm32-wasip2/release/saxpy.wasm --input in.bin`.
//!
//! Design choices:
//! - Input and output live on the host ([`Input`], [`Output`]): large data
//!   goes between them and GPU buffers without crossing the guest's memory.
//!   [`Input::bytes`] copies into the guest when a job wants that.
//! - Every fallible call returns [`Error`], which keeps the host's
//!   `gpu-error` variant so a job can match on, say, a quota.
//! - Bindings are generated in exactly one place, [`bindings`].

pub mod bindings;
mod errors;
mod gpu;
mod io;
pub mod kernels;
pub mod log;

pub use errors::{Error, Result};
pub use gpu::{AdapterInfo, Buffer, Element, Shader, Usage, adapter};
pub use io::{Input, Output};

/// What a job implements.
pub trait Job {
    /// Run one work unit.
    fn run(input: Input) -> Result<Output>;
}

/// A job that can check another provider's output for the same input
/// cheaply (export it with `export_job!(T, verify)`).
pub trait Verify: Job {
    fn verify(input: Input, output: Input) -> bool;
}

/// Everything a job usually needs.
pub mod prelude {
    pub use crate::{
        Buffer, Element, Error, Input, Job, Output, Result, Shader, Usage, Verify, adapter,
        debug, error, info, kernels, log::report_progress, warn,
    };
}

/// Export a type implementing [`Job`] (and, with `, verify`, [`Verify`]) as
/// the component's `run` (and `verify`).
#[macro_export]
macro_rules! export_job {
    ($ty:ident) => {
        impl $crate::bindings::job::Guest for $ty {
            fn run(
                input: $crate::bindings::job::agora::compute::data::Blob,
            ) -> ::core::result::Result<$crate::bindings::job::agora::compute::data::Blob, ::std::string::String>
            {
                $crate::__private::run::<$ty>(input)
            }
        }
        $crate::bindings::job::export_job_world!($ty with_types_in $crate::bindings::job);
    };
    ($ty:ident, verify) => {
        impl $crate::bindings::verified_job::Guest for $ty {
            fn run(
                input: $crate::bindings::job::agora::compute::data::Blob,
            ) -> ::core::result::Result<$crate::bindings::job::agora::compute::data::Blob, ::std::string::String>
            {
                $crate::__private::run::<$ty>(input)
            }
            fn verify(
                input: $crate::bindings::job::agora::compute::data::Blob,
                output: $crate::bindings::job::agora::compute::data::Blob,
            ) -> bool {
                $crate::__private::verify::<$ty>(input, output)
            }
        }
        $crate::bindings::verified_job::export_verified_job_world!($ty with_types_in $crate::bindings::verified_job);
    };
}

#[doc(hidden)]
pub mod __private {
    use crate::bindings::job::agora::compute::data::Blob;

    pub fn run<J: crate::Job>(input: Blob) -> Result<Blob, String> {
        J::run(crate::Input::from_blob(input))
            .and_then(crate::Output::into_blob)
            .map_err(|e| e.to_string())
    }

    pub fn verify<J: crate::Verify>(input: Blob, output: Blob) -> bool {
        J::verify(crate::Input::from_blob(input), crate::Input::from_blob(output))
    }
}
