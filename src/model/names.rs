//! The PyTorch state_dict names of the reference model: the only file that spells them.
//!
//! The reference builds each convolution as `nn.Sequential(conv, bn, act)`, so a convolution's weight is
//! `<layer>.0.weight` and its BatchNorm `<layer>.1.*`. The stem is `conv_0`; the blocks are
//! `bottlenecks_1.{i}` with `pointwise_0` (expand), `depthwise_1`, `se_block` (`conv_0.1` reduce, `conv_1.0`
//! expand: biased 1x1 convolutions) and `pointwise_2` (project); the last 1x1 convolution is `conv_2`, the
//! hidden layer `conv_3.1` and the classifier `conv_4` (both biased 1x1 convolutions on the pooled features).
//! Weight files, the parameter store and all three executors take their names from here.

/// The five tensors of a BatchNorm layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BnNames {
    pub weight: String,
    pub bias: String,
    pub running_mean: String,
    pub running_var: String,
    pub num_batches_tracked: String,
}

impl BnNames {
    fn under(prefix: &str) -> Self {
        BnNames {
            weight: format!("{prefix}.weight"),
            bias: format!("{prefix}.bias"),
            running_mean: format!("{prefix}.running_mean"),
            running_var: format!("{prefix}.running_var"),
            num_batches_tracked: format!("{prefix}.num_batches_tracked"),
        }
    }
}

/// A convolution without bias followed by BatchNorm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvBnNames {
    pub weight: String,
    pub bn: BnNames,
}

impl ConvBnNames {
    fn under(layer: &str) -> Self {
        ConvBnNames { weight: format!("{layer}.0.weight"), bn: BnNames::under(&format!("{layer}.1")) }
    }
}

/// A 1x1 convolution with a bias (squeeze-excite and the head).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DenseNames {
    pub weight: String,
    pub bias: String,
}

impl DenseNames {
    fn under(layer: &str) -> Self {
        DenseNames { weight: format!("{layer}.weight"), bias: format!("{layer}.bias") }
    }
}

/// Squeeze-and-excite: reduce to the hidden width, ReLU, expand back, hard-sigmoid gate. Every block has
/// these tensors (as the reference does); blocks without squeeze-excite leave them unused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqueezeExciteNames {
    pub reduce: DenseNames,
    pub expand: DenseNames,
}

/// One inverted-residual bottleneck.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BottleneckNames {
    pub expand: ConvBnNames,
    pub depthwise: ConvBnNames,
    pub squeeze_excite: SqueezeExciteNames,
    pub project: ConvBnNames,
}

/// What every block tensor name starts with.
pub(crate) const BLOCK_PREFIX: &str = "bottlenecks_1.";
/// The top-level modules, as PyTorch prints them (also the layer table's row names).
pub(crate) const STEM_LAYER: &str = "conv_0";
pub(crate) const LAST_LAYER: &str = "conv_2";
pub(crate) const HIDDEN_LAYER: &str = "conv_3";
pub(crate) const CLASSIFIER_LAYER: &str = "conv_4";

/// The stem: 3x3 convolution, BatchNorm, hard-swish.
pub fn stem() -> ConvBnNames {
    ConvBnNames::under(STEM_LAYER)
}

/// Bottleneck `i` (from 0).
pub fn block(i: usize) -> BottleneckNames {
    let p = format!("{BLOCK_PREFIX}{i}");
    BottleneckNames {
        expand: ConvBnNames::under(&format!("{p}.pointwise_0")),
        depthwise: ConvBnNames::under(&format!("{p}.depthwise_1")),
        squeeze_excite: SqueezeExciteNames {
            reduce: DenseNames::under(&format!("{p}.se_block.conv_0.1")),
            expand: DenseNames::under(&format!("{p}.se_block.conv_1.0")),
        },
        project: ConvBnNames::under(&format!("{p}.pointwise_2")),
    }
}

/// The last 1x1 convolution before pooling.
pub(crate) fn last_conv() -> ConvBnNames {
    ConvBnNames::under(LAST_LAYER)
}

/// The hidden layer on the pooled features (1x1 convolution with bias, hard-swish, dropout).
pub(crate) fn hidden() -> DenseNames {
    DenseNames::under(&format!("{HIDDEN_LAYER}.1"))
}

/// The classifier (1x1 convolution with bias).
pub fn classifier() -> DenseNames {
    DenseNames::under(CLASSIFIER_LAYER)
}

/// The block a tensor belongs to (`bottlenecks_1.7.…` is block 7): how the variant is told from names alone.
pub(crate) fn block_index(name: &str) -> Option<usize> {
    name.strip_prefix(BLOCK_PREFIX)?.split('.').next()?.parse().ok()
}

/// The printable name of a block's layer group, for layer tables (`bottlenecks_1.3`).
pub(crate) fn block_label(i: usize) -> String {
    format!("{BLOCK_PREFIX}{i}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_match_the_reference_state_dict() {
        let b = super::block(3);
        assert_eq!(b.expand.weight, "bottlenecks_1.3.pointwise_0.0.weight");
        assert_eq!(b.depthwise.bn.running_var, "bottlenecks_1.3.depthwise_1.1.running_var");
        assert_eq!(b.squeeze_excite.reduce.bias, "bottlenecks_1.3.se_block.conv_0.1.bias");
        assert_eq!(b.squeeze_excite.expand.weight, "bottlenecks_1.3.se_block.conv_1.0.weight");
        assert_eq!(b.project.bn.num_batches_tracked, "bottlenecks_1.3.pointwise_2.1.num_batches_tracked");
        assert_eq!(super::stem().weight, "conv_0.0.weight");
        assert_eq!(super::last_conv().bn.weight, "conv_2.1.weight");
        assert_eq!(super::hidden().bias, "conv_3.1.bias");
        assert_eq!(super::classifier().weight, "conv_4.weight");
        assert_eq!(super::block_index(&b.project.weight), Some(3));
        assert_eq!(super::block_index("conv_4.weight"), None);
    }
}
