//! Matrix products for the 1x1 convolutions, the stem and the head, over row-major `f32` slices, on the
//! `gemm` crate's kernels. Per-image products run in parallel over images, each single-threaded.

use gemm::Parallelism;
use rayon::prelude::*;

/// dst (m x n) = a (m x k) * b (k x n), or dst += a * b with `accumulate`. Strides are (row, column) in floats,
/// so transposed operands are views, never copies.
#[allow(clippy::too_many_arguments)]
#[inline]
pub(crate) fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    a: &[f32],
    a_strides: (usize, usize),
    b: &[f32],
    b_strides: (usize, usize),
    accumulate: bool,
    parallel: bool,
) {
    // O(1) checks that keep the raw-pointer call below in bounds.
    assert!(dst.len() >= m * n, "matmul: destination too small");
    assert!(m == 0 || k == 0 || a.len() > (m - 1) * a_strides.0 + (k - 1) * a_strides.1, "matmul: lhs too small");
    assert!(k == 0 || n == 0 || b.len() > (k - 1) * b_strides.0 + (n - 1) * b_strides.1, "matmul: rhs too small");
    let par = if parallel { Parallelism::Rayon(rayon::current_num_threads()) } else { Parallelism::None };
    // SAFETY: the slices cover every element the strides address (asserted above).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_strides.1 as isize,
            a_strides.0 as isize,
            b.as_ptr(),
            b_strides.1 as isize,
            b_strides.0 as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            par,
        )
    }
}

/// 1x1 convolution forward: z[img] (o x hw) = w (o x c) * x[img] (c x hw).
pub(crate) fn pointwise_forward(x: &[f32], w: &[f32], c: usize, o: usize, hw: usize, z: &mut [f32]) {
    // Fewer images than threads (batch 1): parallelise inside each product instead of across images, when the
    // product is big enough (about a million multiply-adds) to pay for the hand-off.
    let inner = z.len() / (o * hw).max(1) < rayon::current_num_threads() && o * c * hw >= 1 << 20;
    pointwise_forward_with(x, w, c, o, hw, z, inner)
}

/// [`pointwise_forward`] with the choice made by the caller: `inner` splits each product across threads (for
/// one large image); otherwise images run in parallel, each product on one thread.
pub(crate) fn pointwise_forward_with(x: &[f32], w: &[f32], c: usize, o: usize, hw: usize, z: &mut [f32], inner: bool) {
    z.par_chunks_mut(o * hw).zip(x.par_chunks(c * hw)).for_each(|(zi, xi)| {
        matmul(o, hw, c, zi, w, (c, 1), xi, (hw, 1), false, inner);
    });
}

/// 1x1 convolution backward: dx[img] = w^T dz[img] (if wanted) and dw = sum over images of dz[img] x[img]^T.
/// The plain form, kept as the tests' reference for [`pointwise_backward_fused`].
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn pointwise_backward(
    x: &[f32],
    dz: &[f32],
    w: &[f32],
    c: usize,
    o: usize,
    hw: usize,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
) {
    if let Some(dx) = dx {
        dx.par_chunks_mut(c * hw).zip(dz.par_chunks(o * hw)).for_each(|(dxi, dzi)| {
            matmul(c, hw, o, dxi, w, (1, c), dzi, (hw, 1), false, false);
        });
    }
    weight_grad(x, dz, c, o, hw, dw);
}

/// dw (o x c) = sum over images of dz[img] (o x hw) * x[img]^T (hw x c); images split across threads, each
/// summing into its own buffer. The tests' reference, with [`pointwise_backward`].
#[cfg(test)]
pub(crate) fn weight_grad(x: &[f32], dz: &[f32], c: usize, o: usize, hw: usize, dw: &mut [f32]) {
    let n = x.len() / (c * hw);
    let partial: Vec<Vec<f32>> = crate::kernels::image_ranges(n)
        .into_par_iter()
        .map(|range| {
            let mut acc = vec![0f32; o * c];
            for img in range {
                let (xi, dzi) = (&x[img * c * hw..(img + 1) * c * hw], &dz[img * o * hw..(img + 1) * o * hw]);
                matmul(o, c, hw, &mut acc, dzi, (hw, 1), xi, (1, hw), true, false);
            }
            acc
        })
        .collect();
    dw.fill(0.0);
    for p in partial {
        for (d, v) in dw.iter_mut().zip(p) {
            *d += v;
        }
    }
}

/// [`pointwise_backward`] from an output gradient made image by image: `grad_of(img, out)` writes dz of image
/// `img` (o*hw floats), which both products then read while it is in cache; it is never stored whole. Images
/// are split into one contiguous range per thread, each summing its weight gradient into its own buffer.
#[allow(clippy::too_many_arguments)]
pub(crate) fn pointwise_backward_fused(
    x: &[f32],
    w: &[f32],
    c: usize,
    o: usize,
    hw: usize,
    grad_of: impl Fn(usize, &mut [f32]) + Sync,
    dx: Option<&mut [f32]>,
    dw: &mut [f32],
) {
    let n = x.len() / (c * hw).max(1);
    let out = dx.map(|d| {
        assert!(d.len() >= n * c * hw, "pointwise backward: short input gradient");
        crate::kernels::SharedMut::new(d)
    });
    let partial: Vec<Vec<f32>> = crate::kernels::image_ranges(n)
        .into_par_iter()
        .map(|range| {
            let mut acc = vec![0f32; o * c];
            let mut dz = vec![0f32; o * hw];
            for img in range {
                grad_of(img, &mut dz);
                let xi = &x[img * c * hw..(img + 1) * c * hw];
                if let Some(out) = out {
                    // SAFETY: image `img`'s slice of dx is written by this part only (length asserted above).
                    let dxi = unsafe { out.slice(img * c * hw, c * hw) };
                    matmul(c, hw, o, dxi, w, (1, c), &dz, (hw, 1), false, false);
                }
                matmul(o, c, hw, &mut acc, &dz, (hw, 1), xi, (1, hw), true, false);
            }
            acc
        })
        .collect();
    dw.fill(0.0);
    for p in partial {
        for (d, v) in dw.iter_mut().zip(p) {
            *d += v;
        }
    }
}

/// Columns of a 3x3 convolution's input, per image: (c * 9) x (oh * ow), for the stem's matrix product.
pub(crate) fn im2col(x: &[f32], g: &super::depthwise::Geometry) -> Vec<f32> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let rows = g.c * g.k * g.k;
    let mut cols = vec![0f32; g.n * rows * oh * ow];
    cols.par_chunks_mut(rows * oh * ow).enumerate().for_each(|(img, out)| {
        for ch in 0..g.c {
            let plane = &x[(img * g.c + ch) * g.h * g.w..(img * g.c + ch + 1) * g.h * g.w];
            for ky in 0..g.k {
                for kx in 0..g.k {
                    let row = &mut out[((ch * g.k + ky) * g.k + kx) * oh * ow..][..oh * ow];
                    for oy in 0..oh {
                        let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                        if iy < 0 || iy >= g.h as isize {
                            continue;
                        }
                        for ox in 0..ow {
                            let ix = (ox * g.stride + kx) as isize - g.pad as isize;
                            if ix >= 0 && ix < g.w as isize {
                                row[oy * ow + ox] = plane[iy as usize * g.w + ix as usize];
                            }
                        }
                    }
                }
            }
        }
    });
    cols
}

/// Adds `bias` to every row of the row-major matrix `m`.
pub(crate) fn add_bias_rows(m: &mut [f32], bias: &[f32]) {
    for row in m.chunks_mut(bias.len()) {
        row.iter_mut().zip(bias).for_each(|(v, b)| *v += b);
    }
}

/// The sum of each column of the row-major matrix `m` (a bias gradient).
pub(crate) fn column_sums(m: &[f32], cols: usize) -> Vec<f32> {
    let mut s = vec![0f32; cols];
    for row in m.chunks(cols) {
        s.iter_mut().zip(row).for_each(|(a, b)| *a += b);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointwise_forward_and_backward_match_the_definition() {
        let (n, c, o, hw) = (3, 5, 7, 11);
        let x: Vec<f32> = (0..n * c * hw).map(|i| ((i * 7) % 13) as f32 / 6.0 - 1.0).collect();
        let w: Vec<f32> = (0..o * c).map(|i| ((i * 5) % 11) as f32 / 5.0 - 1.0).collect();
        let dz: Vec<f32> = (0..n * o * hw).map(|i| ((i * 3) % 17) as f32 / 8.0 - 1.0).collect();
        let mut z = vec![0f32; n * o * hw];
        pointwise_forward(&x, &w, c, o, hw, &mut z);
        let (mut dx, mut dw) = (vec![0f32; x.len()], vec![0f32; w.len()]);
        pointwise_backward(&x, &dz, &w, c, o, hw, Some(&mut dx), &mut dw);
        for img in 0..n {
            for p in 0..hw {
                for oc in 0..o {
                    let e: f32 = (0..c).map(|ic| w[oc * c + ic] * x[(img * c + ic) * hw + p]).sum();
                    assert!((z[(img * o + oc) * hw + p] - e).abs() < 1e-4);
                }
                for ic in 0..c {
                    let e: f32 = (0..o).map(|oc| w[oc * c + ic] * dz[(img * o + oc) * hw + p]).sum();
                    assert!((dx[(img * c + ic) * hw + p] - e).abs() < 1e-4);
                }
            }
        }
        for oc in 0..o {
            for ic in 0..c {
                let e: f32 = (0..n)
                    .flat_map(|img| (0..hw).map(move |p| (img, p)))
                    .map(|(img, p)| dz[(img * o + oc) * hw + p] * x[(img * c + ic) * hw + p])
                    .sum();
                assert!((dw[oc * c + ic] - e).abs() < 1e-3, "{} vs {e}", dw[oc * c + ic]);
            }
        }
        // The fused form, with dz handed over image by image, gives the same gradients.
        let (mut dx2, mut dw2) = (vec![0f32; x.len()], vec![0f32; w.len()]);
        let grad_of = |img: usize, out: &mut [f32]| out.copy_from_slice(&dz[img * o * hw..(img + 1) * o * hw]);
        pointwise_backward_fused(&x, &w, c, o, hw, grad_of, Some(&mut dx2), &mut dw2);
        assert!(dx.iter().zip(&dx2).all(|(a, b)| (a - b).abs() < 1e-5));
        assert!(dw.iter().zip(&dw2).all(|(a, b)| (a - b).abs() < 1e-4));
    }
}
