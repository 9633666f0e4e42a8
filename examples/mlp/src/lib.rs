//! A small multilayer perceptron (features → hidden ReLU layer → classes,
//! softmax) trained and run on the GPU through `agora:compute`: the code the
//! `digits-train` and `digits-classify` jobs share. It is a library, not a
//! job.
//!
//! - [`dataset`]: the digits data set as a job's shared input.
//! - [`model`]: trained weights as JSON, and the CPU forward pass every
//!   `verify` re-runs (the reference the GPU's answers are checked against).
//! - [`net`]: the network's buffers, its WGSL, training by minibatch SGD and
//!   the GPU forward pass.

pub mod dataset;
pub mod model;
pub mod net;

/// Most hidden units a job accepts: bounds every buffer and the verifier's
/// CPU work (a 1,024-wide layer over the held-out set is a few million
/// multiply-adds).
pub const MAX_HIDDEN: u32 = 1024;

/// Most images one classify unit takes (and rows one forward pass runs).
pub const MAX_ROWS: u32 = 65_536;
