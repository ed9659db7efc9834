//! MobileNetV3 Studio's engine: the network, its weight files, data, training and classification.
//! The binary (`src/main.rs`) is a thin command line over this library and the app.
//!
//! - [`model`]: what the network is (architecture tables, state_dict names, parameters, weight files).
//! - [`exec`]: the three ways it runs (candle graph, CPU training step, CPU inference plan).
//! - [`kernels`]: the CPU kernels those share (depthwise convolution, BatchNorm, 1x1 products).
//! - [`data`]: CIFAR-100 readers, download, image decoding and preprocessing.
//! - [`train`]: the training loop, its config, history, checkpoints, evaluation and SGD.
//! - [`classify`], [`bench`], [`chart`], [`zoo`]: classification, timing, charts, the trained models.
//! - [`export`], [`explain`]: ONNX export; Grad-CAM overlays.
//! - [`app`], `cli` (in the binary): the two views.

// Every unsafe block says why it is sound, and every unsafe fn what its caller must ensure.
#![warn(clippy::undocumented_unsafe_blocks, clippy::missing_safety_doc)]

#[cfg(feature = "gui")]
pub mod app;
pub mod bench;
pub mod bundled;
pub mod chart;
pub mod classify;
pub mod data;
pub mod device;
pub mod exec;
pub mod explain;
pub mod export;
pub mod fsutil;
pub(crate) mod kernels;
pub mod model;
pub mod paths;
pub mod train;
pub mod zoo;

pub use exec::graph::layers::Mode;
pub use exec::graph::MobileNetV3;
pub use model::arch::{ArchSpec, ModelConfig, Variant};
