//! What a depthwise kernel is told about a plane: its geometry, and the prologue applied to it as it is read.
//! Shared by the general kernel ([`super::depthwise`]) and the row kernel ([`super::depthwise_rows`]).

use super::Act;

/// A depthwise convolution's shape: n images of c planes, h x w, a k x k filter, stride and zero padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub n: usize,
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub k: usize,
    pub stride: usize,
    pub pad: usize,
}

impl Geometry {
    pub(crate) fn out_h(&self) -> usize {
        (self.h + 2 * self.pad - self.k) / self.stride + 1
    }
    pub(crate) fn out_w(&self) -> usize {
        (self.w + 2 * self.pad - self.k) / self.stride + 1
    }
    pub(crate) fn out_len(&self) -> usize {
        self.n * self.c * self.out_h() * self.out_w()
    }
}

/// A per-channel affine map and activation applied to a depthwise input plane as it is read,
/// act(z * scale + shift): the preceding layer's BatchNorm (or folded bias), so that its output is never
/// written out in full.
#[derive(Clone, Copy, Debug)]
pub struct Prologue {
    pub scale: f32,
    pub shift: f32,
    pub act: Act,
}

impl Prologue {
    /// The plane the kernel reads: `z` itself, or `pre` applied to it in `scratch`.
    #[inline(always)]
    pub(crate) fn input<'a>(pre: Option<Prologue>, z: &'a [f32], scratch: &'a mut [f32]) -> &'a [f32] {
        match pre {
            Some(pre) => {
                pre.apply(z, scratch);
                scratch
            }
            None => z,
        }
    }

    /// y = act(z * scale + shift), elementwise.
    #[inline(always)]
    pub(crate) fn apply(&self, z: &[f32], y: &mut [f32]) {
        let (a, b, act) = (self.scale, self.shift, self.act);
        for (o, v) in y.iter_mut().zip(z) {
            *o = act.apply(v * a + b);
        }
    }
}
