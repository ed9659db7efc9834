//! What a MobileNetV3 is, independent of how it runs: the architecture tables ([`arch`]: blocks, channel
//! counts, parameter and MAC counts), the PyTorch state_dict names ([`names`]), the parameter store
//! ([`params`]) and weight files ([`weights`], with PyTorch checkpoints read by [`pth`]).

pub mod arch;
pub mod names;
pub mod params;
pub mod pth;
pub mod weights;
