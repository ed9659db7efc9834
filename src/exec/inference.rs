//! The network prepared for CPU inference: BatchNorm folded into the convolutions (w' = w * s, b' = beta -
//! mean * s with s = gamma / sqrt(var + eps)), activations fused into the kernels' epilogues, weights read
//! from the parameter store once. Same numbers as PyTorch's eval mode (tests/parity.rs).

use crate::kernels::batchnorm::{self as bn, Dims};
use crate::kernels::dense::{matmul, pointwise_forward, pointwise_forward_with};
use crate::kernels::depthwise::{self as dw, dot, Geometry};
use crate::kernels::profile::timed_flops;
use crate::kernels::{add_assign, lane_sum, recycle, simd, Act};
use crate::model::arch::{ArchSpec, BN_EPS};
use crate::model::names::{self, ConvBnNames};
use crate::model::params::ParamStore;
use candle_core::Result;
use rayon::prelude::*;

/// A convolution with its BatchNorm folded in: weights (o x rest) and bias (o).
pub(crate) struct Folded {
    pub(crate) w: Vec<f32>,
    pub(crate) b: Vec<f32>,
}

struct SqueezeExcite {
    w1: Vec<f32>,
    b1: Vec<f32>,
    w2: Vec<f32>,
    b2: Vec<f32>,
    mid: usize,
}

struct Block {
    in_c: usize,
    out_c: usize,
    exp: usize,
    kernel: usize,
    stride: usize,
    act: Act,
    residual: bool,
    expand: Folded,
    depthwise: Folded,
    se: Option<SqueezeExcite>,
    project: Folded,
}

pub struct InferencePlan {
    spec: ArchSpec,
    stem: Folded,
    blocks: Vec<Block>,
    last: Folded,
    w3: Vec<f32>,
    b3: Vec<f32>,
    w4: Vec<f32>,
    b4: Vec<f32>,
}

/// A convolution's weights with its BatchNorm's running statistics folded in (the plan's, and the ONNX export's).
pub(crate) fn fold(store: &ParamStore, layer: &ConvBnNames) -> Result<Folded> {
    let mut w = store.values(&layer.weight)?;
    let bn = &layer.bn;
    let (g, b) = (store.values(&bn.weight)?, store.values(&bn.bias)?);
    let (m, v) = (store.values(&bn.running_mean)?, store.values(&bn.running_var)?);
    let o = g.len();
    let per = w.len() / o;
    let mut bias = vec![0f32; o];
    for c in 0..o {
        let s = (g[c] as f64 / (v[c] as f64 + BN_EPS).sqrt()) as f32;
        w[c * per..(c + 1) * per].iter_mut().for_each(|x| *x *= s);
        bias[c] = b[c] - m[c] * s;
    }
    Ok(Folded { w, b: bias })
}

impl InferencePlan {
    /// The plan for the network `spec` with the weights in `store` (read once; later changes to the store are
    /// not seen).
    pub fn new(spec: &ArchSpec, store: &ParamStore) -> Result<Self> {
        let spec = spec.clone();
        let mut blocks = Vec::new();
        for (i, b) in spec.blocks.iter().enumerate() {
            let n = names::block(i);
            let se = if b.squeeze_excite {
                let se = &n.squeeze_excite;
                Some(SqueezeExcite {
                    w1: store.values(&se.reduce.weight)?,
                    b1: store.values(&se.reduce.bias)?,
                    w2: store.values(&se.expand.weight)?,
                    b2: store.values(&se.expand.bias)?,
                    mid: b.se_hidden,
                })
            } else {
                None
            };
            blocks.push(Block {
                in_c: b.in_c,
                out_c: b.out_c,
                exp: b.expanded,
                kernel: b.kernel,
                stride: b.stride,
                act: Act::from(b.act),
                residual: b.residual(),
                expand: fold(store, &n.expand)?,
                depthwise: fold(store, &n.depthwise)?,
                se,
                project: fold(store, &n.project)?,
            });
        }
        Ok(InferencePlan {
            stem: fold(store, &names::stem())?,
            last: fold(store, &names::last_conv())?,
            w3: store.values(&names::hidden().weight)?,
            b3: store.values(&names::hidden().bias)?,
            w4: store.values(&names::classifier().weight)?,
            b4: store.values(&names::classifier().bias)?,
            blocks,
            spec,
        })
    }

    /// Logits (n x classes, row-major) for n normalised images of side x side.
    ///
    /// A large batch runs as small groups of images, each taken through the whole network by one thread: a
    /// group's activations (a few hundred KB per image) then stay in that core's cache from layer to layer,
    /// where the whole batch's (tens of MB) would stream through memory at every bias, activation and
    /// depthwise pass. A small batch runs layer by layer with the threads sharing each layer.
    pub fn forward(&self, x: &[f32], n: usize, side: usize) -> Vec<f32> {
        let group = if images_per_thread(n) { IMAGE_GROUP } else { n };
        self.forward_in_groups(x, n, side, group)
    }

    /// [`forward`](Self::forward) with the group size chosen by the caller (`group >= n`: layer by layer).
    pub fn forward_in_groups(&self, x: &[f32], n: usize, side: usize, group: usize) -> Vec<f32> {
        crate::kernels::on_pool(|| self.forward_on_pool(x, n, side, group))
    }

    fn forward_on_pool(&self, x: &[f32], n: usize, side: usize, group: usize) -> Vec<f32> {
        let pooled = self.pooled_on_pool(x, n, side, group);
        let logits = self.head(&pooled, n);
        recycle(pooled);
        logits
    }

    /// The classifier's input (n x hidden, row-major): what the network makes of n images before its last
    /// layer. Last-layer-only training computes it once per image ([`crate::train`]).
    pub(crate) fn embeddings(&self, x: &[f32], n: usize, side: usize) -> Vec<f32> {
        let group = if images_per_thread(n) { IMAGE_GROUP } else { n };
        crate::kernels::on_pool(|| {
            let pooled = self.pooled_on_pool(x, n, side, group);
            let h = self.hidden(&pooled, n);
            recycle(pooled);
            h
        })
    }

    /// The pooled features of n images, in groups of `group` (see [`forward`](Self::forward)).
    fn pooled_on_pool(&self, x: &[f32], n: usize, side: usize, group: usize) -> Vec<f32> {
        let group = group.max(1);
        if group < n {
            let (per_image, cl) = (3 * side * side, self.spec.last_out);
            let mut pooled = crate::kernels::output_buffer(n * cl);
            pooled.par_chunks_mut(group * cl).zip(x.par_chunks(group * per_image)).for_each(|(p, xs)| {
                p.copy_from_slice(&self.features(xs, xs.len() / per_image, side, true));
            });
            pooled
        } else {
            self.features(x, n, side, false)
        }
    }

    /// The pooled features (n x last_out) of n images, layer by layer. `nested`: already on a worker thread
    /// (one group of a batch), so each product runs on this thread alone.
    fn features(&self, x: &[f32], n: usize, side: usize, nested: bool) -> Vec<f32> {
        let (f, hw) = self.feature_maps(x, n, side, nested);
        let pooled = timed_flops("average pool", 0, || pool(&f, hw));
        recycle(f);
        pooled
    }

    /// The last convolutional stage's activations (n x last_out x hw, after its hard-swish) and hw, the
    /// number of positions in each map.
    fn feature_maps(&self, x: &[f32], n: usize, side: usize, nested: bool) -> (Vec<f32>, usize) {
        let spec = &self.spec;
        let pointwise = |x: &[f32], w: &[f32], c: usize, o: usize, hw: usize| {
            let mut z = crate::kernels::output_buffer(n * o * hw);
            if nested {
                pointwise_forward_with(x, w, c, o, hw, &mut z, false);
            } else {
                pointwise_forward(x, w, c, o, hw, &mut z);
            }
            z
        };
        // Stem: 3x3 conv with bias + hswish, on the row kernel where it takes the shape, else as im2col + matrix
        // product.
        let g = Geometry { n, c: 3, h: side, w: side, k: 3, stride: spec.initial_stride, pad: 1 };
        let (oh, ow) = (g.out_h(), g.out_w());
        let mut a = timed_flops("stem 3x3 conv", macs(n * 27 * spec.stem_out * oh * ow), || {
            let mut a = crate::kernels::output_buffer(n * spec.stem_out * oh * ow);
            if crate::kernels::stem::forward(&g, x, &self.stem.w, &self.stem.b, Act::HardSwish, &mut a) {
                return a;
            }
            recycle(a);
            let cols = crate::kernels::dense::im2col(x, &g);
            let mut a = pointwise(&cols, &self.stem.w, 27, spec.stem_out, oh * ow);
            bn::bias_act_inplace(&Dims { n, c: spec.stem_out, hw: oh * ow }, &mut a, &self.stem.b, Act::HardSwish);
            a
        });
        let mut side = oh;
        for b in &self.blocks {
            let hw = side * side;
            // The expand layer's bias and activation are applied by the depthwise kernel as it reads.
            let e = timed_flops("expand 1x1 conv", macs(n * b.in_c * b.exp * hw), || {
                pointwise(&a, &b.expand.w, b.in_c, b.exp, hw)
            });
            let g = Geometry { n, c: b.exp, h: side, w: side, k: b.kernel, stride: b.stride, pad: (b.kernel - 1) / 2 };
            let mut d = crate::kernels::output_buffer(g.out_len());
            let expanded = Some((&b.expand.b[..], b.act));
            timed_flops(depthwise_kind(b.kernel, b.stride), macs(g.out_len() * b.kernel * b.kernel), || {
                dw::forward_with(&g, &e, expanded, &b.depthwise.w, Some(&b.depthwise.b), b.act, &mut d)
            });
            recycle(e);
            side = g.out_h();
            let hw = side * side;
            if let Some(se) = &b.se {
                // Counted as the reference counts MACs: its two small layers only, not the pooling and scaling.
                timed_flops("squeeze-excite", macs(2 * n * b.exp * se.mid), || {
                    squeeze_excite(se, &mut d, b.exp, hw, nested)
                });
            }
            let out = timed_flops("project 1x1 conv (+ residual)", macs(n * b.exp * b.out_c * hw), || {
                let mut out = pointwise(&d, &b.project.w, b.exp, b.out_c, hw);
                bn::bias_act_inplace(&Dims { n, c: b.out_c, hw }, &mut out, &b.project.b, Act::None);
                if b.residual {
                    add_assign(&mut out, &a);
                }
                out
            });
            recycle(std::mem::replace(&mut a, out));
            recycle(d);
        }
        let hw = side * side;
        let cl = spec.last_out;
        let f = timed_flops("last 1x1 conv", macs(n * spec.last_in * cl * hw), || {
            let mut f = pointwise(&a, &self.last.w, spec.last_in, cl, hw);
            bn::bias_act_inplace(&Dims { n, c: cl, hw }, &mut f, &self.last.b, Act::HardSwish);
            f
        });
        recycle(a);
        (f, hw)
    }

    /// Grad-CAM (Selvaraju et al. 2017) of one normalised image for `class` (None: the top class), on the last
    /// convolutional stage (`conv_2`'s activations A, last_out maps of s x s).
    ///
    /// The map is ReLU(sum over k of alpha_k A_k) with alpha_k the mean over positions of d logit / d A_k. Here
    /// A is only average-pooled before the head, so d logit / d A_k(p) = g_k / (s * s) at every position p,
    /// with g the gradient of the logit with respect to the pooled features: W3^T (hswish'(z) * W4[class]),
    /// z = W3 pooled + b3. No backward pass is needed; `grad_cam` tests hold it to PyTorch's autograd.
    /// Its logits are those of [`forward`](Self::forward) for the same image, to the bit (the same layers,
    /// pooling and head), so a caller that wants both runs the network once.
    pub fn grad_cam(&self, x: &[f32], side: usize, class: Option<usize>) -> GradCam {
        let (f, hw) = crate::kernels::on_pool(|| self.feature_maps(x, 1, side, false));
        let (cl, hid, classes) = (self.spec.last_out, self.spec.hidden, self.spec.num_classes);
        let pooled = pool(&f, hw);
        let z = self.hidden_input(&pooled, 1);
        let h: Vec<f32> = z.iter().map(|&v| Act::HardSwish.apply(v)).collect();
        let logits = self.classifier(&h, 1);
        let class = class.filter(|&c| c < classes).unwrap_or_else(|| argmax(&logits));
        // d logit / d z, then d logit / d pooled.
        let w4 = &self.w4[class * hid..(class + 1) * hid];
        let dz: Vec<f32> = z.iter().zip(w4).map(|(&z, &w)| w * Act::HardSwish.derivative(z)).collect();
        let mut g = vec![0f32; cl];
        for (row, d) in self.w3.chunks(cl).zip(&dz) {
            g.iter_mut().zip(row).for_each(|(g, w)| *g += d * w);
        }
        let mut map = vec![0f32; hw];
        for (plane, gk) in f.chunks(hw).zip(&g) {
            let alpha = gk / hw as f32;
            map.iter_mut().zip(plane).for_each(|(m, a)| *m += alpha * a);
        }
        map.iter_mut().for_each(|m| *m = m.max(0.0));
        recycle(f);
        let s = (hw as f64).sqrt().round() as usize;
        GradCam { class, logits, side: s, map }
    }

    /// The classifier on pooled features: hswish(W3 f + b3), then W4 . + b4 (dropout is off in inference).
    fn head(&self, pooled: &[f32], n: usize) -> Vec<f32> {
        let (cl, hid, classes) = (self.spec.last_out, self.spec.hidden, self.spec.num_classes);
        timed_flops(CLASSIFIER_KIND, macs(n * hid * (cl + classes)), || self.classifier(&self.hidden(pooled, n), n))
    }

    /// The last layer on hidden features (n x hidden): W4 h + b4.
    fn classifier(&self, h: &[f32], n: usize) -> Vec<f32> {
        let (hid, classes) = (self.spec.hidden, self.spec.num_classes);
        let mut logits = vec![0f32; n * classes];
        matmul(n, classes, hid, &mut logits, h, (hid, 1), &self.w4, (1, hid), false, n > 8);
        for row in logits.chunks_mut(classes) {
            row.iter_mut().zip(&self.b4).for_each(|(v, b)| *v += b);
        }
        logits
    }

    /// The hidden layer on pooled features: hswish(W3 f + b3), n x hidden.
    fn hidden(&self, pooled: &[f32], n: usize) -> Vec<f32> {
        let mut h = self.hidden_input(pooled, n);
        h.iter_mut().for_each(|v| *v = Act::HardSwish.apply(*v));
        h
    }

    /// The hidden layer before its activation: W3 f + b3, n x hidden.
    fn hidden_input(&self, pooled: &[f32], n: usize) -> Vec<f32> {
        let (cl, hid) = (self.spec.last_out, self.spec.hidden);
        let mut z = vec![0f32; n * hid];
        matmul(n, hid, cl, &mut z, pooled, (cl, 1), &self.w3, (1, cl), false, n > 8);
        for row in z.chunks_mut(hid) {
            row.iter_mut().zip(&self.b3).for_each(|(v, b)| *v += b);
        }
        z
    }
}

/// Floating-point operations of `n` multiply-adds. The profile counts those of the convolutions and the
/// classifier only (as [`crate::model::arch::ArchSpec::layers`] counts MACs), not BatchNorm, activations or pooling.
fn macs(n: usize) -> u64 {
    2 * n as u64
}

/// The profile's name for the classifier: it runs once for the whole batch, on the calling thread.
pub(crate) const CLASSIFIER_KIND: &str = "classifier (hidden + last layer)";

/// The profile's name for a depthwise layer of this kernel size and stride.
fn depthwise_kind(kernel: usize, stride: usize) -> &'static str {
    match (kernel, stride) {
        (3, 1) => "depthwise 3x3 stride 1",
        (3, _) => "depthwise 3x3 stride 2",
        (5, 1) => "depthwise 5x5 stride 1",
        (5, _) => "depthwise 5x5 stride 2",
        _ => "depthwise (other)",
    }
}

/// A Grad-CAM map ([`InferencePlan::grad_cam`]).
#[derive(Clone, Debug, PartialEq)]
pub struct GradCam {
    /// The class it explains.
    pub class: usize,
    /// The image's logits.
    pub logits: Vec<f32>,
    /// The map is side x side, row-major: the last stage's resolution (8 for a 32-pixel image at stride 1).
    pub side: usize,
    /// Non-negative; where the class's evidence is.
    pub map: Vec<f32>,
}

impl GradCam {
    /// The position (column, row) of the map's largest value, as fractions of the image's width and height
    /// (the centre of that cell).
    pub fn peak(&self) -> (f32, f32) {
        let i = argmax(&self.map);
        let s = self.side as f32;
        (((i % self.side) as f32 + 0.5) / s, ((i / self.side) as f32 + 0.5) / s)
    }
}

/// The mean of each hw-sized map: global average pooling.
fn pool(f: &[f32], hw: usize) -> Vec<f32> {
    f.chunks(hw).map(|p| simd!(lane_sum(p)) / hw as f32).collect()
}

/// The index of the largest value (the first of equals).
fn argmax(v: &[f32]) -> usize {
    v.iter().enumerate().fold(0, |best, (i, x)| if *x > v[best] { i } else { best })
}

/// Images per group in a large batch (see [`InferencePlan::forward`]): one image's activations fit a core's
/// L2 cache on every layer; measured best against 2, 4 and whole-batch layers (`latency --batch 128`).
const IMAGE_GROUP: usize = 1;

/// Whether a batch of `n` runs whole images on each thread (at least twice the threads), rather than each
/// layer shared by the threads.
pub fn images_per_thread(n: usize) -> bool {
    n >= 2 * rayon::current_num_threads()
}

/// In place: x *= hsigmoid(W2 relu(W1 mean(x) + b1) + b2), per image and channel. The two layers are
/// matrix-vector products of a few hundred channels: plain dot products, where a matrix-product call would
/// cost more in set-up than in arithmetic. `nested`: on a worker thread already (one image of a batch).
fn squeeze_excite(se: &SqueezeExcite, x: &mut [f32], c: usize, hw: usize, nested: bool) {
    // Plain loops, no iterator closures: a closure that LLVM leaves out of line loses `simd!`'s target.
    let excite = |img: &mut [f32]| {
        let (mut pooled, mut hidden) = (vec![0f32; c], vec![0f32; se.mid]);
        simd!({
            for (p, plane) in pooled.iter_mut().zip(img.chunks(hw)) {
                *p = lane_sum(plane) / hw as f32;
            }
            for ((h, w), b) in hidden.iter_mut().zip(se.w1.chunks(c)).zip(&se.b1) {
                *h = (dot(w, &pooled) + b).max(0.0);
            }
            for ((plane, w), b) in img.chunks_mut(hw).zip(se.w2.chunks(se.mid)).zip(&se.b2) {
                let gate = (dot(w, &hidden) + b + 3.0).clamp(0.0, 6.0) / 6.0;
                for v in plane.iter_mut() {
                    *v *= gate;
                }
            }
        })
    };
    let n = x.len() / (c * hw).max(1);
    if nested {
        x.chunks_mut(c * hw).for_each(excite);
    } else if n >= rayon::current_num_threads() {
        x.par_chunks_mut(c * hw).for_each(excite);
    } else {
        // Fewer images than threads (batch 1): each of the three steps split across the threads by channel.
        for img in x.chunks_mut(c * hw) {
            let pooled: Vec<f32> =
                img.par_chunks(hw).with_min_len(32).map(|p| simd!(lane_sum(p)) / hw as f32).collect();
            let hidden: Vec<f32> = (se.w1.par_chunks(c).zip(se.b1.par_iter()).with_min_len(8))
                .map(|(w, b)| (simd!(dot(w, &pooled)) + b).max(0.0))
                .collect();
            (img.par_chunks_mut(hw).zip(se.w2.par_chunks(se.mid)).zip(se.b2.par_iter()).with_min_len(32)).for_each(
                |((plane, w), b)| {
                    let gate = (simd!(dot(w, &hidden)) + b + 3.0).clamp(0.0, 6.0) / 6.0;
                    simd!(plane.iter_mut().for_each(|v| *v *= gate));
                },
            );
        }
    }
}
