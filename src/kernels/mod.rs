//! Hand-written CPU kernels over plain `f32` slices in NCHW layout. They know nothing of candle; `crate::exec::graph::ops`
//! wraps them as candle custom ops with their backward passes.
//!
//! Parallelism: rayon over independent planes or channels, so each task owns a disjoint part of the output.

/// Evaluates the expression (or block) compiled for the widest vector unit the CPU has: [`with_simd`] on a
/// closure that is always inlined into its target-feature wrappers. Kernels use this, never `with_simd` itself:
/// a closure that LLVM compiles on its own gets the crate's baseline target (SSE2), whatever the caller enables.
macro_rules! simd {
    ($($body:tt)*) => {
        $crate::kernels::with_simd(#[inline(always)] || $($body)*)
    };
}
pub(crate) use simd;

pub mod batchnorm;
#[cfg(feature = "cuda")]
pub(crate) mod cuda;
#[cfg(all(test, feature = "cuda"))]
mod cuda_tests;
pub mod dense;
pub mod depthwise;
pub(crate) mod depthwise_rows;
pub mod loss;
pub mod plane;
pub mod profile;
pub(crate) mod stem;

/// The activation fused into a kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    None,
    Relu,
    /// x * relu6(x + 3) / 6
    HardSwish,
}

impl Act {
    #[inline(always)]
    pub(crate) fn apply(self, z: f32) -> f32 {
        match self {
            Act::None => z,
            Act::Relu => z.max(0.0),
            Act::HardSwish => z * (z + 3.0).clamp(0.0, 6.0) * (1.0 / 6.0),
        }
    }

    /// d act / d z, with PyTorch's conventions at the kinks (ReLU'(0) = 0; relu6' is 0 at 0 and 6).
    #[inline(always)]
    pub(crate) fn derivative(self, z: f32) -> f32 {
        match self {
            Act::None => 1.0,
            Act::Relu => {
                if z > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
            Act::HardSwish => {
                if z < -3.0 {
                    0.0
                } else if z > 3.0 {
                    1.0
                } else {
                    // d/dz [z (z+3)/6] = (2z + 3)/6; at exactly ±3 PyTorch's literal formula gives the same limits
                    // up to the relu6 kink convention, which random data never hits.
                    (2.0 * z + 3.0) * (1.0 / 6.0)
                }
            }
        }
    }
}

/// An output buffer for a kernel that overwrites it in full.
///
/// A fresh buffer would be zeroed for nothing: at batch 128 that is one more pass over memory per layer
/// (measured: a training step 4-19% slower), and leaving it uninitialised is undefined behaviour. So the
/// executors hand their buffers back when a step or a forward pass is done ([`recycle`]) and the next one takes
/// them from here: after the first step of a run, no buffer is zeroed or fresh from the allocator. Buffers
/// under 16 KiB are simply zeroed (in cache, it costs nothing measurable). Buffers under 1 MiB (one image's
/// activations in the inference plan) are kept per thread, so that a thread gets back memory that is still in
/// its core's cache; larger ones (a batch's, in training) in one pool for all threads.
pub(crate) fn output_buffer(len: usize) -> Vec<f32> {
    let reused = if len < POOLED_MIN {
        None
    } else if len < PER_THREAD_MAX {
        LOCAL_POOL.with(|p| p.borrow_mut().take(len))
    } else {
        shared_pool().lock().ok().and_then(|mut p| p.take(len))
    };
    reused.unwrap_or_else(|| vec![0.0; len])
}

/// Gives a buffer that [`output_buffer`] handed out back for reuse. Only such buffers may come back: the pools
/// are keyed by length, and a length no executor asks for again would only take memory.
pub(crate) fn recycle(v: Vec<f32>) {
    if v.len() < POOLED_MIN {
        return;
    }
    if v.len() < PER_THREAD_MAX {
        LOCAL_POOL.with(|p| p.borrow_mut().put(v, LOCAL_POOL_MAX_BYTES));
    } else if let Ok(mut p) = shared_pool().lock() {
        p.put(v, SHARED_POOL_MAX_BYTES);
    }
}

/// Buffers shorter than this (16 KiB) are not pooled.
const POOLED_MIN: usize = 4096;
/// Buffers shorter than this (1 MiB) are pooled per thread.
const PER_THREAD_MAX: usize = 1 << 18;
const LOCAL_POOL_MAX_BYTES: usize = 64 << 20;
/// The most the shared pool keeps (a large_1.0 training step at batch 128 hands back about 1.5 GiB); beyond
/// it, returned buffers are freed.
const SHARED_POOL_MAX_BYTES: usize = 3 << 30;

#[derive(Default)]
struct BufferPool {
    by_len: std::collections::HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

impl BufferPool {
    fn take(&mut self, len: usize) -> Option<Vec<f32>> {
        let v = self.by_len.get_mut(&len)?.pop()?;
        self.bytes -= len * 4;
        Some(v)
    }

    fn put(&mut self, v: Vec<f32>, max_bytes: usize) {
        if self.bytes + v.len() * 4 <= max_bytes {
            self.bytes += v.len() * 4;
            self.by_len.entry(v.len()).or_default().push(v);
        }
    }
}

thread_local! {
    static LOCAL_POOL: std::cell::RefCell<BufferPool> = std::cell::RefCell::new(BufferPool::default());
}

fn shared_pool() -> &'static std::sync::Mutex<BufferPool> {
    static POOL: std::sync::OnceLock<std::sync::Mutex<BufferPool>> = std::sync::OnceLock::new();
    POOL.get_or_init(Default::default)
}

/// Runs `f` on a thread of rayon's pool (at once, if this is one already).
///
/// Every layer is a parallel loop. Started from a thread outside the pool, each loop queues its work, wakes
/// the pool's threads and sleeps until they finish: two context switches per layer, which made a batch-1
/// forward of small 0.25 take 1.5 ms instead of 0.55 ms. Started from inside, the calling thread does its
/// share and hands the rest to the other threads through their work queues.
pub(crate) fn on_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::scope(|_| f())
    }
}

/// The batch split into one contiguous range of images per thread: for reductions where each thread sums its
/// own images into a partial result, reading memory in order.
pub(crate) fn image_ranges(n: usize) -> Vec<std::ops::Range<usize>> {
    let parts = rayon::current_num_threads().clamp(1, n.max(1));
    let per = n.div_ceil(parts);
    (0..parts).map(|p| p * per..((p + 1) * per).min(n)).collect()
}

/// The sum of `v` in 16 independent lanes: `iter().sum()` adds one float at a time (the compiler may not
/// reorder float additions), a chain of dependent adds that costs four cycles per element.
#[inline(always)]
pub(crate) fn lane_sum(v: &[f32]) -> f32 {
    let mut lanes = [0f32; 16];
    let mut chunks = v.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            lanes[l] += c[l];
        }
    }
    hsum(lanes) + chunks.remainder().iter().sum::<f32>()
}

/// The sum of N lanes (a power of two) as a tree of vector adds: `iter().sum()` over the lanes would be N
/// dependent adds, several times the cost of the loop that filled them on a small plane.
#[inline(always)]
pub(crate) fn hsum<const N: usize>(mut lanes: [f32; N]) -> f32 {
    let mut n = N;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            lanes[i] += lanes[i + n];
        }
    }
    lanes[0]
}

/// dst += src, elementwise, in parallel (the residual connection and its gradient).
pub(crate) fn add_assign(dst: &mut [f32], src: &[f32]) {
    use rayon::prelude::*;
    dst.par_chunks_mut(4096)
        .zip(src.par_chunks(4096))
        .for_each(|(o, x)| simd!(o.iter_mut().zip(x).for_each(|(o, x)| *o += x)));
}

/// Runs `f` compiled for the widest vector unit the CPU has (checked once): AVX-512 (16 floats), else AVX2 +
/// FMA (8 floats), else the baseline target.
///
/// Call it through [`simd!`], which marks the closure `#[inline(always)]`, and give it only `#[inline(always)]`
/// code: the closure is called from three places here, so LLVM does not inline a large one on its own, and a
/// closure compiled on its own gets the crate's baseline target (SSE2, 4 floats) whatever the caller enables.
/// The crate itself builds for baseline x86-64 so the binary runs on any machine.
#[inline(always)]
pub(crate) fn with_simd<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        match simd_level() {
            3 => {
                /// # Safety
                /// The CPU supports AVX-512F, AVX2 and FMA.
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
                    f()
                }
                // SAFETY: the CPU supports AVX-512F, AVX2 and FMA (checked in `simd_level`).
                return unsafe { run(f) };
            }
            2 => {
                /// # Safety
                /// The CPU supports AVX2 and FMA.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
                    f()
                }
                // SAFETY: the CPU supports AVX2 and FMA (checked in `simd_level`).
                return unsafe { run(f) };
            }
            _ => {}
        }
    }
    f()
}

/// Whether [`with_simd`] runs with fused multiply-add (AVX2 + FMA or better).
#[inline(always)]
pub(crate) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd_level() >= 2
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether [`with_simd`] runs with AVX-512F (the row kernels of [`depthwise_rows`] need it).
#[inline(always)]
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        simd_level() == 3
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// 3: AVX-512F + AVX2 + FMA, 2: AVX2 + FMA, 1: baseline. `MBV3_SIMD=avx2` caps it at AVX2 and `MBV3_SIMD=none`
/// at the baseline (to compare, and to test the other kernels on a CPU that has AVX-512).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn simd_level() -> u8 {
    use std::sync::atomic::{AtomicU8, Ordering};
    static LEVEL: AtomicU8 = AtomicU8::new(0);
    let level = LEVEL.load(Ordering::Relaxed);
    if level != 0 {
        return level;
    }
    let avx2 = std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma");
    let avx512 = avx2 && std::arch::is_x86_feature_detected!("avx512f");
    let cap = match std::env::var("MBV3_SIMD").as_deref() {
        Ok("avx2") => 2,
        Ok("none") => 1,
        _ => 3,
    };
    let level = if avx512 && cap >= 3 {
        3
    } else if avx2 && cap >= 2 {
        2
    } else {
        1
    };
    LEVEL.store(level, Ordering::Relaxed);
    level
}

/// A mutable buffer that rayon tasks may share when each writes a disjoint range of it: made from the
/// `&'a mut [f32]` it borrows (so the buffer outlives every copy of the handle and nothing else touches it
/// meanwhile), handing out subslices through [`SharedMut::slice`].
///
/// Copies are the design (one per task, all pointing at the same buffer): a copy only grants access through
/// the `unsafe` [`SharedMut::slice`], whose caller promises the ranges in use at once are disjoint.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    buf: std::marker::PhantomData<&'a mut [f32]>,
}
// SAFETY: a SharedMut borrows its buffer mutably for 'a, so the buffer outlives every copy and no one else
// reads or writes it meanwhile; every task writes through `slice` a range no other task touches (each caller
// splits by image or by channel), so sending or sharing the handle across threads creates no data race.
unsafe impl Send for SharedMut<'_> {}
// SAFETY: as for Send: concurrent tasks only ever hold disjoint ranges of the pointee.
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    /// Shares `buf` for the rest of its borrow.
    #[inline]
    pub fn new(buf: &'a mut [f32]) -> Self {
        SharedMut { ptr: buf.as_mut_ptr(), len: buf.len(), buf: std::marker::PhantomData }
    }

    /// `[offset, offset + len)` of the buffer. Panics when the range is out of bounds: an `assert!` (not a
    /// `debug_assert!`), since two comparisons per call cost nothing next to the kernel work on the slice
    /// (each call hands out a whole image or plane) and an out-of-bounds write would be undefined behaviour.
    ///
    /// # Safety
    /// While the returned slice lives, no other slice from this buffer (through any copy of the handle)
    /// overlaps it: each range is used by one task only.
    #[inline(always)]
    pub(crate) unsafe fn slice(&self, offset: usize, len: usize) -> &'a mut [f32] {
        assert!(offset <= self.len && len <= self.len - offset, "SharedMut::slice out of bounds");
        // SAFETY: the range is within the buffer (asserted above), which lives and is borrowed for 'a; the
        // caller guarantees no overlapping slice is in use meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(offset), len) }
    }
}
