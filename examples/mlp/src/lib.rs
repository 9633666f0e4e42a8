//! A small multilayer perceptron (features → hidden ReLU layer → classes,
//! softmax) trained and run on the GPU through `agora:compute`: the code the
//! `digits-train` and `digits-classify` jobs share. It is a library, not a
//! job.
//!
//! - [`dataset`]: the digits data set as a job's shared input.
//! - [`model`]: trained weights as JSON, and the CPU forward pass every
//!   `verify` re-runs (the reference the GPU's answers are checked against).
//! - [`train`]: the training procedure both sides agree on: initial weights
//!   from the seed, each epoch's order of the rows, and one epoch of SGD on
//!   the CPU (what `verify` replays to check a provider's epochs).
//! - [`net`]: the network's buffers, its WGSL, training by minibatch SGD and
//!   the GPU forward pass.

pub mod dataset;
pub mod model;
pub mod net;
pub mod train;

/// Most hidden units a job accepts: bounds every buffer and the verifier's
/// CPU work (`digits-train`'s `verify` replays three epochs on the CPU: at
/// 128 hidden units on the digits about 0.9 billion fuel, within the
/// quarter of a unit's default 5 billion the market gives a verify).
pub const MAX_HIDDEN: u32 = 128;

/// Most features (inputs) a network takes.
pub const MAX_FEATURES: u32 = 4096;

/// Most classes a network tells apart.
pub const MAX_CLASSES: u32 = 1024;

/// Most images one classify unit takes (and rows one forward pass runs).
pub const MAX_ROWS: u32 = 65_536;
