//! MobileNetV3 Studio's engine: the network, its weight files, preprocessing and classification.
//! The binary (`src/main.rs`) is a thin command line over this library.

pub mod app;
pub mod arch;
pub mod bench;
pub mod bundled;
pub mod chart;
pub mod cifar_python;
pub mod classify;
pub mod data;
pub mod device;
pub mod download;
pub mod engine;
pub mod fsutil;
pub mod inference;
pub mod kernels;
pub mod labels;
pub mod layers;
pub mod model;
pub mod ops;
pub mod optim;
pub mod params;
pub mod paths;
pub(crate) mod pickle;
pub mod preprocess;
pub mod pth;
pub mod train;
pub mod weights;
pub mod zoo;

pub use arch::{ArchSpec, ModelConfig, Variant};
pub use layers::Mode;
pub use model::MobileNetV3;
