//! Launching the CUDA kernels of `cuda/mobilenetv3.cu` (PTX compiled by `build.rs` with nvcc, loaded once per
//! device by candle) on the storages candle's custom ops hand us. Each function mirrors a CPU kernel of this
//! folder; `tests/cuda_kernels.rs` compares them on every layer geometry of the architecture tables.

use super::plane::Geometry;
use super::Act;
use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::cudarc::driver::{CudaSlice, CudaView, LaunchConfig, PushKernelArg};
use candle_core::cuda_backend::{CudaDevice, WrapErr};
use candle_core::{bail, CudaStorage, Layout, Result};

const PTX: &str = include_str!(concat!(env!("OUT_DIR"), "/mobilenetv3.ptx"));
const MODULE: &str = "mobilenetv3_studio";
/// Threads per block; the reduction kernels' shared scratch is sized for it (`BLOCK` in the .cu file).
const BLOCK: u32 = 256;
/// The largest depthwise filter side the weight-gradient kernel keeps in registers (`MAX_TAPS` = 5 * 5).
pub(crate) const MAX_K: usize = 5;

/// The kernel's code for an activation (`ACT_*` in the .cu file).
fn act_code(act: Act) -> i32 {
    match act {
        Act::None => 0,
        Act::Relu => 1,
        Act::HardSwish => 2,
    }
}

/// One thread per element, in a grid-stride loop (so any size fits the grid).
fn elementwise(total: usize) -> LaunchConfig {
    let blocks = total.div_ceil(BLOCK as usize).clamp(1, 1 << 16) as u32;
    LaunchConfig { grid_dim: (blocks, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// One block per channel (the per-channel reductions).
fn per_channel(c: usize) -> LaunchConfig {
    LaunchConfig { grid_dim: (c as u32, 1, 1), block_dim: (BLOCK, 1, 1), shared_mem_bytes: 0 }
}

/// The f32 elements of a contiguous CUDA storage.
fn view<'a>(s: &'a CudaStorage, l: &Layout) -> Result<CudaView<'a, f32>> {
    let Some((a, b)) = l.contiguous_offsets() else { bail!("CUDA kernel input must be contiguous") };
    Ok(s.as_cuda_slice::<f32>()?.slice(a..b))
}

/// Loads kernel `$name` (once per device) and launches it on candle's stream with the arguments in order.
macro_rules! launch {
    ($dev:expr, $name:expr, $cfg:expr; $($arg:expr),+ $(,)?) => {{
        let func = $dev.get_or_load_custom_func($name, MODULE, PTX)?;
        let mut args = func.builder();
        $( args.arg($arg); )+
        // SAFETY: every call site passes the kernel's parameters in the order and types of its signature in
        // mobilenetv3.cu, with buffers holding the element counts the sizes passed imply (the caller's shapes).
        unsafe { args.launch($cfg) }.w()?;
    }};
}

/// A buffer of `len` floats for a kernel that writes every element before anything reads it.
fn output(dev: &CudaDevice, len: usize) -> Result<CudaSlice<f32>> {
    // SAFETY: uninitialised device memory; each kernel launched into it writes every element once.
    unsafe { dev.alloc::<f32>(len) }
}

fn int(v: usize) -> Result<i32> {
    i32::try_from(v).map_err(|_| candle_core::Error::Msg(format!("{v} does not fit a CUDA kernel's int")))
}

/// The geometry as the kernels' int arguments: n, c, h, w, k, stride, pad, out_h, out_w.
fn geometry_args(g: &Geometry) -> Result<[i32; 9]> {
    Ok([
        int(g.n)?,
        int(g.c)?,
        int(g.h)?,
        int(g.w)?,
        int(g.k)?,
        int(g.stride)?,
        int(g.pad)?,
        int(g.out_h())?,
        int(g.out_w())?,
    ])
}

/// Runs `name` over (a, b) into a fresh buffer of `out_len` floats, with the geometry's ints after the pointers.
fn depthwise_kernel(
    name: &str,
    g: &Geometry,
    (a, la): (&CudaStorage, &Layout),
    (b, lb): (&CudaStorage, &Layout),
    out_len: usize,
    cfg: LaunchConfig,
) -> Result<CudaStorage> {
    let dev: CudaDevice = a.device().clone();
    let (a, b) = (view(a, la)?, view(b, lb)?);
    let out = output(&dev, out_len)?;
    let [n, c, h, w, k, stride, pad, oh, ow] = geometry_args(g)?;
    launch!(dev, name, cfg; &a, &b, &out, &n, &c, &h, &w, &k, &stride, &pad, &oh, &ow);
    Ok(CudaStorage::wrap_cuda_slice(out, dev))
}

/// Depthwise convolution forward: x (n, c, h, w), w (c, 1, k, k) -> (n, c, out_h, out_w).
pub(crate) fn depthwise_forward(
    g: &Geometry,
    x: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    depthwise_kernel("dw_forward", g, x, w, g.out_len(), elementwise(g.out_len()))
}

/// Its input gradient: gy (n, c, out_h, out_w), w -> (n, c, h, w).
pub(crate) fn depthwise_input_grad(
    g: &Geometry,
    gy: (&CudaStorage, &Layout),
    w: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    let len = g.n * g.c * g.h * g.w;
    depthwise_kernel("dw_input_grad", g, gy, w, len, elementwise(len))
}

/// Its filter gradient: x, gy -> (c, 1, k, k).
pub(crate) fn depthwise_weight_grad(
    g: &Geometry,
    x: (&CudaStorage, &Layout),
    gy: (&CudaStorage, &Layout),
) -> Result<CudaStorage> {
    if g.k > MAX_K {
        bail!("the CUDA depthwise filter gradient supports filters up to {MAX_K}x{MAX_K}, not {}x{}", g.k, g.k);
    }
    depthwise_kernel("dw_weight_grad", g, x, gy, g.c * g.k * g.k, per_channel(g.c))
}

/// BatchNorm's per-channel shape: n images of c planes of hw elements.
#[derive(Clone, Copy, Debug)]
pub struct BnDims {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl BnDims {
    fn total(&self) -> usize {
        self.n * self.c * self.hw
    }
}

/// Batch statistics: a (3, c) buffer of mean, biased variance and 1/sqrt(var + eps).
pub(crate) fn bn_stats(d: BnDims, x: (&CudaStorage, &Layout), eps: f32) -> Result<CudaStorage> {
    let dev: CudaDevice = x.0.device().clone();
    let x = view(x.0, x.1)?;
    // Thread 0 of each channel's block writes its three entries.
    let stats = output(&dev, 3 * d.c)?;
    let (n, c, hw) = (int(d.n)?, int(d.c)?, int(d.hw)?);
    launch!(dev, "bn_stats", per_channel(d.c); &x, &stats, &n, &c, &hw, &eps);
    Ok(CudaStorage::wrap_cuda_slice(stats, dev))
}

/// Training forward's second half: act((x - mean) * inv_std * gamma + beta) from the (3, c) statistics.
pub(crate) fn bn_apply(
    d: BnDims,
    x: (&CudaStorage, &Layout),
    stats: (&CudaStorage, &Layout),
    gamma: (&CudaStorage, &Layout),
    beta: (&CudaStorage, &Layout),
    act: Act,
) -> Result<CudaStorage> {
    let dev: CudaDevice = x.0.device().clone();
    let (x, stats, gamma, beta) =
        (view(x.0, x.1)?, view(stats.0, stats.1)?, view(gamma.0, gamma.1)?, view(beta.0, beta.1)?);
    let total = d.total();
    let y = output(&dev, total)?;
    let (t, c, hw, a) = (total as i64, int(d.c)?, int(d.hw)?, act_code(act));
    launch!(dev, "bn_apply", elementwise(total); &x, &stats, &gamma, &beta, &y, &t, &c, &hw, &a);
    Ok(CudaStorage::wrap_cuda_slice(y, dev))
}

/// Evaluation BatchNorm with its activation: act(x * scale[c] + shift[c]).
pub(crate) fn affine_act(
    d: BnDims,
    x: (&CudaStorage, &Layout),
    scale: (&CudaStorage, &Layout),
    shift: (&CudaStorage, &Layout),
    act: Act,
) -> Result<CudaStorage> {
    let dev: CudaDevice = x.0.device().clone();
    let (x, scale, shift) = (view(x.0, x.1)?, view(scale.0, scale.1)?, view(shift.0, shift.1)?);
    let total = d.total();
    let y = output(&dev, total)?;
    let (t, c, hw, a) = (total as i64, int(d.c)?, int(d.hw)?, act_code(act));
    launch!(dev, "affine_act", elementwise(total); &x, &scale, &shift, &y, &t, &c, &hw, &a);
    Ok(CudaStorage::wrap_cuda_slice(y, dev))
}

/// The backward's per-channel sums, a (2, c) buffer: sum of dz (= dbeta), sum of dz * x_hat (= dgamma).
pub(crate) fn bn_backward_sums(
    d: BnDims,
    x: (&CudaStorage, &Layout),
    dy: (&CudaStorage, &Layout),
    stats: (&CudaStorage, &Layout),
    gamma: (&CudaStorage, &Layout),
    beta: (&CudaStorage, &Layout),
    act: Act,
) -> Result<CudaStorage> {
    let dev: CudaDevice = x.0.device().clone();
    let (x, dy) = (view(x.0, x.1)?, view(dy.0, dy.1)?);
    let (stats, gamma, beta) = (view(stats.0, stats.1)?, view(gamma.0, gamma.1)?, view(beta.0, beta.1)?);
    // Thread 0 of each channel's block writes both of its entries.
    let sums = output(&dev, 2 * d.c)?;
    let (n, c, hw, a) = (int(d.n)?, int(d.c)?, int(d.hw)?, act_code(act));
    launch!(dev, "bn_backward_sums", per_channel(d.c); &x, &dy, &stats, &gamma, &beta, &sums, &n, &c, &hw, &a);
    Ok(CudaStorage::wrap_cuda_slice(sums, dev))
}

/// The backward's input gradient from the (2, c) sums.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bn_input_grad(
    d: BnDims,
    x: (&CudaStorage, &Layout),
    dy: (&CudaStorage, &Layout),
    stats: (&CudaStorage, &Layout),
    gamma: (&CudaStorage, &Layout),
    beta: (&CudaStorage, &Layout),
    sums: (&CudaStorage, &Layout),
    act: Act,
) -> Result<CudaStorage> {
    let dev: CudaDevice = x.0.device().clone();
    let (x, dy, sums) = (view(x.0, x.1)?, view(dy.0, dy.1)?, view(sums.0, sums.1)?);
    let (stats, gamma, beta) = (view(stats.0, stats.1)?, view(gamma.0, gamma.1)?, view(beta.0, beta.1)?);
    let total = d.total();
    let dx = output(&dev, total)?;
    let (t, n, c, hw, a) = (total as i64, int(d.n)?, int(d.c)?, int(d.hw)?, act_code(act));
    launch!(dev, "bn_input_grad", elementwise(total); &x, &dy, &stats, &gamma, &beta, &sums, &dx, &t, &n, &c, &hw, &a);
    Ok(CudaStorage::wrap_cuda_slice(dx, dev))
}

/// The two in-place SGD kernels over (updated, a, b) of one length.
pub enum SgdKernel {
    /// buf = momentum * buf + (g + weight_decay * p) on (buf, g, p).
    Momentum { momentum: f32, weight_decay: f32 },
    /// p -= lr * (nesterov ? (g + wd * p) + momentum * buf : buf) on (p, buf, g).
    Update { lr: f32, momentum: f32, weight_decay: f32, nesterov: bool },
}

pub(crate) fn sgd_in_place(
    k: &SgdKernel,
    (dst, ld): (&mut CudaStorage, &Layout),
    a: (&CudaStorage, &Layout),
    b: (&CudaStorage, &Layout),
) -> Result<()> {
    let dev: CudaDevice = dst.device().clone();
    let (a, b) = (view(a.0, a.1)?, view(b.0, b.1)?);
    let Some((lo, hi)) = ld.contiguous_offsets() else { bail!("the SGD kernels need contiguous tensors") };
    let len = hi - lo;
    if a.len() != len || b.len() != len {
        bail!("the SGD kernels need three tensors of one size");
    }
    let mut dst = dst.as_cuda_slice_mut::<f32>()?.slice_mut(lo..hi);
    let n = len as i64;
    match *k {
        SgdKernel::Momentum { momentum, weight_decay } => {
            launch!(dev, "sgd_momentum", elementwise(len); &mut dst, &a, &b, &n, &momentum, &weight_decay);
        }
        SgdKernel::Update { lr, momentum, weight_decay, nesterov } => {
            let nesterov = i32::from(nesterov);
            launch!(dev, "sgd_update", elementwise(len); &mut dst, &a, &b, &n, &lr, &momentum, &weight_decay, &nesterov);
        }
    }
    Ok(())
}
