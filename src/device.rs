//! Choosing where the model runs: the CPU (always) or a CUDA GPU (with the `cuda` feature and a driver).

use candle_core::Device;
use std::sync::OnceLock;

#[cfg(feature = "cuda")]
mod cuda_libraries;

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("unknown device {0:?}: use cpu or cuda")]
    Unknown(String),
    #[error("CUDA is not available: {0}")]
    CudaUnavailable(String),
    #[error("cannot set the thread count: {0}")]
    Threads(String),
}

/// Opens `cpu`, `cuda` or `cuda:N`.
pub fn open(name: &str) -> Result<Device, DeviceError> {
    let lower = name.to_ascii_lowercase();
    if lower == "cpu" {
        return Ok(Device::Cpu);
    }
    if let Some(rest) = lower.strip_prefix("cuda") {
        let ordinal = match rest.strip_prefix(':') {
            Some(n) => n.parse().map_err(|_| DeviceError::Unknown(name.into()))?,
            None if rest.is_empty() => 0,
            None => return Err(DeviceError::Unknown(name.into())),
        };
        if !cfg!(feature = "cuda") {
            return Err(DeviceError::CudaUnavailable(
                "this build has no CUDA support (build with --features cuda)".into(),
            ));
        }
        // The NVIDIA libraries are opened here, not at start-up (see `cuda_libraries`).
        #[cfg(feature = "cuda")]
        cuda_libraries::load().map_err(DeviceError::CudaUnavailable)?;
        // Full f32 matrix products (no TF32), as the CPU and PyTorch's defaults compute them.
        candle_core::cuda::set_gemm_reduced_precision_f32(false);
        // A build that links CUDA dynamically may panic when no driver is present: report it as unavailable.
        return match std::panic::catch_unwind(|| Device::new_cuda(ordinal)) {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(DeviceError::CudaUnavailable(e.to_string())),
            Err(_) => Err(DeviceError::CudaUnavailable("the CUDA driver could not be loaded".into())),
        };
    }
    Err(DeviceError::Unknown(name.into()))
}

/// Every device this build can use on this machine: the CPU, then CUDA if it opens.
pub fn available() -> Vec<Device> {
    let mut v = vec![Device::Cpu];
    if let Ok(d) = cuda() {
        v.push(d);
    }
    v
}

/// The first CUDA device, opened once per process (a CUDA context is costly), or why it cannot be used:
/// what the app shows beside a disabled CUDA choice.
pub fn cuda() -> Result<Device, String> {
    CUDA.get_or_init(|| open("cuda").map_err(|e| e.to_string())).clone()
}

static CUDA: OnceLock<Result<Device, String>> = OnceLock::new();

/// [`cuda`]'s answer if it has been asked already, without waiting: the app asks on a background thread at
/// start-up and reads this each frame (`None`: still checking).
pub(crate) fn cuda_if_probed() -> Option<Result<(), String>> {
    CUDA.get().map(|r| r.as_ref().map(|_| ()).map_err(Clone::clone))
}

/// Sizes rayon's global pool to `n` threads; call before any model work. candle sizes its matrix products (and
/// gemm's parallelism) by the RAYON_NUM_THREADS environment variable instead, which `main` sets to the same `n`
/// before any thread starts (setting the environment is unsound once other threads may read it).
pub fn set_cpu_threads(n: usize) -> Result<(), DeviceError> {
    if n == 0 {
        return Err(DeviceError::Threads("must be at least 1".into()));
    }
    rayon::ThreadPoolBuilder::new().num_threads(n).build_global().map_err(|e| DeviceError::Threads(e.to_string()))
}

/// Keeps freed tensor memory in the process instead of returning it to the kernel.
///
/// With glibc's defaults every activation above the mmap threshold (32 MB at most) is a fresh mmap, so each
/// training step faults its pages in again; on this kind of machine that cost more than the arithmetic. With
/// mmap off and trimming off, the heap keeps its high-water mark and steps reuse it. Call once, early.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before other threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

/// The CPU's model name (from /proc/cpuinfo on Linux) and how many threads the engine uses, for captions.
pub(crate) fn cpu_name() -> String {
    let name = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|n| n.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    format!("{name} ({} threads)", rayon::current_num_threads())
}
