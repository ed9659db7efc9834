//! Depthwise convolution one plane at a time with whole rows in vector registers (AVX-512, or AVX2 + FMA), for
//! 3x3 and 5x5 filters at stride 1 or 2 on planes up to [`MAX_WIDTH`] pixels wide: every plane of the CIFAR
//! layout and of photo-sized inputs up to 224 pixels (rows of 112, 56, 28, 14, 7 ... pixels).
//!
//! The general kernel ([`super::depthwise`]) reads every tap as an unaligned load from a zero-padded copy of
//! the plane, one per output vector and tap, most of them split across two cache lines, and computes the
//! padding columns too. Here each input row is loaded once and its k horizontally shifted copies are made in
//! registers (AVX-512: `valignd` of each vector with its neighbours, zeros past both ends of the row, which
//! also supply the padding; stride 2 first splits the row into its even and odd pixels with one permute each)
//! and kept in a small aligned buffer of *shifted rows*. Every output row is then k*k multiply-adds of aligned
//! vectors of that buffer, eight output rows at a time so that enough independent chains of multiply-adds are
//! in flight; bias and activation are applied before the single store (masked where a row ends inside a
//! vector). The same buffer gives the weight gradient (per tap, the dot product of the output gradient with the
//! shifted rows). The input gradient is, at stride 1, the forward of the output gradient with the filter
//! rotated by 180 degrees; at stride 2, the same sums over gradient rows first spread onto the even pixels.

use super::plane::{Geometry, Prologue};
use super::Act;

/// The widest plane the row kernel takes (a 224-pixel input's widest depthwise plane is 112 pixels).
pub(crate) const MAX_WIDTH: usize = 256;

/// The narrowest output row the row kernel takes: 7, the last planes of a 224-pixel input (there the row kernel
/// was the faster, `latency --si 2 --size 224 --batch 32`). Narrower planes (4 and 2 pixels at 32) fill too few
/// lanes of a vector, and the general kernel, which runs each tap over the whole plane as one span, was 1-4%
/// faster on them (`latency --batch 128`, large_0.25 and small_1.0, two passes).
pub(crate) const MIN_WIDTH: usize = 7;

/// Runs `$call` with the kernels of the plan's vector unit in scope: those of `avx2` for 8 lanes, else of
/// `avx512` (the two modules name their kernels alike), so that each dispatch table is written once.
#[cfg(target_arch = "x86_64")]
macro_rules! per_unit {
    ($lanes:expr, $call:expr) => {
        if $lanes == 8 {
            use avx2::*;
            $call
        } else {
            use avx512::*;
            $call
        }
    };
}

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
    /// Vectors per output row (the last one partly used where ow is not a multiple of `lanes`).
    v: usize,
    /// Vectors per input row (the stride-2 input gradient's upsampled rows).
    vw: usize,
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
        if !matches!(g.k, 3 | 5) || g.pad != (g.k - 1) / 2 || !matches!(g.stride, 1 | 2) || g.w > MAX_WIDTH {
            return None;
        }
        let (oh, ow) = (g.out_h(), g.out_w());
        // Stride 2 takes even sides only: input row y then feeds output rows (y + pad - ky) / 2 of one parity.
        if g.h != oh * g.stride || g.w != ow * g.stride || ow < MIN_WIDTH {
            return None;
        }
        Some(RowPlan {
            k: g.k,
            stride: g.stride,
            h: g.h,
            w: g.w,
            oh,
            ow,
            lanes,
            v: ow.div_ceil(lanes),
            vw: g.w.div_ceil(lanes),
        })
    }

    /// Vectors per output row: `VC` where the caller fixed it at compile time (1 or 2, the CIFAR planes, where
    /// the tiles are so small that constant offsets matter), else the plan's.
    #[inline(always)]
    fn vectors<const VC: usize>(&self) -> usize {
        if VC > 0 {
            VC
        } else {
            self.v
        }
    }

    /// Length in [`Lane16`]s of the shifted-row buffer: k shifted copies of each padded input row (or, for the
    /// input gradient at stride 2, of each upsampled gradient row).
    pub(crate) fn buffer_len(&self) -> usize {
        let upsampled = if self.stride == 2 { (self.oh + 2) * self.k * self.vw } else { 0 };
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
            per_unit!(
                self.lanes,
                match (self.k, self.stride, self.v) {
                    (3, 1, 1) => shift_rows::<3, 1, 1>(self, plane, pre, buf),
                    (3, 1, 2) => shift_rows::<3, 1, 2>(self, plane, pre, buf),
                    (3, 1, _) => shift_rows::<3, 1, 0>(self, plane, pre, buf),
                    (5, 1, 1) => shift_rows::<5, 1, 1>(self, plane, pre, buf),
                    (5, 1, 2) => shift_rows::<5, 1, 2>(self, plane, pre, buf),
                    (5, 1, _) => shift_rows::<5, 1, 0>(self, plane, pre, buf),
                    (3, _, 1) => shift_rows::<3, 2, 1>(self, plane, pre, buf),
                    (3, _, 2) => shift_rows::<3, 2, 2>(self, plane, pre, buf),
                    (3, _, _) => shift_rows::<3, 2, 0>(self, plane, pre, buf),
                    (5, _, 1) => shift_rows::<5, 2, 1>(self, plane, pre, buf),
                    (5, _, 2) => shift_rows::<5, 2, 2>(self, plane, pre, buf),
                    _ => shift_rows::<5, 2, 0>(self, plane, pre, buf),
                }
            )
        }
        #[cfg(not(target_arch = "x86_64"))]
        unreachable!("a RowPlan exists only on x86-64 with AVX2 or AVX-512")
    }

    /// out (oh x ow) = act(bias + the correlation of the shifted plane with the k x k filter `wk`).
    #[inline]
    pub(crate) fn correlate(&self, buf: &[Lane16], wk: &[f32], bias: f32, act: Act, out: &mut [f32]) {
        self.correlate_planes([buf], wk, &[bias], act, 0..self.oh, &mut [out])
    }

    /// For each output plane o (one per bias): rows `rows` of act(bias[o] + the sum over C input planes of each
    /// one's correlation with its k x k filter), `bufs` the input planes' shifted rows, `w` each output's C
    /// filters after the previous output's, into `outs[o]` (which starts at the first of `rows`). C = 1 is a
    /// depthwise convolution, C = 3 with 16 outputs the stem. Each column of vectors is done for every output
    /// before the next, while the input rows it reads are in the L1 cache.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn correlate_planes<const C: usize>(
        &self,
        bufs: [&[Lane16]; C],
        w: &[f32],
        bias: &[f32],
        act: Act,
        rows: std::ops::Range<usize>,
        outs: &mut [&mut [f32]],
    ) {
        let outputs = bias.len();
        assert!(bufs.iter().all(|b| b.len() >= self.buffer_len()) && w.len() >= outputs * C * self.k * self.k);
        assert!(rows.start <= rows.end && rows.end <= self.oh && outputs > 0);
        assert!(outs.len() == outputs && outs.iter().all(|o| o.len() >= rows.len() * self.ow));
        // SAFETY: as in `shift`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            per_unit!(
                self.lanes,
                match (self.k, self.v) {
                    (3, 1) => correlate_rows::<3, C, 1>(self, bufs, w, bias, act, rows, outs),
                    (3, 2) => correlate_rows::<3, C, 2>(self, bufs, w, bias, act, rows, outs),
                    (3, _) => correlate_rows::<3, C, 0>(self, bufs, w, bias, act, rows, outs),
                    (_, 1) => correlate_rows::<5, C, 1>(self, bufs, w, bias, act, rows, outs),
                    (_, 2) => correlate_rows::<5, C, 2>(self, bufs, w, bias, act, rows, outs),
                    _ => correlate_rows::<5, C, 0>(self, bufs, w, bias, act, rows, outs),
                }
            )
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
            per_unit!(
                self.lanes,
                match (self.k, self.v) {
                    (3, 1) => weight_grad_rows::<3, 1>(self, buf, grad, dw_acc),
                    (3, 2) => weight_grad_rows::<3, 2>(self, buf, grad, dw_acc),
                    (3, _) => weight_grad_rows::<3, 0>(self, buf, grad, dw_acc),
                    (_, 1) => weight_grad_rows::<5, 1>(self, buf, grad, dw_acc),
                    (_, 2) => weight_grad_rows::<5, 2>(self, buf, grad, dw_acc),
                    _ => weight_grad_rows::<5, 0>(self, buf, grad, dw_acc),
                }
            )
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
            per_unit!(
                self.lanes,
                match self.k {
                    3 => transpose_s2::<3>(self, grad, wk, buf, dx),
                    _ => transpose_s2::<5>(self, grad, wk, buf, dx),
                }
            )
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
    use super::{Act, Prologue, RowPlan};

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
        /// `v` with the lanes from `n` on set to zero (none when n >= N).
        ///
        /// # Safety
        /// The CPU has the implementing vector unit (AVX-512F for `__m512`, AVX2 and FMA for `__m256`).
        unsafe fn keep(v: Self, n: usize) -> Self;
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

    /// The first `n` pixels at `p` through the prologue, zeros in the lanes from `n` on (the row's padding: the
    /// prologue of a zero is not zero in general).
    ///
    /// # Safety
    /// The CPU has `L`'s vector unit, and `p` is valid for reading the first `min(n, N)` floats.
    #[inline(always)]
    pub(super) unsafe fn load_row<L: Lanes>(p: *const f32, n: usize, pre: Option<Prologue>) -> L {
        if n >= L::N {
            prologue(L::load(p, L::N), pre)
        } else {
            L::keep(prologue(L::load(p, n), pre), n)
        }
    }

    /// Output rows `rows` in tiles of 8 (then 4, 2, 1 for what is left), one vector of each row at a time:
    /// eight independent chains of multiply-adds whatever the width of the plane; each column of a tile for every
    /// output plane (one per bias) in turn. Each output sums C input planes' shifted rows (`planes`), each with
    /// its own k x k filter (`w`: C filters per output, output after output); output o's rows go to `outs[o]`,
    /// from the first of `rows` on.
    ///
    /// # Safety
    /// The CPU has `L`'s vector unit, and the pointers and `outs` cover what the plan reads and writes: each
    /// shifted-row buffer at least [`RowPlan::buffer_len`] long, each of `outs` (one per bias) at least
    /// rows.len() x ow, rows within oh (as the safe `RowPlan` methods assert before they dispatch here).
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(super) unsafe fn correlate_rows<L: Lanes, const K: usize, const C: usize, const VC: usize>(
        p: &RowPlan,
        planes: [*const L; C],
        w: &[f32],
        bias: &[f32],
        act: Act,
        rows: std::ops::Range<usize>,
        outs: &mut [&mut [f32]],
    ) {
        let tile = Tile { p, planes, act, first: rows.start };
        let (v, per_output) = (p.vectors::<VC>(), C * K * K);
        let mut oy = rows.start;
        macro_rules! tiles {
            ($r:literal) => {
                for j in 0..v {
                    for (o, (&b, out)) in bias.iter().zip(outs.iter_mut()).enumerate() {
                        let wk = w.get_unchecked(o * per_output..(o + 1) * per_output);
                        tile.column::<K, $r, VC>(oy, j, wk, b, out.as_mut_ptr());
                    }
                }
            };
        }
        while oy + 8 <= rows.end {
            tiles!(8);
            oy += 8;
        }
        if oy + 4 <= rows.end {
            tiles!(4);
            oy += 4;
        }
        if oy + 2 <= rows.end {
            tiles!(2);
            oy += 2;
        }
        if oy < rows.end {
            tiles!(1);
        }
    }

    /// What every tile of [`correlate_rows`] shares.
    struct Tile<'a, L, const C: usize> {
        p: &'a RowPlan,
        planes: [*const L; C],
        act: Act,
        /// The output row the output planes' pointers start at.
        first: usize,
    }

    impl<L: Lanes, const C: usize> Tile<'_, L, C> {
        /// Vector j of output rows oy..oy + R of one output plane (filters `wk`, rows from `out`).
        ///
        /// # Safety
        /// As [`correlate_rows`], with oy + R within its rows and j < v.
        #[inline(always)]
        unsafe fn column<const K: usize, const R: usize, const VC: usize>(
            &self,
            oy: usize,
            j: usize,
            wk: &[f32],
            bias: f32,
            out: *mut f32,
        ) {
            let p = self.p;
            let v = p.vectors::<VC>();
            let per_row = K * v;
            let mut acc = [L::splat(bias); R];
            for (c, plane) in self.planes.iter().enumerate() {
                for ky in 0..K {
                    for kx in 0..K {
                        let w = L::splat(*wk.get_unchecked((c * K + ky) * K + kx));
                        for (r, a) in acc.iter_mut().enumerate() {
                            let src = plane.add(((oy + r) * p.stride + ky) * per_row + kx * v + j);
                            *a = L::fmadd(w, *src, *a);
                        }
                    }
                }
            }
            for (r, a) in acc.iter().enumerate() {
                let dst = out.add((oy + r - self.first) * p.ow + L::N * j);
                L::store(dst, activate(*a, self.act), p.ow - L::N * j);
            }
        }
    }

    /// Two sets of K sums (even and odd output rows) per filter row, so that 2K chains are in flight.
    ///
    /// # Safety
    /// As [`correlate_rows`], with `grad` at least oh x ow.
    #[inline(always)]
    pub(super) unsafe fn weight_grad_rows<L: Lanes, const K: usize, const VC: usize>(
        p: &RowPlan,
        rows: *const L,
        grad: &[f32],
        dw_acc: &mut [f64],
    ) {
        let v = p.vectors::<VC>();
        let per_row = K * v;
        // Output row oy's products with filter row ky, added into `sums`.
        let row = |sums: &mut [L; K], oy: usize, ky: usize| {
            let src = rows.add((oy * p.stride + ky) * per_row);
            for j in 0..v {
                // Lanes past the row load as zeros (the shifted rows there are zeros too).
                let g = L::load(grad.as_ptr().add(oy * p.ow + L::N * j), p.ow - L::N * j);
                for (kx, a) in sums.iter_mut().enumerate() {
                    *a = L::fmadd(g, *src.add(kx * v + j), *a);
                }
            }
        };
        for ky in 0..K {
            let (mut even, mut odd) = ([L::splat(0.0); K], [L::splat(0.0); K]);
            let mut oy = 0;
            while oy + 2 <= p.oh {
                row(&mut even, oy, ky);
                row(&mut odd, oy + 1, ky);
                oy += 2;
            }
            if oy < p.oh {
                row(&mut even, oy, ky);
            }
            for kx in 0..K {
                dw_acc[ky * K + kx] += L::sum(L::add(even[kx], odd[kx])) as f64;
            }
        }
    }

    /// The stride-2 input gradient from the upsampled, shifted gradient rows (buffer row i holds gradient row
    /// i - 1, in `p.vw` vectors), in tiles of 8 input rows (then 2: h is even), one vector at a time.
    ///
    /// # Safety
    /// As [`correlate_rows`], with `dx` at least h x w.
    #[inline(always)]
    pub(super) unsafe fn transpose_rows<L: Lanes, const K: usize>(
        p: &RowPlan,
        rows: *const L,
        wk: &[f32],
        dx: &mut [f32],
    ) {
        let mut y = 0;
        while y + 8 <= p.h {
            transpose_tile::<L, K, 8>(p, rows, wk, dx, y);
            y += 8;
        }
        while y < p.h {
            transpose_tile::<L, K, 2>(p, rows, wk, dx, y);
            y += 2;
        }
    }

    /// Input rows y..y + R (y and R even).
    ///
    /// # Safety
    /// As [`transpose_rows`], with y + R <= h.
    #[inline(always)]
    unsafe fn transpose_tile<L: Lanes, const K: usize, const R: usize>(
        p: &RowPlan,
        rows: *const L,
        wk: &[f32],
        dx: &mut [f32],
        y: usize,
    ) {
        for j in 0..p.vw {
            let mut acc = [L::splat(0.0); R];
            // Row y + r takes filter row ky when y + r + pad - ky is even; y is even, so that depends on r and on
            // the parity of ky only, which the two passes make a constant.
            accumulate_s2::<L, K, R, 0>(p, rows.add(j), wk, y, &mut acc);
            accumulate_s2::<L, K, R, 1>(p, rows.add(j), wk, y, &mut acc);
            for (r, a) in acc.iter().enumerate() {
                L::store(dx.as_mut_ptr().add((y + r) * p.w + L::N * j), *a, p.w - L::N * j);
            }
        }
    }

    /// The filter rows ky of parity PAR, for input rows y..y + R (y even), at the column of vectors `rows`
    /// points to.
    ///
    /// # Safety
    /// As [`transpose_tile`].
    #[inline(always)]
    unsafe fn accumulate_s2<L: Lanes, const K: usize, const R: usize, const PAR: usize>(
        p: &RowPlan,
        rows: *const L,
        wk: &[f32],
        y: usize,
        acc: &mut [L; R],
    ) {
        let pad = (K - 1) / 2;
        let per_row = K * p.vw;
        let mut ky = PAR;
        while ky < K {
            for kx in 0..K {
                let w = L::splat(*wk.get_unchecked(ky * K + kx));
                for (r, a) in acc.iter_mut().enumerate() {
                    if !(r + pad + PAR).is_multiple_of(2) {
                        continue;
                    }
                    // Gradient row (y + r + pad - ky) / 2, at buffer row one below.
                    let i = (y + r + pad + 2 - ky) / 2;
                    *a = L::fmadd(w, *rows.add(i * per_row + kx * p.vw), *a);
                }
            }
            ky += 2;
        }
    }
}

/// The AVX-512 kernels; [`RowPlan::new`] only returns a plan where they can run.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::kernels::{self, load_row, Lanes};
    use super::{Act, Lane16, Prologue, RowPlan, MAX_WIDTH};
    use std::arch::x86_64::*;

    /// A row's vectors with a zero vector on each side: at most [`MAX_WIDTH`] / 16, plus the two ends and one
    /// spare for the stride-2 gradient's upsampling, which writes vectors in pairs.
    const ROW_VECTORS: usize = MAX_WIDTH / 16 + 3;

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
            if n >= 16 {
                _mm512_loadu_ps(p)
            } else {
                _mm512_maskz_loadu_ps(lanes(n), p)
            }
        }
        #[inline(always)]
        unsafe fn store(p: *mut f32, v: Self, n: usize) {
            if n >= 16 {
                _mm512_storeu_ps(p, v)
            } else {
                _mm512_mask_storeu_ps(p, lanes(n), v)
            }
        }
        #[inline(always)]
        unsafe fn keep(v: Self, n: usize) -> Self {
            _mm512_maskz_mov_ps(lanes(n), v)
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

    /// The vector `cur` of a row shifted by d pixels (|d| <= 2): lane i holds pixel i + d, taken from the
    /// neighbouring vector `prev` or `next` where it falls outside `cur`.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[inline(always)]
    unsafe fn shifted(prev: __m512, cur: __m512, next: __m512, d: isize) -> __m512 {
        let (p, c, n) = (_mm512_castps_si512(prev), _mm512_castps_si512(cur), _mm512_castps_si512(next));
        _mm512_castsi512_ps(match d {
            -2 => _mm512_alignr_epi32::<14>(c, p),
            -1 => _mm512_alignr_epi32::<15>(c, p),
            1 => _mm512_alignr_epi32::<1>(n, c),
            2 => _mm512_alignr_epi32::<2>(n, c),
            _ => c,
        })
    }

    /// buf[(y + pad) * K * v + kx * v + j] = vector j of input row y (through `pre`) shifted for tap column kx
    /// (stride 2: of the row's even or odd pixels); the pad rows above and below are zeros.
    ///
    /// # Safety
    /// The CPU has AVX-512F (a [`RowPlan`] of 16 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn shift_rows<const K: usize, const S: usize, const VC: usize>(
        p: &RowPlan,
        plane: &[f32],
        pre: Option<Prologue>,
        buf: &mut [Lane16],
    ) {
        let (pad, v) = ((K - 1) / 2, p.vectors::<VC>());
        let per_row = K * v;
        let out = buf.as_mut_ptr() as *mut __m512;
        let zero = _mm512_setzero_ps();
        for r in (0..pad).chain(p.h + pad..p.h + 2 * pad) {
            for i in 0..per_row {
                _mm512_store_ps(out.add(r * per_row + i) as *mut f32, zero);
            }
        }
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
        // Vector j of the row (stride 2: of its even pixels) at 1 + j, of its odd pixels in `odd`; zeros at both
        // ends, which the loads below never overwrite.
        let (mut even, mut odd) = ([zero; ROW_VECTORS], [zero; ROW_VECTORS]);
        for y in 0..p.h {
            let src = plane.as_ptr().add(y * p.w);
            for j in 0..v {
                if S == 1 {
                    even[1 + j] = load_row(src.add(16 * j), p.w - 16 * j, pre);
                } else {
                    // Output pixels 16j.. read input pixels 32j..; w = 2 ow, so 32j < w.
                    let left = p.w - 32 * j;
                    let lo: __m512 = load_row(src.add(32 * j), left, pre);
                    let hi = if left > 16 { load_row(src.add(32 * j + 16), left - 16, pre) } else { zero };
                    even[1 + j] = _mm512_permutex2var_ps(lo, evens, hi);
                    odd[1 + j] = _mm512_permutex2var_ps(lo, odds, hi);
                }
            }
            let dst = out.add((y + pad) * per_row);
            for kx in 0..K {
                // Stride 1: pixel x + d. Stride 2: input column 2x + d, i.e. even pixel x + d/2 or odd x + (d-1)/2.
                let d = kx as isize - pad as isize;
                let (row, e) =
                    if S == 1 || d.rem_euclid(2) == 0 { (&even, d / S as isize) } else { (&odd, d.div_euclid(2)) };
                for j in 0..v {
                    _mm512_store_ps(dst.add(kx * v + j) as *mut f32, shifted(row[j], row[j + 1], row[j + 2], e));
                }
            }
        }
    }

    /// # Safety
    /// The CPU has AVX-512F (a [`RowPlan`] of 16 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn correlate_rows<const K: usize, const C: usize, const VC: usize>(
        p: &RowPlan,
        bufs: [&[Lane16]; C],
        w: &[f32],
        bias: &[f32],
        act: Act,
        rows: std::ops::Range<usize>,
        outs: &mut [&mut [f32]],
    ) {
        let planes = bufs.map(|b| b.as_ptr() as *const __m512);
        kernels::correlate_rows::<__m512, K, C, VC>(p, planes, w, bias, act, rows, outs)
    }

    /// # Safety
    /// The CPU has AVX-512F (a [`RowPlan`] of 16 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn weight_grad_rows<const K: usize, const VC: usize>(
        p: &RowPlan,
        buf: &[Lane16],
        grad: &[f32],
        dw_acc: &mut [f64],
    ) {
        kernels::weight_grad_rows::<__m512, K, VC>(p, buf.as_ptr() as *const __m512, grad, dw_acc)
    }

    /// Stride-2 input gradient. Buffer row i holds gradient row i - 1 (rows -1 and oh are zeros), upsampled
    /// (pixel ox at 2 ox) and shifted for each tap column, in `vw` vectors.
    ///
    /// # Safety
    /// The CPU has AVX-512F (a [`RowPlan`] of 16 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn transpose_s2<const K: usize>(
        p: &RowPlan,
        grad: &[f32],
        wk: &[f32],
        buf: &mut [Lane16],
        dx: &mut [f32],
    ) {
        let (pad, vw) = ((K - 1) / 2, p.vw);
        let per_row = K * vw;
        let rows = buf.as_mut_ptr() as *mut __m512;
        let zero = _mm512_setzero_ps();
        // Lane x of the upsampled row is gradient pixel x / 2 for even x, zero (index 16 of the pair) for odd x.
        let spread_lo = _mm512_setr_epi32(0, 16, 1, 16, 2, 16, 3, 16, 4, 16, 5, 16, 6, 16, 7, 16);
        let spread_hi = _mm512_setr_epi32(8, 16, 9, 16, 10, 16, 11, 16, 12, 16, 13, 16, 14, 16, 15, 16);
        // Upsampled vector m at 1 + m, zeros at both ends. Gradient vector j gives upsampled vectors 2j and 2j + 1;
        // the last of these may lie one past the row (vw <= 2v <= vw + 1), where its pixels are zeros.
        let mut up = [zero; ROW_VECTORS];
        for i in 0..p.oh + 2 {
            let dst = rows.add(i * per_row);
            if i == 0 || i == p.oh + 1 {
                for j in 0..per_row {
                    _mm512_store_ps(dst.add(j) as *mut f32, zero);
                }
                continue;
            }
            for j in 0..p.v {
                let g = <__m512 as Lanes>::load(grad.as_ptr().add((i - 1) * p.ow + 16 * j), p.ow - 16 * j);
                up[1 + 2 * j] = _mm512_permutex2var_ps(g, spread_lo, zero);
                up[2 + 2 * j] = _mm512_permutex2var_ps(g, spread_hi, zero);
            }
            // Tap column kx reads upsampled pixel x + pad - kx.
            for kx in 0..K {
                let d = pad as isize - kx as isize;
                for m in 0..vw {
                    _mm512_store_ps(dst.add(kx * vw + m) as *mut f32, shifted(up[m], up[m + 1], up[m + 2], d));
                }
            }
        }
        kernels::transpose_rows::<__m512, K>(p, rows as *const __m512, wk, dx)
    }
}

/// The same kernels with AVX2 + FMA (8 floats a vector), for CPUs without AVX-512. AVX2 has no rotation across
/// a whole vector, so each row goes into a small zero-margined array and its shifted copies are unaligned loads
/// from it (the buffer they are stored into stays aligned); stride 2 splits a row with two shuffles and a
/// permute per 16 pixels.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::kernels::{self, load_row, Lanes};
    use super::{Act, Lane16, Prologue, RowPlan, MAX_WIDTH};
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
        unsafe fn keep(v: Self, n: usize) -> Self {
            if n >= 8 {
                v
            } else {
                _mm256_and_ps(v, _mm256_castsi256_ps(first_lanes(n)))
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
    /// A row's temporary array: the margins, the widest row, and the last vector's floats past it.
    const ROW: usize = MARGIN + MAX_WIDTH + 16 + MARGIN;

    /// The even and the odd pixels of the 16 in [a, b].
    ///
    /// # Safety
    /// The CPU has AVX2.
    #[inline(always)]
    unsafe fn split(a: __m256, b: __m256) -> (__m256, __m256) {
        let even = _mm256_castps_pd(_mm256_shuffle_ps::<0x88>(a, b));
        let odd = _mm256_castps_pd(_mm256_shuffle_ps::<0xDD>(a, b));
        (_mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(even)), _mm256_castpd_ps(_mm256_permute4x64_pd::<0xD8>(odd)))
    }

    /// As the AVX-512 `shift_rows`, with 8 floats a vector.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA (a [`RowPlan`] of 8 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn shift_rows<const K: usize, const S: usize, const VC: usize>(
        p: &RowPlan,
        plane: &[f32],
        pre: Option<Prologue>,
        buf: &mut [Lane16],
    ) {
        let (pad, v) = ((K - 1) / 2, p.vectors::<VC>());
        let per_row = K * v;
        let out = buf.as_mut_ptr() as *mut __m256;
        let zero = _mm256_setzero_ps();
        for r in (0..pad).chain(p.h + pad..p.h + 2 * pad) {
            for i in 0..per_row {
                _mm256_store_ps(out.add(r * per_row + i) as *mut f32, zero);
            }
        }
        // The row (stride 2: its even pixels in `a`, its odd ones in `b`) between zero margins. Every row writes
        // the same v vectors, zeros past its end included, so the margins stay zero.
        let (mut a, mut b) = ([0f32; ROW], [0f32; ROW]);
        let (ta, tb) = (a.as_mut_ptr().add(MARGIN), b.as_mut_ptr().add(MARGIN));
        for y in 0..p.h {
            let src = plane.as_ptr().add(y * p.w);
            for j in 0..v {
                if S == 1 {
                    _mm256_storeu_ps(ta.add(8 * j), load_row(src.add(8 * j), p.w - 8 * j, pre));
                } else {
                    let left = p.w - 16 * j;
                    let lo = load_row(src.add(16 * j), left, pre);
                    let hi = if left > 8 { load_row(src.add(16 * j + 8), left - 8, pre) } else { zero };
                    let (even, odd) = split(lo, hi);
                    _mm256_storeu_ps(ta.add(8 * j), even);
                    _mm256_storeu_ps(tb.add(8 * j), odd);
                }
            }
            let dst = out.add((y + pad) * per_row);
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
                for j in 0..v {
                    let x = _mm256_loadu_ps(row.offset(8 * j as isize + e));
                    _mm256_store_ps(dst.add(kx * v + j) as *mut f32, x);
                }
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2 and FMA (a [`RowPlan`] of 8 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn correlate_rows<const K: usize, const C: usize, const VC: usize>(
        p: &RowPlan,
        bufs: [&[Lane16]; C],
        w: &[f32],
        bias: &[f32],
        act: Act,
        rows: std::ops::Range<usize>,
        outs: &mut [&mut [f32]],
    ) {
        let planes = bufs.map(|b| b.as_ptr() as *const __m256);
        kernels::correlate_rows::<__m256, K, C, VC>(p, planes, w, bias, act, rows, outs)
    }

    /// # Safety
    /// The CPU has AVX2 and FMA (a [`RowPlan`] of 8 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn weight_grad_rows<const K: usize, const VC: usize>(
        p: &RowPlan,
        buf: &[Lane16],
        grad: &[f32],
        dw_acc: &mut [f64],
    ) {
        kernels::weight_grad_rows::<__m256, K, VC>(p, buf.as_ptr() as *const __m256, grad, dw_acc)
    }

    /// Stride-2 input gradient, as the AVX-512 version.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA (a [`RowPlan`] of 8 lanes exists only then), and the slices are
    /// as long as the plan needs (the safe `RowPlan` methods assert it before they call this).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn transpose_s2<const K: usize>(
        p: &RowPlan,
        grad: &[f32],
        wk: &[f32],
        buf: &mut [Lane16],
        dx: &mut [f32],
    ) {
        let (pad, vw) = ((K - 1) / 2, p.vw);
        let per_row = K * vw;
        let rows = buf.as_mut_ptr() as *mut __m256;
        let zero = _mm256_setzero_ps();
        // The upsampled row: gradient pixel x at 2x, zeros between, past the row and in the margins.
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
            for j in 0..p.v {
                let g = <__m256 as Lanes>::load(grad.as_ptr().add((i - 1) * p.ow + 8 * j), p.ow - 8 * j);
                // [g0 0 g1 0 | g4 0 g5 0] and [g2 0 g3 0 | g6 0 g7 0], then their low and their high halves.
                let (l, h) = (_mm256_unpacklo_ps(g, zero), _mm256_unpackhi_ps(g, zero));
                _mm256_storeu_ps(t.add(16 * j), _mm256_permute2f128_ps::<0x20>(l, h));
                _mm256_storeu_ps(t.add(16 * j + 8), _mm256_permute2f128_ps::<0x31>(l, h));
            }
            for kx in 0..K {
                let d = pad as isize - kx as isize;
                for m in 0..vw {
                    _mm256_store_ps(dst.add(kx * vw + m) as *mut f32, _mm256_loadu_ps(t.offset(8 * m as isize + d)));
                }
            }
        }
        kernels::transpose_rows::<__m256, K>(p, rows as *const __m256, wk, dx)
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
