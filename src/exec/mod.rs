//! The three ways the network runs, over the same [`crate::model`] description and the same
//! [`crate::kernels`]:
//!
//! - [`graph`]: candle modules with autograd. Runs on every device (CUDA included); the parity tests run it
//!   against PyTorch. Slow on the CPU: each op is a separate pass over memory.
//! - [`train_step`]: the hand-written CPU training step (forward, loss, backward, in per-image phases that keep
//!   a block's activations in cache), 3-4x PyTorch's speed. Same numbers as the graph (tests/parity.rs).
//! - [`inference`]: the CPU inference plan: BatchNorm folded into the convolutions, activations fused.
//!
//! Why three: the graph is the portable, obviously-correct reference; the other two are what make the CPU fast.

pub mod graph;
pub mod inference;
pub mod train_step;
