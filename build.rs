//! Build steps of the `cuda` feature (nothing happens without it):
//! - compiles `src/kernels/cuda/mobilenetv3.cu` to PTX with nvcc (found as candle's kernels find it: `$NVCC`,
//!   then `PATH`, then `$CUDA_HOME/bin`), which the driver compiles for whatever GPU it finds;
//! - tells the code which CUDA major version the libraries are (`MBV3_CUDA_MAJOR`, for their file names);
//! - where `.ci/cuda-check.sh` made one (`MBV3_CUDA_SHIM_DIR`), links in the forwarding shim that defines every
//!   NVIDIA function the code calls, so the binary needs no NVIDIA library to start; the functions are bound
//!   when CUDA is first used (`src/device/cuda_libraries.rs`).

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(mbv3_cuda_shim)");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let source = "src/kernels/cuda/mobilenetv3.cu";
    println!("cargo:rerun-if-changed={source}");
    println!("cargo:rerun-if-env-changed=NVCC");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let nvcc = nvcc();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("mobilenetv3.ptx");
    // PTX for compute capability 7.5 (Turing; the oldest CUDA 13 targets) and up: the driver JIT-compiles it for
    // the GPU at hand.
    let status = Command::new(&nvcc)
        .args(["--ptx", "-O3", "-arch=compute_75", "-std=c++17", "-o"])
        .arg(&out)
        .arg(source)
        .status()
        .unwrap_or_else(|e| panic!("the cuda feature needs nvcc ({nvcc:?}): {e}"));
    assert!(status.success(), "nvcc failed on {source}");

    let version = Command::new(&nvcc).arg("--version").output().expect("nvcc --version");
    let text = String::from_utf8_lossy(&version.stdout);
    let major = text
        .split("release ")
        .nth(1)
        .and_then(|r| r.split('.').next())
        .unwrap_or_else(|| panic!("cannot read the CUDA version from nvcc --version: {text}"));
    println!("cargo:rustc-env=MBV3_CUDA_MAJOR={major}");

    // The forwarding shim and the link-time stand-ins for the NVIDIA libraries (which `--as-needed` then
    // leaves out of the binary, the shim defining every function they would have provided). A link argument,
    // not a library of this crate, so the archive is needed only when binaries are linked.
    println!("cargo:rerun-if-env-changed=MBV3_CUDA_SHIM_DIR");
    if let Some(dir) = std::env::var_os("MBV3_CUDA_SHIM_DIR") {
        let dir = PathBuf::from(dir);
        println!("cargo:rustc-link-search=native={}", dir.display());
        let archive = dir.join("libmbv3cudashim.a");
        println!("cargo:rustc-link-arg=-Wl,--whole-archive,{},--no-whole-archive", archive.display());
        println!("cargo:rustc-cfg=mbv3_cuda_shim");
    }
}

fn nvcc() -> PathBuf {
    if let Some(p) = std::env::var_os("NVCC") {
        return p.into();
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file());
    if let Some(p) = on_path {
        return p;
    }
    match std::env::var_os("CUDA_HOME") {
        Some(home) => PathBuf::from(home).join("bin/nvcc"),
        None => PathBuf::from("nvcc"),
    }
}
