//! The numeric operations the network is made of, behind one seam so that faster kernels can replace them
//! without touching the layers.

use candle_core::{Result, Tensor};

/// hswish(x) = x * relu6(x + 3) / 6
pub fn hard_swish(x: &Tensor) -> Result<Tensor> {
    x * hard_sigmoid(x)?
}

/// hsigmoid(x) = relu6(x + 3) / 6
pub fn hard_sigmoid(x: &Tensor) -> Result<Tensor> {
    (x + 3.0)?.clamp(0f32, 6f32)? / 6.0
}

/// A 1x1 convolution with bias applied to pooled features: x (n, c), weight (o, c, 1, 1), bias (o).
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    let (o, c, _, _) = weight.dims4()?;
    x.matmul(&weight.reshape((o, c))?.t()?)?.broadcast_add(bias)
}

/// A 1x1 convolution, stride 1, no bias, as one batched matrix product: (o, c) x (c, h*w) per image.
pub fn pointwise_conv2d(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let o = weight.dim(0)?;
    let y = weight
        .reshape((1, o, c))?
        .broadcast_matmul(&x.reshape((n, c, h * w))?)?;
    y.reshape((n, o, h, w))
}

/// A depthwise kxk convolution (one filter per channel), no bias.
pub fn depthwise_conv2d(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let c = x.dim(1)?;
    x.conv2d(weight, padding, stride, 1, c)
}
