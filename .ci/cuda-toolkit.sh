#!/usr/bin/env bash
# Sourced by the CUDA scripts: NVIDIA's compiler wheels from PyPI unpacked into target/cuda-toolkit (nvcc, the
# headers, the static CUDA runtime; the recipe of ../shared/notes/cuda-build.md, CUDA 13.0 to match driver
# 580), then CUDA_HOME, PATH and CUDA_COMPUTE_CAP set for candle's and our build scripts. Nothing is cached
# outside the clone. No GPU, driver or cuBLAS is needed to build.
root="$PWD/target/cuda-toolkit"
if [ ! -x "$root/bin/nvcc" ]; then
  rm -rf "$root" target/cuda-wheels
  python3 -m pip download -q --no-deps -d target/cuda-wheels \
    nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 nvidia-cuda-nvrtc==13.0.88 \
    nvidia-cuda-runtime==13.0.96 nvidia-cuda-cccl==13.0.85
  mkdir -p "$root"
  for w in target/cuda-wheels/*.whl; do
    python3 - "$w" "$root" <<'PY'
import sys, zipfile, os
wheel, root = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for m in z.namelist():
        # Wheels keep the toolkit under nvidia/cu13/ (or nvidia/<part>/); flatten it into one root.
        parts = m.split("/")
        if len(parts) < 3 or parts[0] != "nvidia" or m.endswith("/"):
            continue
        rel = "/".join(parts[2:])
        dest = os.path.join(root, rel)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(m) as src, open(dest, "wb") as out:
            out.write(src.read())
PY
  done
  chmod +x "$root"/bin/* "$root"/nvvm/bin/* 2>/dev/null || true
fi
export CUDA_HOME="$root" CUDA_PATH="$root" PATH="$root/bin:$PATH" CUDA_COMPUTE_CAP=90
