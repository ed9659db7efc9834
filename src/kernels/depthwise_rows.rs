//! Depthwise convolution one plane at a time with whole rows in vector registers (AVX-512, or AVX2 + FMA), for
//! the planes of the CIFAR layout: output rows of 8, 16 or 32 pixels, 3x3 or 5x5 filters, stride 1 or 2.
//!
//! The general kernel ([`super::depthwise`]) reads every tap as an unaligned load from a zero-padded copy of
//! the plane, one per output vector and tap, most of them split across two cache lines, and computes the
//! padding columns too. Here each input row is loaded once and its k horizontally shifted copies are made in
//! registers (`valignd` against zeros, which also supplies the padding; stride 2 first splits the row into its
//! even and odd pixels with one permute each) and kept in a small aligned buffer of *shifted rows*. Every
//! output row is then k*k multiply-adds of aligned rows of that buffer, eight output vectors at a time so that
//! enough independent chains of multiply-adds are in flight; bias and activation are applied before the single
//! store. The same buffer gives the weight gradient (per tap, the dot product of the output gradient with the
//! shifted rows). The input gradient is, at stride 1, the forward of the output gradient with the filter rotated
//! by 180 degrees; at stride 2, the same sums over gradient rows first spread onto the even pixels.

use super::plane::{Geometry, Prologue};
use super::Act;

/// Sixteen floats on a 64-byte boundary: one row vector of the shifted-row buffer.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
pub(crate) struct Lane16(pub [f32; 16]);

/// A plane shape the row kernel handles, or `None` (another shape, or a CPU without AVX2).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RowPlan {
    k: usize,
    stride: usize,
    h: usize,
    w: usize,
    oh: usize,
    ow: usize,
    /// Floats per vector: 16 (AVX-512) or 8 (AVX2 + FMA).
    lanes: usize,
    /// Vectors per output row: with AVX-512 1 (8 or 16 pixels) or 2 (32), with AVX2 ow / 8.
    v: usize,
}

impl RowPlan {
    pub(crate) fn new(g: &Geometry) -> Option<RowPlan> {
        let lanes = if super::has_avx512() {
            16
        } else if super::has_fma() {
            8
        } else {
            return None;
        };
        if !matches!(g.k, 3 | 5) || g.pad != (g.k - 1) / 2 {
            return None;
        }
        let (oh, ow) = (g.out_h(), g.out_w());
        if !matches!((g.stride, ow, g.w), (1, 8, 8) | (1, 16, 16) | (1, 32, 32) | (2, 8, 16) | (2, 16, 32)) {
            return None;
        }
        let v = ow.div_ceil(lanes);
        // Output rows go in groups of 8 vectors.
        if oh % (8 / v) != 0 || g.h != oh * g.stride {
            return None;
        }
        Some(RowPlan { k: g.k, stride: g.stride, h: g.h, w: g.w, oh, ow, lanes, v })
    }

    /// Length in [`Lane16`]s of the shifted-row buffer: k shifted copies of each padded input row (or, for the
    /// input gradient at stride 2, of each upsampled gradient row).
    pub(crate) fn buffer_len(&self) -> usize {
        let upsampled = if self.stride == 2 { (self.oh + 2) * self.k * (self.w / self.lanes) } else { 0 };
        let vectors = ((self.h + self.k - 1) * self.k * self.v).max(upsampled);
        (vectors * self.lanes).div_ceil(16)
    }

    /// The shifted rows of an h x w plane (of the input, or at stride 1 of an output gradient), with `pre`
    /// applied to each pixel as it is read.
    #[inline]
    pub(crate) fn shift(&self, plane: &[f32], pre: Option<Prologue>, buf: &mut [Lane16]) {
        assert!(plane.len() >= self.h * self.w && buf.len() >= self.buffer_len());
        // SAFETY: the CPU has the kernels' vector unit (checked in `new`); the asserts bound every access.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if self.lanes == 8 {
                use avx2::*;
                return match (self.k, self.stride, self.v) {
                    (3, 1, 1) => shift_rows::<3, 1, 1>(self, plane, pre, buf),
                    (3, 1, 2) => shift_rows::<3, 1, 2>(self, plane, pre, buf),
                    (3, 1, _) => shift_rows::<3, 1, 4>(self, plane, pre, buf),
                    (5, 1, 1) => shift_rows::<5, 1, 1>(self, plane, pre, buf),
                    (5, 1, 2) => shift_rows::<5, 1, 2>(self, plane, pre, buf),
                    (5, 1, _) => shift_rows::<5, 1, 4>(self, plane, pre, buf),
                    (3, _, 1) => shift_rows::<3, 2, 1>(self, plane, pre, buf),
                    (3, _, _) => shift_rows::<3, 2, 2>(self, plane, pre, buf),
                    (5, _, 1) => shift_rows::<5, 2, 1>(self, plane, pre, buf),
                    _ => shift_rows::<5, 2, 2>(self, plane, pre, buf),
                };
            }
            use avx512::*;
            match (self.k, self.stride, self.v) {
                (3, 1, 1) => shift_rows::<3, 1, 1>(self, plane, pre, buf),
                (3, 1, _) => shift_rows::<3, 1, 2>(self, plane, pre, buf),
                (5, 1, 1) => shift_rows::<5, 1, 1>(self, plane, pre, buf),
                (5, 1, _) => shift_rows::<5, 1, 2>(self, plane, pre, buf),
                (3, _, _) => shift_rows::<3, 2, 1>(self, plane, pre, buf),
                _ => shift_rows::<5, 2, 1>(self, plane, pre, buf),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("a RowPlan exists only on x86-64 with AVX2 or AVX-512")
    }

    /// out (oh x ow) = act(bias + the correlation of the shifted plane with the k x k filter `wk`).
    #[inline]
    pub(crate) fn correlate(&self, buf: &[Lane16], wk: &[f32], bias: f32, act: Act, out: &mut [f32]) {
        assert!(buf.len() >= self.buffer_len() && wk.len() >= self.k * self.k && out.len() >= self.oh * self.ow);
        // SAFETY: as in `shift`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if self.lanes == 8 {
                use avx2::*;
                return match (self.k, self.v) {
                    (3, 1) => correlate_rows::<3, 1, 8>(self, buf, wk, bias, act, out),
                    (3, 2) => correlate_rows::<3, 2, 4>(self, buf, wk, bias, act, out),
                    (3, _) => correlate_rows::<3, 4, 2>(self, buf, wk, bias, act, out),
                    (5, 1) => correlate_rows::<5, 1, 8>(self, buf, wk, bias, act, out),
                    (5, 2) => correlate_rows::<5, 2, 4>(self, buf, wk, bias, act, out),
                    _ => correlate_rows::<5, 4, 2>(self, buf, wk, bias, act, out),
                };
            }
            use avx512::*;
            match (self.k, self.v) {
                (3, 1) => correlate_rows::<3, 1, 8>(self, buf, wk, bias, act, out),
                (3, _) => correlate_rows::<3, 2, 4>(self, buf, wk, bias, act, out),
                (5, 1) => correlate_rows::<5, 1, 8>(self, buf, wk, bias, act, out),
                _ => correlate_rows::<5, 2, 4>(self, buf, wk, bias, act, out),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("a RowPlan exists only on x86-64 with AVX2 or AVX-512")
    }

    /// dw_acc[t] += sum over the plane of grad * (the input's shifted rows for tap t).
    #[inline]
    pub(crate) fn weight_grad(&self, buf: &[Lane16], grad: &[f32], dw_acc: &mut [f64]) {
        assert!(buf.len() >= self.buffer_len() && grad.len() >= self.oh * self.ow && dw_acc.len() >= self.k * self.k);
        // SAFETY: as in `shift`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if self.lanes == 8 {
                use avx2::*;
                return match (self.k, self.v) {
                    (3, 1) => weight_grad_rows::<3, 1>(self, buf, grad, dw_acc),
                    (3, 2) => weight_grad_rows::<3, 2>(self, buf, grad, dw_acc),
                    (3, _) => weight_grad_rows::<3, 4>(self, buf, grad, dw_acc),
                    (5, 1) => weight_grad_rows::<5, 1>(self, buf, grad, dw_acc),
                    (5, 2) => weight_grad_rows::<5, 2>(self, buf, grad, dw_acc),
                    _ => weight_grad_rows::<5, 4>(self, buf, grad, dw_acc),
                };
            }
            use avx512::*;
            match (self.k, self.v) {
                (3, 1) => weight_grad_rows::<3, 1>(self, buf, grad, dw_acc),
                (3, _) => weight_grad_rows::<3, 2>(self, buf, grad, dw_acc),
                (5, 1) => weight_grad_rows::<5, 1>(self, buf, grad, dw_acc),
                _ => weight_grad_rows::<5, 2>(self, buf, grad, dw_acc),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("a RowPlan exists only on x86-64 with AVX2 or AVX-512")
    }

    /// dx (h x w) from the output gradient (oh x ow). At stride 1 it is the correlation of the gradient with the
    /// filter rotated by 180 degrees. At stride 2 each gradient row is first spread onto the even pixels of an
    /// input-width row (zeros between), and input row y sums the taps whose output row (y + pad - ky) / 2 is
    /// whole. `buf` is scratch; `rotated` holds k*k floats.
    #[inline]
    pub(crate) fn input_grad(&self, grad: &[f32], wk: &[f32], buf: &mut [Lane16], rotated: &mut [f32], dx: &mut [f32]) {
        let kk = self.k * self.k;
        assert!(grad.len() >= self.oh * self.ow && wk.len() >= kk && buf.len() >= self.buffer_len());
        assert!(dx.len() >= self.h * self.w);
        if self.stride == 1 {
            for (r, w) in rotated[..kk].iter_mut().zip(wk[..kk].iter().rev()) {
                *r = *w;
            }
            self.shift(grad, None, buf);
            self.correlate(buf, rotated, 0.0, Act::None, dx);
            return;
        }
        // SAFETY: as in `shift`; the asserts above bound every access.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            if self.lanes == 8 {
                use avx2::*;
                return match (self.k, self.w) {
                    (3, 16) => transpose_s2::<3, 2, 4>(self, grad, wk, buf, dx),
                    (3, _) => transpose_s2::<3, 4, 2>(self, grad, wk, buf, dx),
                    (5, 16) => transpose_s2::<5, 2, 4>(self, grad, wk, buf, dx),
                    _ => transpose_s2::<5, 4, 2>(self, grad, wk, buf, dx),
                };
            }
            use avx512::*;
            match (self.k, self.w) {
                (3, 16) => transpose_s2::<3, 1, 8>(self, grad, wk, buf, dx),
                (3, _) => transpose_s2::<3, 2, 4>(self, grad, wk, buf, dx),
                (5, 16) => transpose_s2::<5, 1, 8>(self, grad, wk, buf, dx),
                _ => transpose_s2::<5, 2, 4>(self, grad, wk, buf, dx),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("a RowPlan exists only on x86-64 with AVX2 or AVX-512")
    }
}

/// What the kernels below need of a vector unit: implemented for AVX-512's and AVX2's vectors, whose modules
/// call the kernels (all `#[inline(always)]`) from functions compiled for that unit.
///
/// Everything here is `unsafe` for two reasons only: the intrinsics need the CPU feature (checked once, at run
/// time, when a [`RowPlan`] is made), and the loads and stores go through raw pointers (bounded by the asserts
/// of the safe `RowPlan` methods, the only callers).
#[cfg(target_arch = "x86_64")]
mod kernels {
    use super::{Act, Lane16, Prologue, RowPlan};

    pub(super) trait Lanes: Copy {
        /// Floats per vector.
        const N: usize;
        /// # Safety
        /// The CPU has the implementing vector unit (AVX-512F for `__m512`, AVX2 and FMA for `__m256`).
        unsafe fn splat(x: f32) -> Self;
        /// # Safety
        /// The CPU has the implementing vector unit (AVX-512F for `__m512`, AVX2 and FMA for `__m256`).
        unsafe fn add(a: Self, b: Self) -> Self;
        /// # Safety
        /// The CPU has the implementing vector unit (AVX-512F for `__m512`, AVX2 and FMA for `__m256`).
        unsafe fn mul(a: Self, b: Self) -> Self;
        /// # Safety
        /// The CPU has the implementing vector unit (AVX-512F for `__m512`, AVX2 and FMA for `__m256`).
        unsafe fn max(a: Self, b: Self) -> Self;
        /// # Safety
        /// The CPU has the implementing vector unit (AVX-512F for `__m512`, AVX2 and FMA for `__m256`).
        unsafe fn min(a: Self, b: Self) -> Self;
        /// a * b + c, one rounding.
        ///
        /// # Safety
        /// The CPU has the implementing vector unit (AVX-512F for `__m512`, AVX2 and FMA for `__m256`).
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self;
        /// The first `n` floats at `p` (all N when n >= N), zeros in the other lanes.
        ///
        /// # Safety
        /// The CPU has the implementing vector unit, and `p` is valid for reading the first `min(n, N)` floats.
        unsafe fn load(p: *const f32, n: usize) -> Self;
        /// The first `n` lanes of `v` (all when n >= N) to `p`.
        ///
        /// # Safety
        /// The CPU has the implementing vector unit, and `p` is valid for writing the first `min(n, N)` floats.
        unsafe fn store(p: *mut f32, v: Self, n: usize);
        /// # Safety
        /// The CPU has the implementing vector unit (AVX-512F for `__m512`, AVX2 and FMA for `__m256`).
        unsafe fn sum(v: Self) -> f32;
    }

    /// The same operations in the same order as `Act::apply`: z * clamp(z + 3, 0, 6) * (1/6) for hard-swish.
    ///
    /// # Safety
    /// The CPU has `L`'s vector unit.
    #[inline(always)]
    pub(super) unsafe fn activate<L: Lanes>(v: L, act: Act) -> L {
        match act {
            Act::None => v,
            Act::Relu => L::max(v, L::splat(0.0)),
            Act::HardSwish => {
                let r = L::min(L::max(L::add(v, L::splat(3.0)), L::splat(0.0)), L::splat(6.0));
                L::mul(L::mul(v, r), L::splat(1.0 / 6.0))
            }
        }
    }

    /// act(v * scale + shift), with the same operations in the same order as `TrainNorm::apply_plane`.
    ///
    /// # Safety
    /// The CPU has `L`'s vector unit.
    #[inline(always)]
    pub(super) unsafe fn prologue<L: Lanes>(v: L, pre: Option<Prologue>) -> L {
        match pre {
            None => v,
            Some(p) => activate(L::add(L::mul(v, L::splat(p.scale)), L::splat(p.shift)), p.act),
        }
    }

    /// R output rows of V vectors at a time (R * V = 8 chains of multiply-adds).
    ///
    /// # Safety
    /// The CPU has `L`'s vector unit, and every slice and pointer covers the rows the plan reads and writes:
    /// the shifted-row buffer at least [`RowPlan::buffer_len`] long, planes at least h x w (as the safe
    /// `RowPlan` methods assert before they dispatch here).
    #[inline(always)]
    pub(super) unsafe fn correlate_rows<L: Lanes, const K: usize, const V: usize, const R: usize>(
        p: &RowPlan,
        buf: &[Lane16],
        wk: &[f32],
        bias: f32,
        act: Act,
        out: &mut [f32],
    ) {
        let rows = buf.as_ptr() as *const L;
        let per_row = K * V;
        let mut oy = 0;
        while oy < p.oh {
            let mut acc = [[L::splat(bias); V]; R];
            for ky in 0..K {
                for kx in 0..K {
                    let w = L::splat(*wk.get_unchecked(ky * K + kx));
                    for (r, acc_r) in acc.iter_mut().enumerate() {
                        let src = rows.add(((oy + r) * p.stride + ky) * per_row + kx * V);
                        for (j, a) in acc_r.iter_mut().enumerate() {
                            *a = L::fmadd(w, *src.add(j), *a);
                        }
                    }
                }
            }
            for (r, acc_r) in acc.iter().enumerate() {
                let dst = out.as_mut_ptr().add((oy + r) * p.ow);
                for (j, a) in acc_r.iter().enumerate() {
                    L::store(dst.add(L::N * j), activate(*a, act), p.ow - L::N * j);
                }
            }
            oy += R;
        }
    }

    /// Two sets of K sums (even and odd output rows) per filter row, so that 2K chains are in flight.
    ///
    /// # Safety
    /// The CPU has `L`'s vector unit, and every slice and pointer covers the rows the plan reads and writes:
    /// the shifted-row buffer at least [`RowPlan::buffer_len`] long, planes at least h x w (as the safe
    /// `RowPlan` methods assert before they dispatch here).
    #[inline(always)]
    pub(super) unsafe fn weight_grad_rows<L: Lanes, const K: usize, const V: usize>(
        p: &RowPlan,
        buf: &[Lane16],
        grad: &[f32],
        dw_acc: &mut [f64],
    ) {
        let rows = buf.as_ptr() as *const L;
        let per_row = K * V;
        for ky in 0..K {
            let mut acc = [[L::splat(0.0); K]; 2];
            // Output rows in pairs (every plan has an even number of them), one set of sums each.
            for pair in (0..p.oh).step_by(2) {
                for (half, sums) in acc.iter_mut().enumerate() {
                    let oy = pair + half;
                    let src = rows.add((oy * p.stride + ky) * per_row);
                    for j in 0..V {
                        let g = L::load(grad.as_ptr().add(oy * p.ow + L::N * j), p.ow - L::N * j);
                        for (kx, a) in sums.iter_mut().enumerate() {
                            *a = L::fmadd(g, *src.add(kx * V + j), *a);
                        }
                    }
                }
            }
            for kx in 0..K {
                dw_acc[ky * K + kx] += L::sum(L::add(acc[0][kx], acc[1][kx])) as f64;
            }
        }
    }

    /// The stride-2 input gradient from the upsampled, shifted gradient rows (buffer row i holds gradient row
    /// i - 1), R input rows of V vectors at a time (w = N V).
    ///
    /// # Safety
    /// The CPU has `L`'s vector unit, and every slice and pointer covers the rows the plan reads and writes:
    /// the shifted-row buffer at least [`RowPlan::buffer_len`] long, planes at least h x w (as the safe
    /// `RowPlan` methods assert before they dispatch here).
    #[inline(always)]
    pub(super) unsafe fn transpose_rows<L: Lanes, const K: usize, const V: usize, const R: usize>(
        p: &RowPlan,
        rows: *const L,
        wk: &[f32],
        dx: &mut [f32],
    ) {
        let mut y = 0;
        while y < p.h {
            let mut acc = [[L::splat(0.0); V]; R];
            // Row y + r takes filter row ky when y + r + pad - ky is even; y is even, so that depends on r and on
            // the parity of ky only, which the two passes make a constant.
            accumulate_s2::<L, K, V, R, 0>(rows, wk, y, &mut acc);
            accumulate_s2::<L, K, V, R, 1>(rows, wk, y, &mut acc);
            for (r, acc_r) in acc.iter().enumerate() {
                let dst = dx.as_mut_ptr().add((y + r) * p.w);
                for (j, a) in acc_r.iter().enumerate() {
                    L::store(dst.add(L::N * j), *a, L::N);
                }
            }
            y += R;
        }
    }

    /// The filter rows ky of parity PAR, for input rows y..y + R (y even).
    ///
    /// # Safety
    /// The CPU has `L`'s vector unit, and every slice and pointer covers the rows the plan reads and writes:
    /// the shifted-row buffer at least [`RowPlan::buffer_len`] long, planes at least h x w (as the safe
    /// `RowPlan` methods assert before they dispatch here).
    #[inline(always)]
    unsafe fn accumulate_s2<L: Lanes, const K: usize, const V: usize, const R: usize, const PAR: usize>(
        rows: *const L,
        wk: &[f32],
        y: usize,
        acc: &mut [[L; V]; R],
    ) {
        let pad = (K - 1) / 2;
        let per_row = K * V;
        let mut ky = PAR;
        while ky < K {
            for kx in 0..K {
                let w = L::splat(*wk.get_unchecked(ky * K + kx));
                for (r, acc_r) in acc.iter_mut().enumerate() {
                    if !(r + pad + PAR).is_multiple_of(2) {
                        continue;
                    }
                    // Gradient row (y + r + pad - ky) / 2, at buffer row one below.
                    let i = (y + r + pad + 2 - ky) / 2;
                    let src = rows.add(i * per_row + kx * V);
                    for (j, a) in acc_r.iter_mut().enumerate() {
                        *a = L::fmadd(w, *src.add(j), *a);
                    }
                }
            }
            ky += 2;
        }
    }
}

/// The AVX-512 kernels; [`RowPlan::new`] only returns a plan where they can run.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::kernels::{self, prologue, Lanes};
    use super::{Act, Lane16, Prologue, RowPlan};
    use std::arch::x86_64::*;

    // Each method is one AVX-512F intrinsic (or a short sequence); the trait states what the caller must ensure.
    impl Lanes for __m512 {
        const N: usize = 16;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            _mm512_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            _mm512_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: Self, b: Self) -> Self {
            _mm512_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn load(p: *const f32, n: usize) -> Self {
            _mm512_maskz_loadu_ps(lanes(n), p)
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self, n: usize) {
            _mm512_mask_storeu_ps(p, lanes(n), v)
        }
        #[inline(always)]
        unsafe fn sum(v: Self) -> f32 {
            _mm512_reduce_add_ps(v)
        }
    }

    /// Lanes below `n` set.
    #[inline(always)]
    fn lanes(n: usize) -> __mmask16 {
        if n >= 16 {
            0xffff
        } else {
            ((1u32 << n) - 1) as __mmask16
        }
    }

    /// out[i] = p[i + d], zero where i + d falls outside 0..16 (|d| <= 2).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[inline(always)]
    unsafe fn shift1(p: __m512, d: isize) -> __m512 {
        let (z, pi) = (_mm512_setzero_si512(), _mm512_castps_si512(p));
        _mm512_castsi512_ps(match d {
            -2 => _mm512_alignr_epi32::<14>(pi, z),
            -1 => _mm512_alignr_epi32::<15>(pi, z),
            1 => _mm512_alignr_epi32::<1>(z, pi),
            2 => _mm512_alignr_epi32::<2>(z, pi),
            _ => pi,
        })
    }

    /// The two halves of a 32-pixel row [lo, hi] shifted by d (|d| <= 2), zeros shifted in at both ends.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[inline(always)]
    unsafe fn shift2(lo: __m512, hi: __m512, d: isize) -> (__m512, __m512) {
        let (z, l, h) = (_mm512_setzero_si512(), _mm512_castps_si512(lo), _mm512_castps_si512(hi));
        let (a, b) = match d {
            -2 => (_mm512_alignr_epi32::<14>(l, z), _mm512_alignr_epi32::<14>(h, l)),
            -1 => (_mm512_alignr_epi32::<15>(l, z), _mm512_alignr_epi32::<15>(h, l)),
            1 => (_mm512_alignr_epi32::<1>(h, l), _mm512_alignr_epi32::<1>(z, h)),
            2 => (_mm512_alignr_epi32::<2>(h, l), _mm512_alignr_epi32::<2>(z, h)),
            _ => (l, h),
        };
        (_mm512_castsi512_ps(a), _mm512_castsi512_ps(b))
    }

    /// buf[(y + pad) * K * V + kx * V + j] = vector j of input row y (through `pre`) shifted for tap column kx;
    /// the pad rows above and below are zeros.
    ///
    /// # Safety
    /// The CPU has AVX-512F (a [`RowPlan`] of 16 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn shift_rows<const K: usize, const S: usize, const V: usize>(
        p: &RowPlan,
        plane: &[f32],
        pre: Option<Prologue>,
        buf: &mut [Lane16],
    ) {
        let pad = (K - 1) / 2;
        let per_row = K * V;
        let out = buf.as_mut_ptr() as *mut __m512;
        let zero = _mm512_setzero_ps();
        for r in (0..pad).chain(p.h + pad..p.h + 2 * pad) {
            for i in 0..per_row {
                _mm512_store_ps(out.add(r * per_row + i) as *mut f32, zero);
            }
        }
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        for y in 0..p.h {
            let src = plane.as_ptr().add(y * p.w);
            let dst = out.add((y + pad) * per_row);
            if S == 1 {
                if V == 1 {
                    // The lanes past the row stay zero: they are the right padding.
                    let row = _mm512_maskz_mov_ps(lanes(p.w), prologue(_mm512_maskz_loadu_ps(lanes(p.w), src), pre));
                    for kx in 0..K {
                        _mm512_store_ps(dst.add(kx) as *mut f32, shift1(row, kx as isize - pad as isize));
                    }
                } else {
                    let (lo, hi) = (prologue(_mm512_loadu_ps(src), pre), prologue(_mm512_loadu_ps(src.add(16)), pre));
                    for kx in 0..K {
                        let (a, b) = shift2(lo, hi, kx as isize - pad as isize);
                        _mm512_store_ps(dst.add(2 * kx) as *mut f32, a);
                        _mm512_store_ps(dst.add(2 * kx + 1) as *mut f32, b);
                    }
                }
            } else {
                // Stride 2: output pixel x reads input column 2x + d, i.e. the even pixels shifted by d/2 for even d
                // and the odd ones by (d-1)/2 for odd d. A 16-pixel row leaves lanes 8.. of both at zero.
                let (even, odd) = if p.w == 32 {
                    let (lo, hi) = (prologue(_mm512_loadu_ps(src), pre), prologue(_mm512_loadu_ps(src.add(16)), pre));
                    (_mm512_permutex2var_ps(lo, evens, hi), _mm512_permutex2var_ps(lo, odds, hi))
                } else {
                    let row = prologue(_mm512_loadu_ps(src), pre);
                    (_mm512_maskz_permutexvar_ps(0x00ff, evens, row), _mm512_maskz_permutexvar_ps(0x00ff, odds, row))
                };
                for kx in 0..K {
                    let d = kx as isize - pad as isize;
                    let phase = if d.rem_euclid(2) == 0 { even } else { odd };
                    _mm512_store_ps(dst.add(kx) as *mut f32, shift1(phase, d.div_euclid(2)));
                }
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512F (a [`RowPlan`] of 16 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn correlate_rows<const K: usize, const V: usize, const R: usize>(
        p: &RowPlan,
        buf: &[Lane16],
        wk: &[f32],
        bias: f32,
        act: Act,
        out: &mut [f32],
    ) {
        kernels::correlate_rows::<__m512, K, V, R>(p, buf, wk, bias, act, out)
    }

    /// # Safety
    /// The CPU has AVX-512F (a [`RowPlan`] of 16 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad_rows<const K: usize, const V: usize>(
        p: &RowPlan,
        buf: &[Lane16],
        grad: &[f32],
        dw_acc: &mut [f64],
    ) {
        kernels::weight_grad_rows::<__m512, K, V>(p, buf, grad, dw_acc)
    }

    /// Stride-2 input gradient, R input rows of V vectors at a time (w = 16 V). Buffer row i holds gradient row
    /// i - 1 (rows -1 and oh are zeros), upsampled (pixel ox at 2 ox) and shifted for each tap column.
    ///
    /// # Safety
    /// The CPU has AVX-512F (a [`RowPlan`] of 16 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_s2<const K: usize, const V: usize, const R: usize>(
        p: &RowPlan,
        grad: &[f32],
        wk: &[f32],
        buf: &mut [Lane16],
        dx: &mut [f32],
    ) {
        let pad = (K - 1) / 2;
        let per_row = K * V;
        let rows = buf.as_mut_ptr() as *mut __m512;
        let zero = _mm512_setzero_ps();
        // Lane x of the upsampled row is gradient pixel x / 2 for even x, zero (index 16 of the pair) for odd x.
        let spread_lo = _mm512_setr_epi32(0, 16, 1, 16, 2, 16, 3, 16, 4, 16, 5, 16, 6, 16, 7, 16);
        let spread_hi = _mm512_setr_epi32(8, 16, 9, 16, 10, 16, 11, 16, 12, 16, 13, 16, 14, 16, 15, 16);
        for i in 0..p.oh + 2 {
            let dst = rows.add(i * per_row);
            if i == 0 || i == p.oh + 1 {
                for j in 0..per_row {
                    _mm512_store_ps(dst.add(j) as *mut f32, zero);
                }
                continue;
            }
            let g = _mm512_maskz_loadu_ps(lanes(p.ow), grad.as_ptr().add((i - 1) * p.ow));
            let lo = _mm512_permutex2var_ps(g, spread_lo, zero);
            // Tap column kx reads upsampled pixel x + pad - kx.
            for kx in 0..K {
                let d = pad as isize - kx as isize;
                if V == 1 {
                    _mm512_store_ps(dst.add(kx) as *mut f32, shift1(lo, d));
                } else {
                    let (a, b) = shift2(lo, _mm512_permutex2var_ps(g, spread_hi, zero), d);
                    _mm512_store_ps(dst.add(2 * kx) as *mut f32, a);
                    _mm512_store_ps(dst.add(2 * kx + 1) as *mut f32, b);
                }
            }
        }
        kernels::transpose_rows::<__m512, K, V, R>(p, rows as *const __m512, wk, dx)
    }
}

/// The same kernels with AVX2 + FMA (8 floats a vector), for CPUs without AVX-512. AVX2 has no rotation across
/// a whole vector, so each row goes into a small zero-margined array and its shifted copies are unaligned loads
/// from it (the buffer they are stored into stays aligned); stride 2 splits a row with two shuffles and a
/// permute per 16 pixels.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::kernels::{self, prologue, Lanes};
    use super::{Act, Lane16, Prologue, RowPlan};
    use std::arch::x86_64::*;

    // Each method is one AVX2/FMA intrinsic (or a short sequence); the trait states what the caller must ensure.
    impl Lanes for __m256 {
        const N: usize = 8;
        #[inline(always)]
        unsafe fn splat(x: f32) -> Self {
            _mm256_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn add(a: Self, b: Self) -> Self {
            _mm256_add_ps(a, b)
        }
        #[inline(always)]
        unsafe fn mul(a: Self, b: Self) -> Self {
            _mm256_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn max(a: Self, b: Self) -> Self {
            _mm256_max_ps(a, b)
        }
        #[inline(always)]
        unsafe fn min(a: Self, b: Self) -> Self {
            _mm256_min_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fmadd(a: Self, b: Self, c: Self) -> Self {
            _mm256_fmadd_ps(a, b, c)
        }
        // The row kernels' rows are whole vectors here (8, 16 or 32 pixels), so they always pass n >= 8 and take
        // the plain unaligned load or store (the branch is predicted perfectly); the masked one keeps the trait's
        // contract for a shorter n.
        #[inline(always)]
        unsafe fn load(p: *const f32, n: usize) -> Self {
            if n >= 8 {
                _mm256_loadu_ps(p)
            } else {
                _mm256_maskload_ps(p, first_lanes(n))
            }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self, n: usize) {
            if n >= 8 {
                _mm256_storeu_ps(p, v)
            } else {
                _mm256_maskstore_ps(p, first_lanes(n), v)
            }
        }
        #[inline(always)]
        unsafe fn sum(v: Self) -> f32 {
            let mut a = [0f32; 8];
            _mm256_storeu_ps(a.as_mut_ptr(), v);
            crate::kernels::hsum(a)
        }
    }

    /// The mask of `_mm256_maskload_ps` and `_mm256_maskstore_ps` for lanes below `n` (n < 8): all ones in those
    /// lanes (the instructions read each lane's sign bit), zeros above.
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    unsafe fn first_lanes(n: usize) -> __m256i {
        _mm256_cmpgt_epi32(_mm256_set1_epi32(n.min(8) as i32), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
    }

    /// Zeros before (and after) a row in its temporary array: at least the largest shift.
    const MARGIN: usize = 8;
    const ROW: usize = MARGIN + 32 + MARGIN;

    /// The even and the odd pixels of the 16 in [a, b].
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA (a [`RowPlan`] of 8 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[inline(always)]
    unsafe fn split(a: __m256, b: __m256) -> (__m256, __m256) {
        let even = _mm256_castps_pd(_mm256_shuffle_ps::<0x88>(a, b));
        let odd = _mm256_castps_pd(_mm256_shuffle_ps::<0xDD>(a, b));
        (_mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(even)), _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(odd)))
    }

    /// As the AVX-512 `shift_rows`, with V = ow / 8 vectors a row.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA (a [`RowPlan`] of 8 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn shift_rows<const K: usize, const S: usize, const V: usize>(
        p: &RowPlan,
        plane: &[f32],
        pre: Option<Prologue>,
        buf: &mut [Lane16],
    ) {
        let pad = (K - 1) / 2;
        let per_row = K * V;
        let out = buf.as_mut_ptr() as *mut __m256;
        let zero = _mm256_setzero_ps();
        for r in (0..pad).chain(p.h + pad..p.h + 2 * pad) {
            for i in 0..per_row {
                _mm256_store_ps(out.add(r * per_row + i) as *mut f32, zero);
            }
        }
        // The row (stride 2: its even pixels in `a`, its odd ones in `b`) between zero margins.
        let (mut a, mut b) = ([0f32; ROW], [0f32; ROW]);
        let (ta, tb) = (a.as_mut_ptr().add(MARGIN), b.as_mut_ptr().add(MARGIN));
        for y in 0..p.h {
            let src = plane.as_ptr().add(y * p.w);
            let dst = out.add((y + pad) * per_row);
            for j in 0..V {
                if S == 1 {
                    _mm256_storeu_ps(ta.add(8 * j), prologue(_mm256_loadu_ps(src.add(8 * j)), pre));
                } else {
                    let lo = prologue(_mm256_loadu_ps(src.add(16 * j)), pre);
                    let hi = prologue(_mm256_loadu_ps(src.add(16 * j + 8)), pre);
                    let (even, odd) = split(lo, hi);
                    _mm256_storeu_ps(ta.add(8 * j), even);
                    _mm256_storeu_ps(tb.add(8 * j), odd);
                }
            }
            for kx in 0..K {
                let d = kx as isize - pad as isize;
                // Stride 1: pixel x + d. Stride 2: input column 2x + d, i.e. even pixel x + d/2 or odd x + (d-1)/2.
                let (row, e) = if S == 1 {
                    (ta as *const f32, d)
                } else if d.rem_euclid(2) == 0 {
                    (ta as *const f32, d.div_euclid(2))
                } else {
                    (tb as *const f32, d.div_euclid(2))
                };
                for j in 0..V {
                    let v = _mm256_loadu_ps(row.offset(8 * j as isize + e));
                    _mm256_store_ps(dst.add(kx * V + j) as *mut f32, v);
                }
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA (a [`RowPlan`] of 8 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn correlate_rows<const K: usize, const V: usize, const R: usize>(
        p: &RowPlan,
        buf: &[Lane16],
        wk: &[f32],
        bias: f32,
        act: Act,
        out: &mut [f32],
    ) {
        // Whole vectors (RowPlan::new: ow is 8, 16 or 32 and V = ow / 8): the compiler then knows every store is
        // of 8 floats and drops the masked tail of `Lanes::store` from the loop.
        assert_eq!(p.ow, 8 * V, "AVX2 rows are whole vectors");
        kernels::correlate_rows::<__m256, K, V, R>(p, buf, wk, bias, act, out)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA (a [`RowPlan`] of 8 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_grad_rows<const K: usize, const V: usize>(
        p: &RowPlan,
        buf: &[Lane16],
        grad: &[f32],
        dw_acc: &mut [f64],
    ) {
        // As in `correlate_rows`: every load is of 8 floats, without the masked tail of `Lanes::load`.
        assert_eq!(p.ow, 8 * V, "AVX2 rows are whole vectors");
        kernels::weight_grad_rows::<__m256, K, V>(p, buf, grad, dw_acc)
    }

    /// Stride-2 input gradient, R input rows of V vectors at a time (w = 8 V), as the AVX-512 version.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA (a [`RowPlan`] of 8 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn transpose_s2<const K: usize, const V: usize, const R: usize>(
        p: &RowPlan,
        grad: &[f32],
        wk: &[f32],
        buf: &mut [Lane16],
        dx: &mut [f32],
    ) {
        let pad = (K - 1) / 2;
        let per_row = K * V;
        let rows = buf.as_mut_ptr() as *mut __m256;
        let zero = _mm256_setzero_ps();
        // The upsampled row: gradient pixel x at 2x, zeros between and in the margins (never written).
        let mut up = [0f32; ROW];
        let t = up.as_mut_ptr().add(MARGIN);
        for i in 0..p.oh + 2 {
            let dst = rows.add(i * per_row);
            if i == 0 || i == p.oh + 1 {
                for j in 0..per_row {
                    _mm256_store_ps(dst.add(j) as *mut f32, zero);
                }
                continue;
            }
            let g = grad.as_ptr().add((i - 1) * p.ow);
            for x in 0..p.ow {
                *t.add(2 * x) = *g.add(x);
            }
            for kx in 0..K {
                let d = pad as isize - kx as isize;
                for j in 0..V {
                    _mm256_store_ps(dst.add(kx * V + j) as *mut f32, _mm256_loadu_ps(t.offset(8 * j as isize + d)));
                }
            }
        }
        kernels::transpose_rows::<__m256, K, V, R>(p, rows as *const __m256, wk, dx)
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::kernels::Lanes;
    use std::arch::x86_64::*;

    /// `load(p, n)` and `store(p, v, n)` touch the first `n` floats only (all N when n >= N): the other lanes
    /// load as zeros, and the floats past n in memory are left as they were.
    ///
    /// # Safety
    /// The CPU has `L`'s vector unit (the callers are compiled for it and this inlines into them).
    #[inline(always)]
    unsafe fn check_partial<L: Lanes>() {
        let src: Vec<f32> = (1..=L::N).map(|i| i as f32).collect();
        for n in 0..=L::N + 1 {
            let k = n.min(L::N);
            let mut loaded = vec![-1f32; L::N];
            L::store(loaded.as_mut_ptr(), L::load(src.as_ptr(), n), L::N);
            assert_eq!(loaded[..k], src[..k], "load n = {n}");
            assert!(loaded[k..].iter().all(|&v| v == 0.0), "load n = {n}: {loaded:?}");
            let mut stored = vec![-1f32; L::N];
            L::store(stored.as_mut_ptr(), L::load(src.as_ptr(), L::N), n);
            assert_eq!(stored[..k], src[..k], "store n = {n}");
            assert!(stored[k..].iter().all(|&v| v == -1.0), "store n = {n}: {stored:?}");
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn check_avx2() {
        check_partial::<__m256>()
    }

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn check_avx512() {
        check_partial::<__m512>()
    }

    #[test]
    fn partial_loads_and_stores_touch_the_first_n_floats_only() {
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            unsafe { check_avx2() }
        }
        if is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked just above).
            unsafe { check_avx512() }
        }
    }
}
