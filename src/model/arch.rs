//! The MobileNetV3 architecture as data: the block tables of the paper, the width multiplier, and everything
//! derived from them (channel counts, the state_dict tensor names and shapes, parameter and MAC counts).
//!
//! Nothing here touches tensors; the model, the weight loader and `info` all read the same [`ArchSpec`].

use super::names;
use serde::Serialize;
use std::fmt;

/// BatchNorm's epsilon and running-statistics momentum, as PyTorch's defaults (the reference keeps them).
pub(crate) const BN_EPS: f64 = 1e-5;
pub(crate) const BN_MOMENTUM: f64 = 0.1;

/// The two networks of "Searching for MobileNetV3" (Howard et al. 2019).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// MobileNetV3-Small.
    #[value(alias = "s")]
    Small,
    /// MobileNetV3-Large.
    #[value(alias = "l")]
    Large,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Small => "small",
            Variant::Large => "large",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        match s.trim().to_ascii_lowercase().as_str() {
            "small" | "s" => Some(Variant::Small),
            "large" | "l" => Some(Variant::Large),
            _ => None,
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Nonlinearity of a bottleneck: ReLU ("RE") or hard-swish ("HS").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Activation {
    Relu,
    HardSwish,
}

/// Where a row of the table takes its stride from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stride {
    /// The CIFAR-adjustable initial stride `si` (1 for 32x32 input, 2 for the paper's layout).
    Initial,
    Fixed(usize),
}

/// One row of the paper's table, before the width multiplier.
struct Row(usize, usize, usize, usize, bool, Activation, Stride);

use Activation::{HardSwish as HS, Relu as RE};
use Stride::{Fixed, Initial as SI};

#[rustfmt::skip]
const LARGE_ROWS: [Row; 15] = [
    Row(16, 16, 3, 16, false, RE, Fixed(1)), Row(16, 24, 3, 64, false, RE, SI), Row(24, 24, 3, 72, false, RE, Fixed(1)),
    Row(24, 40, 5, 72, true, RE, SI), Row(40, 40, 5, 120, true, RE, Fixed(1)), Row(40, 40, 5, 120, true, RE, Fixed(1)),
    Row(40, 80, 3, 240, false, HS, Fixed(2)), Row(80, 80, 3, 200, false, HS, Fixed(1)), Row(80, 80, 3, 184, false, HS, Fixed(1)),
    Row(80, 80, 3, 184, false, HS, Fixed(1)), Row(80, 112, 3, 480, true, HS, Fixed(1)), Row(112, 112, 3, 672, true, HS, Fixed(1)),
    Row(112, 160, 5, 672, true, HS, Fixed(2)), Row(160, 160, 5, 960, true, HS, Fixed(1)), Row(160, 160, 5, 960, true, HS, Fixed(1)),
];

#[rustfmt::skip]
const SMALL_ROWS: [Row; 11] = [
    Row(16, 16, 3, 16, true, RE, SI), Row(16, 24, 3, 72, false, RE, SI), Row(24, 24, 3, 88, false, RE, Fixed(1)),
    Row(24, 40, 5, 96, true, HS, Fixed(2)), Row(40, 40, 5, 240, true, HS, Fixed(1)), Row(40, 40, 5, 240, true, HS, Fixed(1)),
    Row(40, 48, 5, 120, true, HS, Fixed(1)), Row(48, 48, 5, 144, true, HS, Fixed(1)), Row(48, 96, 5, 288, true, HS, Fixed(2)),
    Row(96, 96, 5, 576, true, HS, Fixed(1)), Row(96, 96, 5, 576, true, HS, Fixed(1)),
];

/// CIFAR-100 has 100 fine classes.
pub(crate) const NUM_CLASSES: usize = 100;
/// Input side the models are trained on.
pub const INPUT_SIZE: usize = 32;

/// A [`ModelConfig`] outside the ranges the architecture supports ([`ModelConfig::validate`]).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ArchError {
    #[error("width multiplier must be in (0, 2], got {0}")]
    Width(f64),
    /// Some layer (or squeeze-excite block) would have no channels at this width; `min` is the least that works.
    #[error(
        "width multiplier {width} is too narrow for MobileNetV3-{variant}: some layers (or squeeze-excite blocks) would have no channels; use at least {min}"
    )]
    TooNarrow { width: f64, variant: Variant, min: f64 },
    #[error("initial stride must be 1 or 2, got {0}")]
    InitialStride(usize),
    #[error("the classifier needs at least one class")]
    NoClasses,
    #[error("dropout must be in [0, 1), got {0}")]
    Dropout(f32),
}

/// What a user chooses: which network, how wide, and the initial stride.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ModelConfig {
    pub variant: Variant,
    /// Width multiplier; every channel count c of the table becomes `int(c * width)`.
    pub width: f64,
    /// Stride of the stem and the early blocks marked `si`: 1 for CIFAR, 2 for the paper's ImageNet layout.
    pub initial_stride: usize,
    pub num_classes: usize,
    /// Dropout before the classifier (train mode only).
    pub dropout: f32,
}

impl ModelConfig {
    pub fn new(variant: Variant, width: f64) -> Self {
        ModelConfig { variant, width, initial_stride: 1, num_classes: NUM_CLASSES, dropout: 0.2 }
    }

    pub fn with_initial_stride(mut self, si: usize) -> Self {
        self.initial_stride = si;
        self
    }

    /// `small_0.25`, `large_1.0`: the name used for files, benchmark rows and the CLI.
    pub fn name(&self) -> String {
        format!("{}_{}", self.variant, format_width(self.width))
    }

    /// Checks the ranges the architecture supports.
    pub fn validate(&self) -> Result<(), ArchError> {
        if !(self.width > 0.0 && self.width <= 2.0) {
            return Err(ArchError::Width(self.width));
        }
        let spec = ArchSpec::new(self);
        let empty_se = spec.blocks.iter().any(|b| b.squeeze_excite && b.se_hidden == 0);
        let empty = spec.stem_out == 0 || spec.blocks.iter().any(|b| b.in_c == 0 || b.out_c == 0 || b.expanded == 0);
        if empty || empty_se {
            let min = match self.variant {
                Variant::Small => 0.25,
                Variant::Large => 0.07,
            };
            return Err(ArchError::TooNarrow { width: self.width, variant: self.variant, min });
        }
        if !matches!(self.initial_stride, 1 | 2) {
            return Err(ArchError::InitialStride(self.initial_stride));
        }
        if self.num_classes == 0 {
            return Err(ArchError::NoClasses);
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(ArchError::Dropout(self.dropout));
        }
        Ok(())
    }

    pub fn spec(&self) -> ArchSpec {
        ArchSpec::new(self)
    }
}

/// Formats a width the way file names and the reference do: `0.25`, `0.5`, `1.0`.
pub(crate) fn format_width(w: f64) -> String {
    let s = format!("{w}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

/// Parses `small_0.25` / `large_1.0` / `large_1`.
pub fn parse_variant_name(s: &str) -> Option<ModelConfig> {
    let (v, w) = s.split_once('_')?;
    let variant = Variant::parse(v)?;
    let width: f64 = w.parse().ok()?;
    let cfg = ModelConfig::new(variant, width);
    cfg.validate().ok()?;
    Some(cfg)
}

/// `int(c * width)`: the width multiplier truncates, as the reference does (no rounding to multiples of 8).
pub fn scale(c: usize, width: f64) -> usize {
    (c as f64 * width) as usize
}

/// One bottleneck after the width multiplier: 1x1 expand, kxk depthwise, optional squeeze-excite, 1x1 project.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BottleneckSpec {
    pub in_c: usize,
    pub out_c: usize,
    pub kernel: usize,
    pub expanded: usize,
    pub squeeze_excite: bool,
    /// Hidden width of the squeeze-excite block (`expanded / 4`); it exists even where it is not used.
    pub se_hidden: usize,
    pub act: Activation,
    pub stride: usize,
}

impl BottleneckSpec {
    pub(crate) fn residual(&self) -> bool {
        self.stride == 1 && self.in_c == self.out_c
    }
    pub(crate) fn padding(&self) -> usize {
        (self.kernel - 1) / 2
    }
}

/// The whole network with concrete channel counts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArchSpec {
    pub stem_out: usize,
    pub initial_stride: usize,
    pub blocks: Vec<BottleneckSpec>,
    pub last_in: usize,
    pub last_out: usize,
    /// Hidden width of the head (1024 / 1280); not width-scaled.
    pub hidden: usize,
    pub num_classes: usize,
    /// Dropout probability before the classifier, in training.
    pub dropout: f32,
}

/// What a state_dict entry holds; decides how it is initialised, trained and checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorRole {
    ConvWeight {
        fan_out: usize,
    },
    ConvBias {
        fan_in: usize,
    },
    BnWeight,
    BnBias,
    BnRunningMean,
    BnRunningVar,
    /// `num_batches_tracked`: an int64 scalar.
    BnBatchCount,
}

impl TensorRole {
    pub fn trainable(self) -> bool {
        matches!(
            self,
            TensorRole::ConvWeight { .. } | TensorRole::ConvBias { .. } | TensorRole::BnWeight | TensorRole::BnBias
        )
    }
}

/// A tensor the weight file must hold: its PyTorch state_dict name, shape and role.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub role: TensorRole,
    /// False for the SE tensors of bottlenecks that have no SE: stored for compatibility, never used.
    pub used: bool,
}

impl TensorSpec {
    pub(crate) fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl ArchSpec {
    pub fn new(cfg: &ModelConfig) -> ArchSpec {
        let w = cfg.width;
        let si = cfg.initial_stride;
        let (rows, last_in, last_out, hidden): (&[Row], _, _, _) = match cfg.variant {
            Variant::Small => (&SMALL_ROWS, 96, 576, 1024),
            Variant::Large => (&LARGE_ROWS, 160, 960, 1280),
        };
        let blocks = rows
            .iter()
            .map(|Row(i, o, k, e, se, act, s)| {
                let expanded = scale(*e, w);
                BottleneckSpec {
                    in_c: scale(*i, w),
                    out_c: scale(*o, w),
                    kernel: *k,
                    expanded,
                    squeeze_excite: *se,
                    se_hidden: expanded / 4,
                    act: *act,
                    stride: match s {
                        Stride::Initial => si,
                        Stride::Fixed(n) => *n,
                    },
                }
            })
            .collect();
        ArchSpec {
            stem_out: scale(16, w),
            initial_stride: si,
            blocks,
            last_in: scale(last_in, w),
            last_out: scale(last_out, w),
            hidden,
            num_classes: cfg.num_classes,
            dropout: cfg.dropout,
        }
    }

    /// Every tensor of the PyTorch state_dict, in its order.
    pub fn tensors(&self) -> Vec<TensorSpec> {
        let mut out = Vec::new();
        let conv = |out: &mut Vec<TensorSpec>, name: &str, o: usize, i: usize, k: usize, used: bool| {
            out.push(TensorSpec {
                name: name.to_string(),
                shape: vec![o, i, k, k],
                role: TensorRole::ConvWeight { fan_out: o * k * k },
                used,
            })
        };
        fn bias(out: &mut Vec<TensorSpec>, name: &str, c: usize, fan_in: usize, used: bool) {
            out.push(TensorSpec {
                name: name.to_string(),
                shape: vec![c],
                role: TensorRole::ConvBias { fan_in },
                used,
            });
        }
        fn bn(out: &mut Vec<TensorSpec>, n: &names::BnNames, c: usize) {
            let roles = [
                (&n.weight, TensorRole::BnWeight),
                (&n.bias, TensorRole::BnBias),
                (&n.running_mean, TensorRole::BnRunningMean),
                (&n.running_var, TensorRole::BnRunningVar),
            ];
            for (name, role) in roles {
                out.push(TensorSpec { name: name.clone(), shape: vec![c], role, used: true });
            }
            out.push(TensorSpec {
                name: n.num_batches_tracked.clone(),
                shape: vec![],
                role: TensorRole::BnBatchCount,
                used: true,
            });
        }
        let stem = names::stem();
        conv(&mut out, &stem.weight, self.stem_out, 3, 3, true);
        bn(&mut out, &stem.bn, self.stem_out);
        for (i, b) in self.blocks.iter().enumerate() {
            let n = names::block(i);
            conv(&mut out, &n.expand.weight, b.expanded, b.in_c, 1, true);
            bn(&mut out, &n.expand.bn, b.expanded);
            conv(&mut out, &n.depthwise.weight, b.expanded, 1, b.kernel, true);
            bn(&mut out, &n.depthwise.bn, b.expanded);
            let (se, used) = (&n.squeeze_excite, b.squeeze_excite);
            conv(&mut out, &se.reduce.weight, b.se_hidden, b.expanded, 1, used);
            bias(&mut out, &se.reduce.bias, b.se_hidden, b.expanded, used);
            conv(&mut out, &se.expand.weight, b.expanded, b.se_hidden, 1, used);
            bias(&mut out, &se.expand.bias, b.expanded, b.se_hidden, used);
            conv(&mut out, &n.project.weight, b.out_c, b.expanded, 1, true);
            bn(&mut out, &n.project.bn, b.out_c);
        }
        let last = names::last_conv();
        conv(&mut out, &last.weight, self.last_out, self.last_in, 1, true);
        bn(&mut out, &last.bn, self.last_out);
        let (hidden, classifier) = (names::hidden(), names::classifier());
        conv(&mut out, &hidden.weight, self.hidden, self.last_out, 1, true);
        bias(&mut out, &hidden.bias, self.hidden, self.last_out, true);
        conv(&mut out, &classifier.weight, self.num_classes, self.hidden, 1, true);
        bias(&mut out, &classifier.bias, self.num_classes, self.hidden, true);
        out
    }

    /// Trainable parameters the forward pass uses (the unused SE tensors are not counted).
    pub fn parameter_count(&self) -> usize {
        self.tensors().iter().filter(|t| t.used && t.role.trainable()).map(TensorSpec::numel).sum()
    }

    /// Per-layer description for an input of `size`x`size`, with multiply-accumulates counted as the
    /// reference does: convolutions only (BN, activations, pooling and the SE multiply are not counted).
    pub fn layers(&self, size: usize) -> Vec<LayerRow> {
        let conv_out = |s: usize, k: usize, stride: usize| (s + 2 * ((k - 1) / 2) - k) / stride + 1;
        let mut rows = Vec::new();
        let mut s = size;
        let s0 = conv_out(s, 3, self.initial_stride);
        rows.push(LayerRow::new(
            names::STEM_LAYER,
            "conv3x3 + BN + hswish",
            (3, s),
            (self.stem_out, s0),
            29 * self.stem_out,
            s0 * s0 * self.stem_out * 27,
        ));
        s = s0;
        for (i, b) in self.blocks.iter().enumerate() {
            let so = conv_out(s, b.kernel, b.stride);
            let mut params = b.in_c * b.expanded + b.expanded * b.kernel * b.kernel + b.expanded * b.out_c;
            let mut macs = s * s * b.in_c * b.expanded
                + so * so * b.expanded * b.kernel * b.kernel
                + so * so * b.expanded * b.out_c;
            // BN affine parameters of the three convolutions.
            params += 2 * (2 * b.expanded + b.out_c);
            if b.squeeze_excite {
                params += 2 * b.expanded * b.se_hidden + b.se_hidden + b.expanded;
                macs += 2 * b.expanded * b.se_hidden;
            }
            let act = match b.act {
                Activation::Relu => "relu",
                Activation::HardSwish => "hswish",
            };
            let kind = format!(
                "bottleneck k{} exp {}{}{} {}",
                b.kernel,
                b.expanded,
                if b.squeeze_excite { " SE" } else { "" },
                if b.residual() { " +res" } else { "" },
                act
            );
            rows.push(LayerRow::new(&names::block_label(i), &kind, (b.in_c, s), (b.out_c, so), params, macs));
            s = so;
        }
        rows.push(LayerRow::new(
            names::LAST_LAYER,
            "conv1x1 + BN + hswish",
            (self.last_in, s),
            (self.last_out, s),
            self.last_in * self.last_out + 2 * self.last_out,
            s * s * self.last_in * self.last_out,
        ));
        rows.push(LayerRow::new(
            names::HIDDEN_LAYER,
            "pool + conv1x1 + hswish",
            (self.last_out, s),
            (self.hidden, 1),
            self.last_out * self.hidden + self.hidden,
            self.last_out * self.hidden,
        ));
        rows.push(LayerRow::new(
            names::CLASSIFIER_LAYER,
            "dropout + conv1x1 (classifier)",
            (self.hidden, 1),
            (self.num_classes, 1),
            self.hidden * self.num_classes + self.num_classes,
            self.hidden * self.num_classes,
        ));
        rows
    }

    /// Multiply-accumulates per image of `size`x`size`.
    pub fn macs(&self, size: usize) -> usize {
        self.layers(size).iter().map(|r| r.macs).sum()
    }
}

/// One line of `mobilenetv3 info`'s layer table.
#[derive(Clone, Debug, Serialize)]
pub struct LayerRow {
    pub name: String,
    pub kind: String,
    /// (channels, side) in and out.
    pub input: (usize, usize),
    pub output: (usize, usize),
    pub params: usize,
    pub macs: usize,
}

impl LayerRow {
    fn new(name: &str, kind: &str, input: (usize, usize), output: (usize, usize), params: usize, macs: usize) -> Self {
        LayerRow { name: name.into(), kind: kind.into(), input, output, params, macs }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_quarter_has_the_reference_parameter_count() {
        let spec = ModelConfig::new(Variant::Small, 0.25).spec();
        assert_eq!(spec.parameter_count(), 322_435);
        // The layer table counts the same parameters a second way.
        assert_eq!(spec.layers(32).iter().map(|r| r.params).sum::<usize>(), 322_435);
    }

    #[test]
    fn parameter_counts_match_the_reference_table() {
        // ../shared/reference/RESULTS.md, measured with PyTorch.
        let expected = [
            ("small_0.5", 647_363),
            ("small_1.0", 1_615_026),
            ("large_0.25", 644_940),
            ("large_0.5", 1_516_767),
            ("large_1.0", 4_328_586),
        ];
        for (name, n) in expected {
            let cfg = parse_variant_name(name).unwrap();
            assert_eq!(cfg.spec().parameter_count(), n, "{name}");
        }
    }

    #[test]
    fn macs_match_the_reference_table() {
        // Reference MACs (millions, one decimal) for 32x32 input with si = 1.
        let expected = [("small_0.25", 5.9), ("small_1.0", 61.1), ("large_0.5", 62.0), ("large_1.0", 227.9)];
        for (name, m) in expected {
            let macs = parse_variant_name(name).unwrap().spec().macs(32) as f64 / 1e6;
            assert!((macs - m).abs() < 0.051, "{name}: {macs:.2}M vs {m}M");
        }
    }

    #[test]
    fn width_truncates_without_rounding_to_eight() {
        let spec = ModelConfig::new(Variant::Small, 0.75).spec();
        assert_eq!(spec.stem_out, 12);
        assert_eq!(spec.blocks[1].expanded, 54);
        assert_eq!(spec.blocks[1].se_hidden, 13);
        assert!(!spec.blocks[1].squeeze_excite);
    }

    #[test]
    fn initial_stride_moves_the_early_blocks() {
        let cifar = ModelConfig::new(Variant::Large, 1.0).spec();
        let paper = ModelConfig::new(Variant::Large, 1.0).with_initial_stride(2).spec();
        assert_eq!(cifar.blocks[1].stride, 1);
        assert_eq!(paper.blocks[1].stride, 2);
        assert_eq!(cifar.blocks[6].stride, 2);
        assert_eq!(cifar.layers(32).last().unwrap().input.1, 1);
        assert_eq!(cifar.layers(32)[16].output.1, 8);
        assert_eq!(paper.layers(224)[16].output.1, 7);
    }

    #[test]
    fn widths_too_narrow_for_a_layer_are_refused() {
        let err = ModelConfig::new(Variant::Small, 0.2).validate().unwrap_err();
        assert!(matches!(err, ArchError::TooNarrow { min: 0.25, .. }) && err.to_string().contains("at least 0.25"));
        assert!(ModelConfig::new(Variant::Small, 0.25).validate().is_ok());
        assert!(ModelConfig::new(Variant::Large, 0.1).validate().is_ok());
        assert!(ModelConfig::new(Variant::Large, 0.05).validate().is_err());
    }

    #[test]
    fn names_round_trip() {
        let cfg = parse_variant_name("large_1").unwrap();
        assert_eq!(cfg.name(), "large_1.0");
        assert_eq!(parse_variant_name("small_0.25").unwrap().name(), "small_0.25");
        assert!(parse_variant_name("medium_1.0").is_none());
        assert!(parse_variant_name("small_3").is_none());
    }
}
